/**
 * A `deleted` file of a pulled or read manifest (SPEC §13), as an input of the session: ndjson of
 * transaction Bundles whose entries are `DELETE <Type>/<id>` (HL7 Bulk Data: "each line … a FHIR
 * Bundle with a type of transaction … request.method SHALL be DELETE"). Applied after every
 * output of the session is done, in batches of FHIRHOSE_IMPORT_BATCH_LINES lines; each batch is
 * ONE fenced transaction (gate, deletes, checkpoint), so a resumed input skips what was committed
 * and `imported` counts each resource deleted exactly once. A line that is not such a Bundle is
 * a line error, like a bad line of an output.
 */
import type { Sql } from '../storage/db.ts';
import { claimInput, gateBatch, recordBatch } from '../storage/import-inputs.ts';
import { deleteResources } from '../storage/bulk-delete.ts';
import { BUSY_SOURCE_WAIT_MS, openSource, sourceError, type Source } from '../streams/source.ts';
import { gunzipIfNeeded } from '../streams/gzip.ts';
import { countBytes, ndjsonLines, type Line } from '../streams/lines.ts';
import { isPlainObject } from '../fhir/resource.ts';
import { isFhirType } from '../fhir/types.ts';
import { ID_PATTERN } from '../fhir/resource.ts';
import type { OriginCredential } from '../streams/outbound.ts';
import type { InputJob, InputOutcome } from './import-job.ts';
import { MAX_ERRORS } from './import-batch.ts';

export async function runDeletes(sql: Sql, job: InputJob, credential: OriginCredential | undefined, label: string): Promise<InputOutcome> {
  const { sessionId, input, signal } = job;
  try {
    if (!(await sql.begin((tx) => claimInput(tx, sessionId, input.idx)))) return { kind: 'stopped' };
  } catch (error) {
    return signal.aborted ? { kind: 'stopped' } : { kind: 'crashed', error };
  }
  let source: Source;
  try {
    source = await openSource(input.source, { importRoot: job.config.importRoot, limits: job.config.sources, signal, credential, label: 'deleted file', busyWaitMs: BUSY_SOURCE_WAIT_MS });
  } catch (error) {
    return signal.aborted ? { kind: 'stopped' } : { kind: 'failed', message: `${label}: ${sourceError('deleted file', error).message}` };
  }
  let rawBytes = 0;
  const batches = ndjsonLines(gunzipIfNeeded(countBytes(source.stream, (n) => { rawBytes += n; }), job.config.sources), {
    maxLineBytes: job.config.maxLineBytes,
    skipLines: input.checkpoint,
  });
  let checkpoint = input.checkpoint;
  let kept = input.errors.length;
  let pending: { line: Line; ids: Map<string, Set<string>> | string }[] = [];
  let started = performance.now();
  const flush = async (done: boolean): Promise<boolean> => {
    const from = checkpoint;
    const to = pending.length > 0 ? pending[pending.length - 1]!.line.no : checkpoint;
    const byType = new Map<string, Set<string>>();
    const errors: { line: number; message: string }[] = [];
    let errorCount = 0;
    for (const item of pending) {
      if (typeof item.ids === 'string') {
        errorCount++;
        if (kept + errors.length < MAX_ERRORS) errors.push({ line: item.line.no, message: item.ids });
        continue;
      }
      for (const [type, ids] of item.ids) {
        const set = byType.get(type) ?? new Set<string>();
        for (const id of ids) set.add(id);
        byType.set(type, set);
      }
    }
    pending = [];
    const runMs = performance.now() - started;
    const ok = await job.commit(async (tx) => {
      if ((await gateBatch(tx, sessionId, input.idx, from)) !== 'ok') return { value: false };
      let deleted = 0;
      for (const [type, ids] of byType) deleted += await deleteResources(tx, type, [...ids]);
      await recordBatch(tx, sessionId, input.idx, {
        checkpoint: to, bytesRead: rawBytes, bytesTotal: source.bytesTotal ?? (done ? rawBytes : undefined),
        imported: deleted, errorCount, errors, runMs, done,
      });
      return { value: true, checkpoint: to };
    });
    started = performance.now();
    if (ok) {
      checkpoint = to;
      kept += errors.length;
    }
    return ok;
  };
  // a failed commit (the database, a lost lease) is a crash; a failed read is the source's
  const commit = async (done: boolean): Promise<InputOutcome | undefined> => {
    try {
      return (await flush(done)) ? undefined : { kind: 'stopped' };
    } catch (error) {
      return signal.aborted ? { kind: 'stopped' } : { kind: 'crashed', error };
    }
  };
  try {
    for await (const batch of batches) {
      for (const line of batch.lines) {
        pending.push({ line, ids: deletesOf(line) });
        if (pending.length >= job.config.importBatchLines) {
          const stop = await commit(false);
          if (stop) return stop;
        }
      }
      if (signal.aborted) return { kind: 'stopped' };
    }
  } catch (error) {
    if (signal.aborted) return { kind: 'stopped' };
    return { kind: 'failed', message: `${label}: ${sourceError('deleted file', error).message}` };
  }
  if (signal.aborted) return { kind: 'stopped' };
  return (await commit(true)) ?? { kind: 'done' };
}

/** `<Type>/<id>`, relative or at the end of an absolute URL (a `_history/<v>` suffix is dropped). */
const DELETE_URL = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

/** The ids a line deletes, by type, or the line error to report. */
export function deletesOf(line: Line): Map<string, Set<string>> | string {
  if (!('text' in line)) return 'tooLong' in line ? 'the line is too long' : 'the line is not UTF-8 text';
  if (line.text.trim() === '') return new Map();
  let bundle: unknown;
  try {
    bundle = JSON.parse(line.text);
  } catch {
    return 'not valid JSON';
  }
  if (!isPlainObject(bundle) || bundle.resourceType !== 'Bundle' || bundle.type !== 'transaction' || !Array.isArray(bundle.entry)) {
    return 'a deleted file line must be a Bundle of type transaction with entries';
  }
  const out = new Map<string, Set<string>>();
  for (const [i, entry] of bundle.entry.entries()) {
    const request = isPlainObject(entry) && isPlainObject(entry.request) ? entry.request : undefined;
    if (!request || request.method !== 'DELETE' || typeof request.url !== 'string') return `entry[${i}] must have request.method DELETE and a request.url`;
    const match = DELETE_URL.exec(request.url.split('?')[0]!);
    if (!match || !isFhirType(match[1]!) || !ID_PATTERN.test(match[2]!)) return `entry[${i}].request.url ${JSON.stringify(request.url.slice(0, 200))} is not <Type>/<id>`;
    const set = out.get(match[1]!) ?? new Set<string>();
    set.add(match[2]!);
    out.set(match[1]!, set);
  }
  return out;
}
