/**
 * The data sets of `npm run bench` (SPEC §9), as ndjson per resource type (every line with
 * `resourceType` and `id`):
 *
 * - `patients`: Synthea Patients (~3.5 KB each), the 1,144 of the shared sample (13 of the
 *   fixtures without it), repeated with new ids.
 * - `mix`: the realistic Synthea mix: every resource of every type found in the Synthea files —
 *   bulk-export ndjson (`*.ndjson`, `*.jsonl`) and transaction Bundles (`*.json`, the entries; an
 *   array of resources or a single one too), each also gzipped (`*.ndjson.gz`, as `$export` and
 *   other servers write them) — under tests/fixtures/synthea and ../shared/data/synthea (or
 *   /work/shared/data/synthea) when present, or under the `--data-dir` folders. Observation-heavy:
 *   the Bundles hold 16,315 Observations. Deduplicated by type and id, then repeated with fresh ids
 *   up to the bench size; where the files hold more, an even sample of that size (see `scan`).
 *   What `$load` refuses is left out, and counted in the title.
 * - `small`: the resources of the mix whose line is under 1 KB, repeated the same way.
 *
 * Lines are grouped by type, as a bulk export is; `histogram()` prints the sizes per type. Numbers
 * stay as the files write them (`"value": 0.0` in most ExplanationOfBenefits), as in real data.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { isKnownType, SERVER_TYPES } from '../../src/fhir/types.ts';
import { parseKeepingNumbers } from '../../src/fhir/json-numbers.ts';
import { parseLine } from '../../src/operations/ingest.ts';
import { loadConfig } from '../../src/config.ts';
import { fmt } from './common.ts';

const ROOT = path.resolve(import.meta.dir, '../..');
const FIXTURES = path.join(ROOT, 'tests/fixtures/synthea');
const SHARED = [path.join(ROOT, '../shared/data/synthea'), '/work/shared/data/synthea'];
const SMALL_BYTES = 1024;
/** ndjson (a resource per line) and JSON (a Bundle or one resource) files, plain or gzipped. */
const LINES_FILE = /\.(ndjson|jsonl)(\.gz)?$/;
const BUNDLE_FILE = /\.json(\.gz)?$/;
const MAX_ID = 64;
/** The server's, as its config reads it (it inherits the bench's environment). */
const MAX_LINE_BYTES = loadConfig({ FHIRHOSE_MAX_LINE_BYTES: process.env.FHIRHOSE_MAX_LINE_BYTES }).maxLineBytes;

export const DATA_SETS = ['patients', 'mix', 'small'] as const;
export type DataSetName = (typeof DATA_SETS)[number];

export interface DataSet {
  name: DataSetName;
  /** What the data is, for the report. */
  title: string;
  rows: number;
  bytes: number;
  /** ndjson (with resourceType and id) per type, in file order. */
  types: TypeData[];
}

export interface TypeData {
  type: string;
  rows: number;
  /** The lines, each ending in \n. */
  ndjson: Buffer;
  /** Byte length of each line (without \n), for the histogram. */
  lengths: Uint32Array;
}

type Resource = Record<string, unknown> & { resourceType: string; id: string };

/** A resource ready to repeat: its line split around the id (a line is prefix + id + suffix, the suffix ending in \n). */
interface Template { type: string; id: string; prefix: Buffer; suffix: Buffer }

/** The folders searched for the mix: the given ones, else the fixtures plus the shared data when present. */
export function mixFolders(dataDirs: string[]): string[] {
  if (dataDirs.length > 0) return dataDirs;
  const shared = SHARED.find((dir) => fs.existsSync(dir));
  return shared ? [FIXTURES, shared] : [FIXTURES];
}

/** Every resource in the `.ndjson` and `.json` files below `folders`, deduplicated by type and id. */
export async function readResources(folders: string[]): Promise<{ resources: Resource[]; files: number }> {
  const resources: Resource[] = [];
  const { files } = await scan(folders, (r) => resources.push(r));
  return { resources, files };
}

interface Scanned {
  files: number;
  /** Resources (ndjson lines, Bundle entries) in the files, before deduplication. */
  found: number;
  /** Resources passed on. */
  taken: number;
  /** How many resources `$load` would refuse were left out, with an example. */
  refused?: string;
}

/**
 * Passes the resources below `folders` to `take`, in file order, deduplicated by type and id. With
 * `limit` and more resources than that in the files, an even sample of about `limit` of them
 * (every k-th), so that each type keeps its share whatever the files' order: the files are then
 * read twice, first only counting lines, and a line is parsed only when it is taken. Files are
 * streamed, never held whole (but a Bundle file), so data far bigger than memory can be sampled.
 */
