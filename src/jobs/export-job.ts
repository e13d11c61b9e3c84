/**
 * The `export` job kind (SPEC §11, §12): `(job, signal) → outcome`. It reads every part of the
 * export not yet done on one snapshot, and records each part (its files and its place in
 * `done_parts`) in one fenced commit; the runner owns the lease.
 *
 * An output part streams `COPY … (FORMAT binary)` → the `$dump` line writer → files of
 * FHIRHOSE_EXPORT_FILE_RESOURCES lines, each gzipped as it is written: memory stays at a few
 * buffers whatever the size. A big table is read as two halves at once (two series of files).
 * The COPYs run on the bulk pool (no job-pool statement timeout: one COPY may take minutes).
 *
 * A resumed job (its server died, or stopped) takes a new snapshot for the parts left;
 * transactionTime stays the first run's, so the parts read later may hold versions after it,
 * which an incremental export `_since` it repeats: nothing is lost.
 *
 * Failures: a lost database connection is thrown, and the runner tries the job again later (1, 2,
 * 4 … s) from its checkpoint, up to MAX_ATTEMPTS runs; any other error (a statement PostgreSQL
 * refused, a full disk) fails the export at once: its status answers 500.
 */
import { resourcesExported } from '../metrics/fhirhose.ts';
import type { Sql } from '../storage/db.ts';
import { connectionLost } from '../storage/db.ts';
import { copyBinaryDecoder } from '../storage/copy-binary.ts';
import { DUMP_FIELD_COUNT } from '../storage/dump.ts';
import { collectRefs, deletedRows, emptyTypes, estimateRows, openPart, openSnapshot, referencedIds, tableBytes } from '../storage/export-copy.ts';
import { EXPORT_KIND, endExport, expireExports, exportIds, finishPart, readExport, startExport, updateProgress, type ExportJobRow } from '../storage/exports.ts';
import { fileSplitter, removeJobFiles, sweepJobFiles, syncFiles, type WrittenFile } from '../storage/files.ts';
import { lineWriter } from '../operations/dump-lines.ts';
import { biggestFirst, partQuery, refSources, type Part } from '../operations/export-plan.ts';
import { issueOutcomes } from '../operations/export.ts';
import type { ExportParams } from '../operations/export-request.ts';
import type { Job, JobKind, KindDeps } from './job.ts';

const MAX_ATTEMPTS = 5;
/** Exports one server runs at once. */
const MAX_RUNNING = 2;
const PROGRESS_EVERY_MS = 1000;
/**
 * Parts one run works on at once, and COPY connections it holds at most (besides its snapshot):
 * the Synthea mix is 21 tables under 8 MB, each read by one COPY on one core; two at a time use
 * the second core (BENCHMARKS.md, $export).
 */
const PARALLEL_PARTS = 2;
/**
 * Workers taking parts: one more than the COPY slots, so that while a part's files are fsynced
 * and its checkpoint committed (35–100 ms per part, measured during a run) the next part reads.
 */
const WORKERS = PARALLEL_PARTS + 1;
/** The line writer's buffers: its chunks go to the gzip writer uncopied from 256 KiB (gzip.ts). */
const EXPORT_CHUNK_BYTES = 1024 * 1024;

