/**
 * The batches of one `$import` input (SPEC §8): lines are parsed as they arrive, and a batch is
 * committed as ONE transaction (the job's fenced commit): gate on the session's state and the
 * checkpoint, COPY into the input's staging table, merge into the resource tables, record the new
 * checkpoint (STYLE §8).
 * The next batch is read and parsed while the previous one commits; at most one is in flight.
 */
import type { InputJob, InputOutcome } from './import-job.ts';
import { emptyStaging, gateBatch, recordBatch, type Gate } from '../storage/import-inputs.ts';
import { copyIntoStaging, mergeStaging, type StagingRow } from '../storage/staging.ts';
import { copyIntoResources, rowsByType, typesHolding } from '../storage/resource-copy.ts';
import { tableOf } from '../fhir/types.ts';
import { takeVersion } from '../storage/versions.ts';
import { pgCode, type TransactionSql } from '../storage/db.ts';
import type { Line } from '../streams/lines.ts';
import { parseLine } from '../operations/ingest.ts';
import { relieveMemory } from '../memory.ts';
import { badLines, bytesRead as bytesReadCounter, countImported } from '../metrics/fhirhose.ts';

/** Errors kept per input with their line numbers; the count covers them all. */
export const MAX_ERRORS = 100;

/**
 * A batch also ends when its lines pass this many characters, whatever FHIRHOSE_IMPORT_BATCH_LINES
 * says: memory must not depend on line size (SPEC §9: under 300 MB). 5,000 Synthea Patients are
 * ~16 MB of text; held as JS strings, parsed and re-serialized, two batches per input and two
 * inputs at once took the server to 480 MB in the bench; at 4 MB the batches stay small.
 */
export const MAX_BATCH_CHARS = 4 * 1024 * 1024;

export class BatchWriter {
  private inflight: Promise<Gate> = Promise.resolve('ok');
  private gate: Gate = 'ok';
  private finished = false;
  private committed: number;
  private errorsKept: number;
  private last = performance.now();
  // the batch being assembled
  private rows: StagingRow[] = [];
  private staged: Record<string, number> = {};
  private errors: { line: number; message: string }[] = [];
  private errorCount = 0;
  private lines = 0;
  private chars = 0;
  private lastLine: number;
  /** Source bytes already added to the bytes-read counter by this run. */
  private bytesCounted = 0;
  /**
   * Types merged with the upsert from now on: a batch's plain INSERT met an existing id. Until
   * then each batch tries the INSERT first (staging-merge.ts): an import into tables that do not
   * hold its ids yet skips ON CONFLICT's cost, and one that does fails its first INSERT at the
   * first such id, once per type and run.
   */
  private upsertOnly = new Set<string>();
  error: unknown;

  constructor(
    private readonly job: InputJob,
    private readonly table: string,
    private readonly bytesTotal: number | undefined,
  ) {
    this.committed = job.input.checkpoint;
    this.lastLine = job.input.checkpoint;
    this.errorsKept = job.input.errors.length;
  }

  /** Parses `line` into the batch; true when the batch is full and should be flushed. */
  add(line: Line): boolean {
    const parsed = parseLine(line, { urlType: this.job.input.type ?? undefined, maxLineBytes: this.job.config.maxLineBytes });
    if (parsed.ok) {
      this.rows.push(parsed);
      this.staged[parsed.type] = (this.staged[parsed.type] ?? 0) + 1;
      this.chars += parsed.json.length;
    } else {
      this.errorCount++;
      if (this.errorsKept + this.errors.length < MAX_ERRORS) this.errors.push({ line: parsed.line, message: parsed.message });
    }
    this.lines++;
    this.lastLine = line.no;
    return this.lines >= this.job.config.importBatchLines || this.chars >= MAX_BATCH_CHARS;
  }