async function scan(folders: string[], take: (r: Resource) => void, limit = Infinity): Promise<Scanned> {
  const files = folders.flatMap((dir) => walk(dir)).sort();
  const counts = new Map<string, number>();
  if (Number.isFinite(limit)) for (const file of files) counts.set(file, await countIn(file));
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const sampled = total > limit;
  const taking = (i: number) => Math.floor((i * limit) / total);
  const wanted = (i: number) => !sampled || taking(i + 1) > taking(i);
  const seen = new Set<string>();
  const refused = { count: 0, example: undefined as string | undefined };
  let found = 0;
  let taken = 0;
  /** `text`: the line as the file holds it, for the check, when there is one. */
  const add = (value: unknown, text?: string) => {
    if (typeof value !== 'object' || value === null) return;
    const r = value as Resource;
    if (typeof r.resourceType !== 'string' || !isKnownType(r.resourceType) || SERVER.has(r.resourceType)) return;
    if (typeof r.id !== 'string' || r.id === '') return;
    const key = `${r.resourceType}/${r.id}`;
    if (seen.has(key)) return;
    seen.add(key);
    // What `$load` refuses (an id that is not a FHIR id, `\u0000`, 1e400, …) stays out of both
    // sides: the raw COPY would store some of it, and fail the whole COPY on the rest.
    const json = text ?? JSON.stringify(r);
    const line = Buffer.byteLength(json) > MAX_LINE_BYTES
      ? parseLine({ no: 0, tooLong: true }, { maxLineBytes: MAX_LINE_BYTES })
      : parseLine({ no: 0, text: json }, {});
    if (!line.ok) {
      refused.count++;
      refused.example ??= `${key}: ${line.message}`;
      return;
    }
    taken++;
    take(r);
  };
  for (const file of files) {
    const count = counts.get(file) ?? 0;
    if (sampled && taking(found + count) === taking(found)) { // none of its resources is taken
      found += count;
      continue;
    }
    if (LINES_FILE.test(file)) {
      await eachLine(file, (buf, start, end, no) => {
        if (isBlank(buf, start, end)) return;
        if (!wanted(found++)) return;
        const text = buf.toString('utf8', start, end);
        add(parseIn(file, text, no), text);
      });
      continue;
    }
    for (const resource of resourcesOf(parseIn(file, await readWhole(file)))) if (wanted(found++)) add(resource);
  }
  const left = refused.example && `${fmt(refused.count)} left out, as \`$load\` refuses them (e.g. ${refused.example})`;
  if (taken === 0) throw new Error(`no FHIR resources found in ${folders.join(', ')}${left ? `; ${left}` : ''}`);
  return { files: files.length, found, taken, refused: left || undefined };
}

const SERVER = new Set<string>(SERVER_TYPES);

/** What a JSON file holds: a Bundle's entries, an array's members, or the one resource it is. */
function resourcesOf(doc: unknown): unknown[] {
  if (Array.isArray(doc)) return doc;
  const bundle = doc as { resourceType?: unknown; entry?: unknown } | null;
  if (bundle?.resourceType === 'Bundle' && Array.isArray(bundle.entry)) return bundle.entry.map((e: { resource?: unknown } | null) => e?.resource);
  return [doc];
}

/** How many resources a file holds: its non-blank lines, or its Bundle's entries. */
async function countIn(file: string): Promise<number> {
  let n = 0;
  if (LINES_FILE.test(file)) await eachLine(file, (buf, start, end) => { if (!isBlank(buf, start, end)) n++; });
  else n = resourcesOf(parseIn(file, await readWhole(file), undefined, JSON.parse)).length; // only counted: no need to keep numbers
  return n;
}

/** JSON with numbers as written (`0.0`, not `0`), as a bulk file holds them and a raw COPY keeps them; an error names the file and line. */
function parseIn(file: string, json: string, line?: number, parse: (json: string) => unknown = parseKeepingNumbers): unknown {
  try {
    return parse(json);
  } catch (err) {
    throw new Error(`${file}${line ? `:${line}` : ''}: not JSON (${(err as Error).message})`);
  }
}

async function readWhole(file: string): Promise<string> {
  const bytes = await fs.promises.readFile(file);
  return (file.endsWith('.gz') ? zlib.gunzipSync(bytes) : bytes).toString('utf8');
}

