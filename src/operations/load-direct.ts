/**
 * `$load` straight into the resource tables (storage/resource-copy.ts) while its ids are new: one
 * COPY per run of a type, cut into segments of at most SEGMENT_CHARS, each in a savepoint. A
 * segment's rows are kept until its COPY succeeded; when one meets an id that is already there
 * (23505: a current row, one committed meanwhile, or a repeat within the source), its savepoint is
 * rolled back and that segment plus the rest of the source go through staging and the merge as
 * before (`stagedAfterDirect`). Before each segment the next few ids of its type are looked up
 * (`typesHolding`): a reload into tables that hold them is staged from there without a segment
 * that 23505 would roll back. The final state is the staging path's in every case.
 */
import type { GoodLine } from './ingest.ts';
import { pgCode, ident, type TransactionSql } from '../storage/db.ts';
import { copyIntoResources, typesHolding } from '../storage/resource-copy.ts';
import { indexStagingByType } from '../storage/staging.ts';
import { tableOf } from '../fhir/types.ts';
import type { Version } from '../storage/versions.ts';

/**
 * Characters of JSON per segment: what a failing segment keeps in memory to be staged instead
 * (about twice that as JS strings). More segments cost a savepoint and a COPY start each.
 */
const SEGMENT_CHARS = 8 * 1024 * 1024;
/**
 * After this many segments the rest of the source is staged: each savepoint is a subtransaction,
 * and past 64 of them every other session's snapshot overflows its subtransaction cache.
 */
const MAX_SEGMENTS = 60;

export interface DirectResult {
  /** Rows written straight into each type's table. */
  counts: Record<string, number>;
  /** The rows still to stage, in source order, when the direct COPY stopped before the end. */
  rest?: AsyncGenerator<GoodLine[]>;
}

/** Writes `batches` straight into the resource tables, all with `version`, until the end or a reason to stop. */
export async function copyDirect(tx: TransactionSql, version: Version, batches: AsyncGenerator<GoodLine[]>): Promise<DirectResult> {
  const counts: Record<string, number> = {};
  const source = new RowQueue(batches);
  for (let segments = 0; ; segments++) {
    const first = await source.peek();
    if (first === undefined) return { counts };
    if (segments === MAX_SEGMENTS) return { counts, rest: source.drain([]) };
    const type = first.type;
    // a type whose table holds one of the next few ids (a reload): stage it all, without
    // encoding and sending a segment that 23505 would roll back
    if ((await typesHolding(tx, [[type, source.upcoming(type, 8)]])).length > 0) return { counts, rest: source.drain([]) };
    const kept: GoodLine[][] = [];
    const segment = async function* (): AsyncGenerator<GoodLine[]> {
      let chars = 0;
      while (chars < SEGMENT_CHARS) {
        const rows = await source.take(type, SEGMENT_CHARS - chars);
        if (rows === undefined) return;
        kept.push(rows);
        for (const row of rows) chars += row.json.length;
        yield rows;
      }
    };
    try {
      const n = await tx.savepoint((sp) => copyIntoResources(sp, type, version, segment()));
      counts[type] = (counts[type] ?? 0) + n;
    } catch (err) {
      if (pgCode(err) !== '23505') throw err;
      return { counts, rest: source.drain(kept) };
    }
  }
}

/**
 * After a direct COPY stopped early: the rows it wrote whose ids are staged too (a later line of
 * the same id) move back into the staging table, as line 0 (before every staged line), so the
 * merge decides them exactly as if all lines had been staged. Returns the rows still written
 * straight per type.
 */
export async function stagedAfterDirect(tx: TransactionSql, table: string, version: Version, direct: Record<string, number>): Promise<Record<string, number>> {
  const kept: Record<string, number> = {};
  // Without an index the planner, misled by the resource table's statistics from before this
  // load (its txid estimated at a row), scanned the whole staging table for each row written
  // straight: 1,000,000 lines of the Synthea mix (60 segments, then 800 MB staged) spent over
  // 6 minutes on 15,749 AllergyIntolerances. With it, any join order is a probe per row.
  if (Object.values(direct).some((n) => n > 0)) {
    await indexStagingByType(tx, table, { withId: true });
  }
  for (const [type, n] of Object.entries(direct)) {
    const moved = await tx.unsafe(
      `with moved as (
         delete from ${ident(tableOf(type))} t using ${ident(table)} s
         where s.type = $1 and s.id = t.id and t.txid = $2::bigint returning t.id, t.resource
       )
       insert into ${ident(table)} (line, type, id, resource) select 0, $1, id, resource from moved`,
      [type, version.txid],
    );
    kept[type] = n - moved.count;
  }
  return kept;
}

/** The parsed batches as a queue of rows, taken by runs of one type. */
class RowQueue {
  private rows: GoodLine[] = [];
  private at = 0;

  constructor(private readonly batches: AsyncGenerator<GoodLine[]>) {}

  async peek(): Promise<GoodLine | undefined> {
    while (this.at >= this.rows.length) {
      const next = await this.batches.next();
      if (next.done) return undefined;
      this.rows = next.value;
      this.at = 0;
    }
    return this.rows[this.at];
  }

  /** Up to `n` of the next rows, while they are of `type`, from the batch at hand (after `peek`). */
  upcoming(type: string, n: number): GoodLine[] {
    const out: GoodLine[] = [];
    for (let i = this.at; i < this.rows.length && out.length < n && this.rows[i]!.type === type; i++) out.push(this.rows[i]!);
    return out;
  }

  /** The next rows of `type`, up to about `chars` characters of JSON (at least one); undefined when the next row is of another type. */
  async take(type: string, chars: number): Promise<GoodLine[] | undefined> {
    const first = await this.peek();
    if (first === undefined || first.type !== type) return undefined;
    const start = this.at;
    let end = start;
    let taken = 0;
    while (end < this.rows.length && this.rows[end]!.type === type && (end === start || taken < chars)) taken += this.rows[end++]!.json.length;
    this.at = end;
    return start === 0 && end === this.rows.length ? this.rows : this.rows.slice(start, end);
  }

  /** `before`, then what is left of the queue and the batches. */
  async *drain(before: GoodLine[][]): AsyncGenerator<GoodLine[]> {
    for (const rows of before) yield rows;
    if (this.at < this.rows.length) yield this.rows.slice(this.at);
    this.rows = [];
    yield* this.batches;
  }
}
