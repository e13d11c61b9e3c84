/**
 * `POST /$load` and `POST /<Type>/$load` (SPEC §7): one ndjson source, gzipped or plain, streamed
 * end to end — source → gunzip → lines → parseLine → COPY into a staging table → checks → merge —
 * in ONE transaction, so a source that fails half-way leaves the resource tables untouched.
 *
 * Memory is flat: only one input chunk of lines and one 1 MiB COPY chunk are in Bun at a time, and
 * each waits for the socket to drain (backpressure reaches the source's reader). Duplicate ids are
 * resolved by PostgreSQL in the merge, never by a set of ids in Bun.
 */
import crypto from 'node:crypto';
import type { OperationContext } from './context.ts';
import { assertType } from './crud.ts';
import { parseLine, type GoodLine, type LineOptions } from './ingest.ts';
import { parseLinesChecked } from './struct-check.ts';
import { parseLoadRequest, type LoadRequest } from './load-request.ts';
import { runningOutcome, validateLater } from './load-validation.ts';
import { OperationOutcomeError, invalid } from '../fhir/outcome.ts';
import { SERVER_TYPES } from '../fhir/types.ts';
import { abortable } from '../streams/abortable.ts';
import { countBytes } from '../streams/count.ts';
import { badLines, bytesRead, countImported } from '../metrics/fhirhose.ts';
import { openSource, sourceError, type Source } from '../streams/source.ts';
import { gunzipIfNeeded, type ExpansionLimits } from '../streams/gzip.ts';
import { ndjsonLines, type Line, type LineBatch } from '../streams/lines.ts';
import { copyIntoStaging, createStaging, dropStaging, mergeStaging } from '../storage/staging.ts';
import { checkStagingRefs, type LineError } from '../storage/staging-check.ts';
import { writeResource } from '../storage/resources.ts';
import { takeVersion, type Version } from '../storage/versions.ts';
import { copyDirect, stagedAfterDirect } from './load-direct.ts';
import { relieveMemory } from '../memory.ts';
import { cancelOnAbort, type TransactionSql } from '../storage/db.ts';

/** SPEC §7: the response lists the first 100 bad lines. */
export const ERROR_LIMIT = 100;

export type LoadResponse = Record<string, unknown>;

export async function load(
  ctx: OperationContext,
  body: unknown,
  options: { type?: string; signal?: AbortSignal } = {},
): Promise<LoadResponse> {
  const request = parseLoadRequest(body);
  checkUrlType(options.type);
  const source = await openSource(request.source, { importRoot: ctx.config.importRoot, limits: ctx.config.sources, signal: options.signal });
  return loadSource(ctx, request, source, options);
}

/**
 * The load of an already opened source: `load` opens a URL; an upload (SPEC §13, upload.ts) hands
 * the request body itself. Same pipeline, limits and answers.
 */
export async function loadSource(
  ctx: OperationContext,
  request: LoadRequest,
  source: Source,
  options: { type?: string; signal?: AbortSignal } = {},
): Promise<LoadResponse> {
  checkUrlType(options.type);
  const { enable, checks } = request.validation;
  const lineOptions: LineOptions = {
    urlType: options.type,
    merge: request.merge,
    stripNulls: request.stripNulls,
    struct: enable === 'on' && checks !== 'refs',
    // Collected while parsing for `async` too: the background check reads them from staging.
    refs: enable !== 'off' && checks !== 'struct',
    maxLineBytes: ctx.config.maxLineBytes,
  };
  const limits = ctx.config.sources;
  // the client's disconnect errors the source itself: a COPY waiting for data ignores a cancel (abortable.ts)
  const counted = { ...source, stream: countBytes(abortable(source.stream, options.signal), (n) => bytesRead.inc({ operation: '$load' }, n)) };
  const lines = new LineReader(counted, lineOptions, { maxLineBytes: ctx.config.maxLineBytes, expansion: limits, signal: options.signal });
  const validationId = enable === 'async' ? `load-${crypto.randomUUID()}` : undefined;
  // Straight into the resource tables (load-direct.ts) when nothing needs the staging table
  // afterwards: no references check, no background validation, no kept temp_table, method copy.
  const direct = request.method === 'copy' && request.tempTable === undefined && validationId === undefined && !(enable === 'on' && lineOptions.refs);

  const result = await ctx.sql
    .begin(async (tx) => {
      const stopCancelling = await cancelOnAbort(tx, options.signal);
      try {
        return await loadInTransaction(tx);
      } finally {
        await stopCancelling();
      }
    })
    .catch((err) => {
      if (options.signal?.aborted) throw new OperationOutcomeError('invalid', `The client disconnected; the load of "${source.name}" was rolled back`);
      throw err;
    })
    .finally(() => lines.close());

  async function loadInTransaction(tx: TransactionSql) {
    let rows = lines.rows();
    let written: Record<string, number> = {};
    let version: Version | undefined;
    if (direct) {
      version = await takeVersion(tx);
      const result = await copyDirect(tx, version, rows);
      written = result.counts;
      if (!result.rest) {
        if (lines.count === 0) throw emptySource(source.name);
        options.signal?.throwIfAborted(); // gone during the last COPY: roll back
        return { merged: { counts: written, duplicates: 0 }, errors: lines.errors, errorCount: lines.errorCount };
      }
      rows = result.rest;
    }
    // Unlogged rather than temporary, even when dropped before the commit: a temporary table
    // lives in 8 MB of temp_buffers and spills, measured 15-20 % slower for COPY and merge.
    const table = await createStaging(tx, { name: request.tempTable });
    const scratch = request.tempTable === undefined && validationId === undefined;
    await copyIntoStaging(tx, table, rows);
    if (lines.count === 0) throw emptySource(source.name);
    let staged = lines.staged;
    if (version) {
      written = await stagedAfterDirect(tx, table, version, written);
      staged = Object.fromEntries(Object.entries(lines.staged).map(([type, n]) => [type, n - (written[type] ?? 0)]));
    }
    let refErrors: LineError[] = [];
    let refErrorCount = 0;
    if (enable === 'on' && lineOptions.refs) {
      const checked = await checkStagingRefs(tx, table, { limit: ERROR_LIMIT });
      for (const [type, n] of Object.entries(checked.perType)) staged[type] = (staged[type] ?? 0) - n;
      refErrors = checked.errors;
      refErrorCount = checked.errorCount;
    }
    options.signal?.throwIfAborted(); // the client is gone: do not start the merge
    const merged = await mergeStaging(tx, table, { update: request.update, method: request.method, staged, version });
    for (const [type, n] of Object.entries(written)) merged.counts[type] = (merged.counts[type] ?? 0) + n;
    if (validationId) {
      const total = Object.values(merged.counts).reduce((a, b) => a + b, 0);
      await writeResource(tx, 'OperationOutcome', validationId, runningOutcome(source.name, total, checks));
      await validateLater(tx, { table, keep: request.tempTable !== undefined, checks, outcomeId: validationId, sourceName: source.name });
    }
    options.signal?.throwIfAborted(); // gone during the merge, between two statements: roll back
    // `async` validates after the commit, so its staging table must outlive the transaction.
    if (scratch) await dropStaging(tx, table);
    const errors = [...lines.errors, ...refErrors].sort((a, b) => a.line - b.line).slice(0, ERROR_LIMIT);
    return { merged, errors, errorCount: lines.errorCount + refErrorCount };
  }

  for (const type of Object.keys(result.merged.counts)) ctx.changed(type);
  countImported('$load', result.merged.counts);
  if (result.errorCount > 0) badLines.inc({ operation: '$load' }, result.errorCount);
  return render(request, options.type, { ...result, validationId });
}