/** Calls `onLine(buf, start, end, no)` for each line of a file (gunzipped when `.gz`), streaming it. */
async function eachLine(file: string, onLine: (buf: Buffer, start: number, end: number, no: number) => void): Promise<void> {
  const raw = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  let stream: AsyncIterable<Buffer> = raw;
  if (file.endsWith('.gz')) {
    const gunzip = zlib.createGunzip({ chunkSize: 1 << 20 });
    raw.on('error', (err) => gunzip.destroy(err));
    stream = raw.pipe(gunzip);
  }
  let pending: Buffer[] = [];
  let no = 0;
  const chunks = stream[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (err) {
      throw new Error(`${file}: ${(err as Error).message}`); // a read or gunzip failure
    }
    if (next.done) break;
    const chunk = next.value;
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      if (pending.length === 0) onLine(chunk, start, nl, ++no);
      else {
        const line = Buffer.concat([...pending, chunk.subarray(start, nl)]);
        pending = [];
        onLine(line, 0, line.length, ++no);
      }
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) {
    const line = Buffer.concat(pending);
    onLine(line, 0, line.length, ++no);
  }
}

/** Is `buf[start, end)` only spaces, tabs and carriage returns? */
function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

/** The .ndjson, .jsonl and .json files (each also gzipped, `.gz`) below `dir` (or `dir` itself when it is a file). */
function walk(dir: string): string[] {
  if (!fs.existsSync(dir)) throw new Error(`data folder ${dir} does not exist`);
  if (!fs.statSync(dir).isDirectory()) return [dir];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return walk(full);
    return LINES_FILE.test(e.name) || BUNDLE_FILE.test(e.name) ? [full] : [];
  });
}

const MARK = '\u0001id\u0001';
const QUOTED_MARK = JSON.stringify(MARK);

/** `r` serialised once, split around its id. */
function template(r: Resource): Template {
  const text = JSON.stringify({ ...r, id: MARK });
  const at = text.indexOf(QUOTED_MARK);
  return {
    type: r.resourceType,
    id: r.id,
    prefix: Buffer.from(text.slice(0, at + 1)),
    suffix: Buffer.from(text.slice(at + QUOTED_MARK.length - 1) + '\n'),
  };
}

/** `rows` lines from `base` repeated in order, the k-th repetition with fresh ids, grouped by type. */
function repeat(name: DataSetName, title: string, templates: Template[], rows: number): DataSet {
  const typeIndex = new Map<string, number>();
  for (const t of templates) if (!typeIndex.has(t.type)) typeIndex.set(t.type, typeIndex.size);
  const idOf = (i: number) => {
    const t = templates[i % templates.length]!;
    const k = Math.floor(i / templates.length);
    const id = k === 0 ? t.id : `${t.id}-${k.toString(36)}`;
    return id.length > MAX_ID ? `bench-${i}` : id;
  };
  // Two passes: sizes first, so that each type's buffer is allocated once (1M lines are ~1 GB).
  const counts = new Array<number>(typeIndex.size).fill(0);
  const sizes = new Array<number>(typeIndex.size).fill(0);
  for (let i = 0; i < rows; i++) {
    const t = templates[i % templates.length]!;
    const type = typeIndex.get(t.type)!;
    counts[type]!++;
    sizes[type]! += t.prefix.length + Buffer.byteLength(idOf(i)) + t.suffix.length;
  }
  const types: TypeData[] = [...typeIndex.keys()].map((type, index) => ({
    type, rows: 0, ndjson: Buffer.allocUnsafe(sizes[index]!), lengths: new Uint32Array(counts[index]!),
  }));
  const used = new Array<number>(typeIndex.size).fill(0);
  for (let i = 0; i < rows; i++) {
    const t = templates[i % templates.length]!;
    const type = typeIndex.get(t.type)!;
    const out = types[type]!;
    const start = used[type]!;
    let pos = start + t.prefix.copy(out.ndjson, start);
    pos += out.ndjson.write(idOf(i), pos);
    pos += t.suffix.copy(out.ndjson, pos);
    out.lengths[out.rows++] = pos - start - 1;
    used[type] = pos;
  }
  const present = types.filter((t) => t.rows > 0);
  return { name, title, rows, bytes: present.reduce((n, t) => n + t.ndjson.length, 0), types: present };
}

/** The resources a data set of `rows` lines repeats: all of the folders', or an even sample of `rows` of them. */
let base: { key: string; read: Promise<{ templates: Template[]; scanned: Scanned }> } | undefined;
function baseOf(folders: string[], rows: number): Promise<{ templates: Template[]; scanned: Scanned }> {
  const key = JSON.stringify([folders, rows]);
  if (base?.key !== key) {
    const templates: Template[] = [];
    base = { key, read: scan(folders, (r) => templates.push(template(r)), rows).then((scanned) => ({ templates, scanned })) };
  }
  return base.read;
}