export function exportKind(deps: KindDeps): JobKind<{ exportId: string }> {
  const { config, log } = deps;
  const read = deps.bulkSql ?? deps.sql;
  const dir = config.exportDir;
  return {
    name: EXPORT_KIND,
    describe: (job) => `export ${job.payload.exportId}`,
    // each run holds up to three bulk-pool connections (snapshot + two COPY halves)
    groupLimit: MAX_RUNNING,
    async run(job, signal) {
      const id = job.payload.exportId;
      const exp = await readExport(deps.sql, id);
      if (!exp) {
        await removeJobFiles(dir, id);
        return 'done';
      }
      if (exp.state !== 'running') return 'done';
      if (exp.doneParts.length || exp.transactionTime) log(`export ${id}: resuming after ${exp.doneParts.length} of ${exp.parts?.length ?? 0} parts`);
      let written = exp.exported;
      const timer = setInterval(() => void updateProgress(deps.sql, id, written).catch(() => {}), PROGRESS_EVERY_MS);
      try {
        const outcome = await runExport({ sql: read, config }, exp, job, signal, (n) => { written = n; });
        if (outcome === 'done') log(`export ${id}: done`);
        return outcome;
      } catch (err) {
        if (signal.aborted && signal.reason === 'lost') throw err;
        if (signal.aborted) return 'stopped';
        if (connectionLost(err) && job.attempts + 1 < MAX_ATTEMPTS) throw err;
        log(`export ${id}: failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
        await job.commit(async (tx) => {
          await endExport(tx, id, { state: 'failed', status: 500, message: 'internal error while writing the files; the server log has the details' }, config.exportExpiresS);
          return { value: undefined };
        });
        return 'done';
      } finally {
        clearInterval(timer);
        // DELETEd while running: the DELETE removed the folder, but a file may have been opened since
        if (signal.aborted && !(await readExport(deps.sql, id).catch(() => true))) await removeJobFiles(dir, id);
      }
    },
    async sweep() {
      for (const id of await expireExports(deps.sql)) await removeJobFiles(dir, id);
      await sweepJobFiles(dir, () => exportIds(deps.sql));
    },
  };
}

/** Runs the parts left; `progress(n)`: resources written so far (X-Progress between checkpoints). */
async function runExport(
  deps: { sql: Sql; config: KindDeps['config'] },
  exp: ExportJobRow,
  job: Job,
  signal: AbortSignal,
  progress: (written: number) => void,
): Promise<'done' | 'stopped'> {
  const { sql, config } = deps;
  const params = exp.params as ExportParams;
  const parts = (exp.parts ?? []) as Part[];
  const snapshot = await openSnapshot(sql);
  try {
    let done = exp.doneParts;
    if (exp.transactionTime === null) {
      const outputTypes = outputTypesOf(parts);
      const empty = new Set(await emptyTypes(sql, snapshot.id, outputTypes));
      const emptyParts = [...parts.entries()].flatMap(([i, p]) => (p.kind === 'output' && empty.has(p.type) ? [i] : []));
      const total = await estimateRows(sql, outputTypes.filter((t) => !empty.has(t)));
      await job.commit(async (tx) => {
        await startExport(tx, exp.id, { transactionTime: snapshot.transactionTime, total, emptyParts });
        return { value: undefined, checkpoint: emptyParts.length };
      });
      done = emptyParts;
    }
    // Parts run PARALLEL_PARTS at a time, each on COPY connections of its own; a part whose table
    // is big reads it as two halves only when the second connection is free (copySlots). The parts
    // of the referenced types wait for the `refs` part, which collects their ids.
    let committed = exp.exported;
    const inFlight = new Map<number, number>();
    const report = () => progress(committed + [...inFlight.values()].reduce((a, b) => a + b, 0));
    const local = new AbortController();
    const stop = AbortSignal.any([signal, local.signal]);
    const slots = copySlots(PARALLEL_PARTS);
    const refsIndex = parts.findIndex((p) => p.kind === 'refs');
    let refsDone: Promise<void> = Promise.resolve();
    let refsResolve: (() => void) | undefined;
    if (refsIndex >= 0 && !done.includes(refsIndex)) refsDone = new Promise((resolve) => { refsResolve = resolve; });
    const refTypes = params.level !== 'system' ? new Set(params.refTypes ?? []) : new Set<string>();
    const queue = biggestFirst([...parts.entries()].filter(([index]) => !done.includes(index)), await tableBytes(sql, outputTypesOf(parts)));
    const worker = async (): Promise<void> => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const [index, part] = next;
        if (part.kind === 'output' && refTypes.has(part.type)) await refsDone;
        if (stop.aborted) return;
        const release = await slots.take();
        let files: PartFile[];
        try {
          inFlight.set(index, 0);
          files = await runPart({ sql, config, slots }, exp.id, params, part, snapshot.id, stop, (n) => { inFlight.set(index, n); report(); });
        } finally {
          release();
        }
        if (stop.aborted) return;
        try {
          await syncFiles(config.exportDir, exp.id, files.map((f) => f.name));
        } catch (err) {
          if (stop.aborted) return; // cancelled meanwhile (DELETE removes the folder): not a failure
          throw err;
        }
        await job.commit(async (tx) => {
          await finishPart(tx, exp.id, index, files);
          return { value: undefined, checkpoint: done.length + 1 };
        });
        done = [...done, index];
        inFlight.delete(index);
        if (index === refsIndex) refsResolve?.();
        // counted once the part's files are committed (SPEC §14 /metrics)
        for (const f of files) if (f.kind === 'output' && f.count > 0) resourcesExported.inc({ type: f.type }, f.count);
        committed += files.filter((f) => f.kind === 'output').reduce((n, f) => n + f.count, 0);
        report();
      }
    };
    // the first failure stops the other workers; it is the run's error
    let failure: { error: unknown } | undefined;
    await Promise.all(Array.from({ length: WORKERS }, () => worker().catch((error: unknown) => {
      failure ??= { error };
      local.abort(error);
      refsResolve?.();
    })));
    if (failure) throw failure.error;
    if (signal.aborted) return 'stopped';
    await job.commit(async (tx) => {
      await endExport(tx, exp.id, { state: 'done' }, config.exportExpiresS);
      return { value: undefined };
    });
    return 'done';
  } finally {
    snapshot.close();
  }
}

function outputTypesOf(parts: Part[]): string[] {
  return parts.flatMap((p) => (p.kind === 'output' ? [p.type] : []));
}

/** A counting semaphore over the COPY connections of one run. */
interface CopySlots {
  /** Waits for a free slot; returns its release. */
  take(): Promise<() => void>;
  /** A free slot now, or undefined. */
  tryTake(): (() => void) | undefined;
}

function copySlots(size: number): CopySlots {
  let free = size;
  const waiting: (() => void)[] = [];
  const releaser = () => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = waiting.shift();
      if (next) next();
      else free++;
    };
  };
  return {
    async take() {
      if (free > 0) { free--; return releaser(); }
      await new Promise<void>((resolve) => waiting.push(resolve));
      return releaser();
    },
    tryTake() {
      if (free === 0) return undefined;
      free--;
      return releaser();
    },
  };
}

type PartFile = WrittenFile & { kind: 'output' | 'deleted' | 'error'; type: string };

async function runPart(
  deps: { sql: Sql; config: KindDeps['config']; slots: CopySlots }, jobId: string, params: ExportParams, part: Part, snapshot: string, signal: AbortSignal, progress: (n: number) => void,
): Promise<PartFile[]> {
  const { sql, config } = deps;
  const maxLines = config.exportFileResources;
  switch (part.kind) {
    case 'output': {
      const query = partQuery(jobId, params, part.type);
      if (params.level !== 'system' && params.refTypes?.includes(part.type)) query.ids = await referencedIds(sql, jobId, part.type);
      // the second half's connection is held until the part is done
      let second: (() => void) | undefined;
      try {
        const streams = await openPart(sql, snapshot, query, { split: () => (second = deps.slots.tryTake()) !== undefined });
        return await writeOutput(config, jobId, part.type, streams, signal, progress);
      } finally {
        second?.();
      }
    }
    case 'deleted': {
      const splitter = await fileSplitter(config.exportDir, jobId, { maxLines, nameOf: (i) => `${part.type}.deleted.${String(i).padStart(3, '0')}.ndjson` });
      for await (const rows of deletedRows(sql, snapshot, partQuery(jobId, params, part.type))) {
        if (signal.aborted) break;
        const text = rows.map((r) => JSON.stringify({
          resourceType: 'Bundle',
          id: `deleted-${r.txid}`,
          meta: { lastUpdated: r.ts },
          type: 'transaction',
          entry: [{ request: { method: 'DELETE', url: `${part.type}/${r.id}` } }],
        }) + '\n').join('');
        await splitter.write(Buffer.from(text));
      }
      return (await splitter.close()).map((f) => ({ ...f, kind: 'deleted', type: 'Bundle' }));
    }
    case 'refs': {
      await collectRefs(sql, snapshot, jobId, refSources(jobId, params), params.refTypes ?? []);
      return [];
    }
    case 'error': {
      const splitter = await fileSplitter(config.exportDir, jobId, { maxLines, nameOf: (i) => `OperationOutcome.${String(i).padStart(3, '0')}.ndjson` });
      await splitter.write(Buffer.from(issueOutcomes(params).map((l) => l + '\n').join('')));
      return (await splitter.close()).map((f) => ({ ...f, kind: 'error', type: 'OperationOutcome' }));
    }
  }
}

/** The COPY streams of an output part → its files: one series per stream (half), `<Type>.<nnn>.ndjson`. */
async function writeOutput(
  config: KindDeps['config'], jobId: string, type: string, streams: ReadableStream<Uint8Array>[], signal: AbortSignal, progress: (n: number) => void,
): Promise<PartFile[]> {
  const maxLines = config.exportFileResources;
  const counts = streams.map(() => 0);
  // one half failing stops the other: its error is the part's
  const local = new AbortController();
  const halves = AbortSignal.any([signal, local.signal]);
  const files = await Promise.all(streams.map(async (stream, half) => {
    const splitter = await fileSplitter(config.exportDir, jobId, {
      maxLines,
      nameOf: (i) => `${type}.${String(i * streams.length + half).padStart(3, '0')}.ndjson`,
    });
    try {
      await writeCopy(stream, type, halves, async (chunks, lines) => {
        await splitter.writeLines(chunks, lines);
        counts[half] = splitter.lines;
        progress(counts.reduce((a, b) => a + b, 0));
      });
    } catch (err) {
      local.abort(err);
      await splitter.close().catch(() => {});
      throw err;
    }
    return splitter.close();
  }));
  return files.flat().sort((a, b) => a.name.localeCompare(b.name)).map((f) => ({ ...f, kind: 'output' as const, type }));
}

/**
 * COPY tuples → `$dump` lines → `write`, with the number of lines (one per tuple) in the chunks,
 * one COPY chunk at a time (the file's pace drives the COPY).
 */
async function writeCopy(
  stream: ReadableStream<Uint8Array>, type: string, signal: AbortSignal, write: (chunks: Uint8Array[], lines: number) => Promise<void>,
): Promise<void> {
  const reader = stream.getReader();
  const lines = lineWriter(type, EXPORT_CHUNK_BYTES);
  let tuples = 0;
  const decoder = copyBinaryDecoder(DUMP_FIELD_COUNT, (buf: Buffer, fields: Int32Array) => {
    lines.tuple(buf, fields);
    tuples++;
  });
  const flush = async () => {
    const chunks = lines.take();
    const n = tuples;
    tuples = 0;
    if (chunks.length > 0 || n > 0) await write(chunks, n);
  };
  const cancel = () => { void reader.cancel(signal.reason).catch(() => {}); };
  signal.addEventListener('abort', cancel, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (signal.aborted) return;
      if (done) {
        decoder.end();
        break;
      }
      decoder.push(value);
      await flush();
    }
    await flush();
  } catch (err) {
    if (!signal.aborted) await reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}