function emptySource(name: string): OperationOutcomeError {
  return new OperationOutcomeError('unprocessable', `Cannot load "${name}": the source is empty (no ndjson lines)`);
}

function checkUrlType(type: string | undefined): void {
  if (type !== undefined) {
    assertType(type);
    if ((SERVER_TYPES as readonly string[]).includes(type)) {
      throw invalid(`${type} is a server type and cannot be loaded; use PUT /${type}/<id>`);
    }
  }
}

function render(
  request: LoadRequest,
  urlType: string | undefined,
  r: { merged: { counts: Record<string, number>; duplicates: number }; errors: LineError[]; errorCount: number; validationId?: string },
): LoadResponse {
  const counts = r.merged.counts;
  const response: LoadResponse = urlType !== undefined ? { total: counts[urlType] ?? 0 } : { ...counts };
  if (r.merged.duplicates > 0) response.duplicates = r.merged.duplicates;
  if (r.errorCount > 0) {
    response.errors = r.errors;
    response.errorCount = r.errorCount;
  }
  if (r.validationId) {
    response.validation = { status: 'running', checks: request.validation.checks, outcome: `/OperationOutcome/${r.validationId}` };
  }
  return response;
}

/**
 * Pulls the source line by line for the COPY: parses each line, keeps the first bad lines and
 * counts per type. Errors of the source, gunzip or the splitter become one source error.
 */
class LineReader {
  readonly staged: Record<string, number> = {};
  readonly errors: LineError[] = [];
  errorCount = 0;
  count = 0;
  private started = false;

  constructor(
    private readonly source: Source,
    private readonly options: LineOptions,
    private readonly limits: { maxLineBytes: number; expansion: ExpansionLimits; signal?: AbortSignal },
  ) {}

  async *rows(): AsyncGenerator<GoodLine[]> {
    this.started = true;
    const batches = ndjsonLines(gunzipIfNeeded(this.source.stream, this.limits.expansion), { maxLineBytes: this.limits.maxLineBytes });
    try {
      for (;;) {
        let next: IteratorResult<LineBatch>;
        try {
          next = await batches.next();
        } catch (err) {
          throw sourceError(this.source.name, err);
        }
        if (next.done) return;
        // A file source does not see the client's disconnect through fetch: stop here too.
        this.limits.signal?.throwIfAborted();
        relieveMemory(); // the lines of the batches before are garbage now (src/memory.ts)
        yield await this.parse(next.value.lines);
      }
    } finally {
      // Leaving early (the COPY failed) cancels the source through the splitter.
      await batches.return(undefined);
    }
  }

  /** With struct validation, the lines are parsed in the validation worker (struct-check.ts). */
  private async parse(lines: Line[]): Promise<GoodLine[]> {
    const all = this.options.struct ? await parseLinesChecked(lines, this.options) : lines.map((line) => parseLine(line, this.options));
    const good: GoodLine[] = [];
    for (const parsed of all) {
      if (parsed.ok) {
        good.push(parsed);
        this.staged[parsed.type] = (this.staged[parsed.type] ?? 0) + 1;
      } else {
        this.errorCount++;
        if (this.errors.length < ERROR_LIMIT) this.errors.push({ line: parsed.line, message: parsed.message });
      }
    }
    this.count += lines.length;
    return good;
  }

  /** A source never read (the transaction failed first) must still be released. */
  async close(): Promise<void> {
    if (!this.started) await this.source.stream.cancel().catch(() => {});
  }
}