  /** Commits the batch (after the previous one); false once a batch was refused or failed. */
  async flush(bytesRead: number, done: boolean): Promise<boolean> {
    if (!(await this.settle())) return false;
    const { job, table } = this;
    const { rows, staged, errors, errorCount } = this;
    const from = this.committed;
    const checkpoint = this.lastLine;
    this.rows = [];
    this.staged = {};
    this.errors = [];
    this.errorCount = 0;
    this.lines = 0;
    this.chars = 0;
    let counted: Record<string, number> = {};
    const bytes = bytesRead - this.bytesCounted;
    this.bytesCounted = bytesRead;
    this.inflight = job.commit(async (tx) => {
      const types = [...rowsByType(rows)];
      // Straight into the resource tables while no type of the batch met an existing id.
      let direct: DirectBatch | undefined;
      if (types.length > 0 && types.every(([type]) => !this.upsertOnly.has(type))) {
        const held = await typesHolding(tx, types);
        for (const type of held) this.upsertOnly.add(type);
        if (held.length === 0) direct = await copyDirect(tx, types, (sp) => gateBatch(sp, job.sessionId, job.input.idx, from), this.upsertOnly);
      }
      if (!direct && rows.length > 0) {
        // The COPY goes first, into this claim's own table: while it streams, the transaction
        // holds no lock anyone else waits for (a server frozen mid-COPY blocks nobody).
        await emptyStaging(tx, table);
        await copyIntoStaging(tx, table, rows);
      }
      const gate = direct?.gate ?? (await gateBatch(tx, job.sessionId, job.input.idx, from));
      if (gate !== 'ok') return { value: gate };
      if (direct) {
        counted = direct.counts;
      } else if (rows.length > 0) {
        const merged = await mergeStaging(tx, table, { update: job.update, method: 'copy', staged, insertFirst: (type) => !this.upsertOnly.has(type) });
        for (const type of merged.conflicted) this.upsertOnly.add(type);
        counted = merged.counts;
      }
      let imported = 0;
      for (const n of Object.values(counted)) imported += n;
      const now = performance.now();
      await recordBatch(tx, job.sessionId, job.input.idx, {
        checkpoint, bytesRead, bytesTotal: this.bytesTotal ?? (done ? bytesRead : undefined),
        imported, errorCount, errors, runMs: now - this.last, done,
      });
      this.last = now;
      return { value: 'ok' as Gate, checkpoint };
    }).then((gate) => {
      // counted once committed: a rolled-back or fenced-off batch imported nothing (SPEC §14)
      if (gate === 'ok') countBatch(counted, errorCount);
      return gate;
    });
    bytesReadCounter.inc({ operation: '$import' }, bytes);
    // awaited by settle() only when the next batch is ready: until then a failure (the database
    // gone, say) would be an unhandled rejection, which ends a Bun process
    this.inflight.catch(() => {});
    this.committed = checkpoint;
    relieveMemory(); // what parsing the batch left (lines, parsed objects) is garbage now; its rows go on to the COPY
    this.errorsKept += errors.length;
    this.finished = done;
    return true;
  }

  /** Waits for the batch in flight; false if it was refused (session not active) or failed. */
  async settle(): Promise<boolean> {
    try {
      this.gate = await this.inflight;
    } catch (error) {
      this.error ??= error;
      this.inflight = Promise.resolve('stopped');
    }
    return this.gate === 'ok' && this.error === undefined;
  }

  outcome(): InputOutcome {
    if (this.error !== undefined) return this.job.signal.aborted ? { kind: 'stopped' } : { kind: 'crashed', error: this.error };
    if (this.gate !== 'ok' || !this.finished) return { kind: 'stopped' };
    return { kind: 'done' };
  }
}

/**
 * The batch COPYed straight into the resource tables (storage/resource-copy.ts), and the gate
 * checked, in a savepoint: undefined when an id was already there (23505: the savepoint is rolled
 * back, and the batch goes through staging and the merge, which decides per id); a gate other
 * than `ok` rolls the rows back too. Until a type meets an existing id, an import into tables
 * that do not hold its ids writes each resource once.
 */
async function copyDirect(
  tx: TransactionSql,
  byType: [string, StagingRow[]][],
  gate: (sql: TransactionSql) => Promise<Gate>,
  upsertOnly: Set<string>,
): Promise<DirectBatch | undefined> {
  try {
    return await tx.savepoint(async (sp) => {
      const version = await takeVersion(sp);
      const counts: Record<string, number> = {};
      for (const [type, list] of byType) counts[type] = await copyIntoResources(sp, type, version, list);
      const checked = await gate(sp);
      if (checked !== 'ok') throw new Refused(checked);
      return { gate: checked, counts };
    });
  } catch (err) {
    if (err instanceof Refused) return { gate: err.gate, counts: {} };
    if (pgCode(err) === '23505') {
      // the type whose table held the id is merged with the upsert from now on, as after a failed INSERT
      const table = (err as { table_name?: string }).table_name;
      const hit = byType.find(([type]) => tableOf(type) === table);
      if (hit) upsertOnly.add(hit[0]);
      return undefined;
    }
    throw err;
  }
}

interface DirectBatch {
  gate: Gate;
  counts: Record<string, number>;
}

class Refused extends Error {
  constructor(readonly gate: Gate) {
    super(`batch refused: ${gate}`);
  }
}

function countBatch(counts: Record<string, number>, errorCount: number): void {
  countImported('$import', counts);
  if (errorCount > 0) badLines.inc({ operation: '$import' }, errorCount);
}