/** Builds a data set of `rows` lines. */
export async function dataSet(name: DataSetName, rows: number, dataDirs: string[]): Promise<DataSet> {
  if (name === 'patients') {
    const { resources } = await readResources([patientFolder()]);
    return repeat(name, 'Synthea Patients', resources.filter((r) => r.resourceType === 'Patient').map(template), rows);
  }
  const folders = mixFolders(dataDirs);
  const { templates, scanned } = await baseOf(folders, rows);
  const where = `${scanned.files} file${scanned.files === 1 ? '' : 's'} under ${folders.map(shortPath).join(', ')}`;
  const mix = dataDirs.length > 0 ? 'the mix' : 'the Synthea mix';
  const what = (scanned.found > rows
    ? `an even sample of ${fmt(templates.length)} of the ${fmt(scanned.found)} resources in ${where}`
    : `${fmt(templates.length)} distinct resources from ${where}`) + (scanned.refused ? `; ${scanned.refused}` : '');
  if (name === 'mix') return repeat(name, `${mix} (${what})`, templates, rows);
  // a few bytes of headroom: repeated lines get longer ids (`-<k>`)
  const small = templates.filter((t) => t.prefix.length + Buffer.byteLength(t.id) + t.suffix.length - 1 < SMALL_BYTES - 8);
  if (small.length === 0) throw new Error(`no resource under ${SMALL_BYTES} bytes in ${where}`);
  return repeat(name, `small resources: the ${fmt(small.length)} under 1 KB of ${mix} (${what})`, small, rows);
}

/** The Synthea Patient sample: the shared 1000-patient one when present, else the fixture. */
function patientFolder(): string {
  for (const dir of SHARED) {
    const folder = path.join(dir, 'sample-bulk-fhir-datasets/1000-patients');
    if (fs.existsSync(path.join(folder, 'Patient.000.ndjson'))) return path.join(folder, 'Patient.000.ndjson');
  }
  return path.join(FIXTURES, 'Patient.000.ndjson');
}

/** One ndjson file of all types, grouped by type (what a `POST /$load` of a whole export reads). */
export function allLines(data: DataSet): Buffer {
  return data.types.length === 1 ? data.types[0]!.ndjson : Buffer.concat(data.types.map((t) => t.ndjson));
}

/** Splits each type's lines into `parts` runs of about equal bytes, at line ends. */
export function split(ndjson: Buffer, parts: number): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let p = 1; p <= parts; p++) {
    let end = p === parts ? ndjson.length : Math.max(start, Math.floor((ndjson.length * p) / parts));
    if (end < ndjson.length) {
      const nl = ndjson.indexOf(0x0a, end === 0 ? 0 : end - 1);
      end = nl < 0 ? ndjson.length : nl + 1;
    }
    out.push(ndjson.subarray(start, end));
    start = end;
  }
  return out;
}

/** Lines per type with their sizes: count, share, median, p90, max, mean, and the share under 1 KB. */
export function histogram(data: DataSet): string[] {
  const out = [`${'type'.padEnd(22)} ${'lines'.padStart(9)} ${'share'.padStart(6)} ${'median B'.padStart(9)} ${'p90 B'.padStart(8)} ${'max B'.padStart(8)} ${'mean B'.padStart(8)} ${'< 1 KB'.padStart(7)}`];
  const all: number[] = [];
  const row = (label: string, lengths: ArrayLike<number>) => {
    const sorted = Float64Array.from(lengths).sort();
    const n = sorted.length;
    const at = (q: number) => sorted[Math.min(n - 1, Math.floor(q * n))]!;
    let sum = 0;
    let small = 0;
    for (const v of sorted) { sum += v; if (v < SMALL_BYTES) small++; }
    return `${label.padEnd(22)} ${fmt(n).padStart(9)} ${`${fmt((100 * n) / data.rows, 1)}%`.padStart(6)} ${fmt(at(0.5)).padStart(9)} ${fmt(at(0.9)).padStart(8)} ${fmt(sorted[n - 1]!).padStart(8)} ${fmt(sum / n).padStart(8)} ${`${fmt((100 * small) / n)}%`.padStart(7)}`;
  };
  for (const t of [...data.types].sort((a, b) => b.rows - a.rows)) {
    out.push(row(t.type, t.lengths));
    for (const v of t.lengths) all.push(v);
  }
  if (data.types.length > 1) out.push(row('all', all));
  return out;
}

/** A folder relative to the project when it is inside it, else as given. */
function shortPath(folder: string): string {
  const rel = path.relative(ROOT, folder);
  return rel.startsWith('..') || path.isAbsolute(rel) ? folder : rel || '.';
}
