/**
 * The console's list (SPEC §14): import sessions and export jobs as one list, newest first, paged
 * and filtered by state in SQL, so a page reads 20 heads and then only those jobs' details — not
 * every session of the database.
 *
 * One state vocabulary for both kinds (the console's filter): an import session's own status
 * (active, paused, done, aborted, error); an export's `running` is `active` and `failed` is
 * `error`. Expired exports (their files gone) are not listed, as their status URL answers 404.
 */
import type { Sql } from './db.ts';

export const JOB_STATES = ['active', 'paused', 'done', 'aborted', 'error'] as const;
export type ListState = (typeof JOB_STATES)[number];

export interface JobHead {
  kind: 'import' | 'export';
  id: string;
}

export interface JobPage {
  heads: JobHead[];
  /** Jobs matching the filter, on every page. */
  total: number;
}

/**
 * One page of heads. `clientId`: only this client's exports (anyone but root sees only its own,
 * as the status URL answers; import sessions are shown to every caller the policy lets in).
 */
export async function listJobHeads(
  sql: Sql,
  options: { state?: ListState; limit: number; offset: number; clientId?: string },
): Promise<JobPage> {
  const state = options.state ?? null;
  const client = options.clientId ?? null;
  const rows = await sql<{ kind: 'import' | 'export'; id: string; total: number }[]>`
    with jobs as (
      select 'import' as kind, id, cts as started, resource->>'status' as state
      from bulkimportstatus where status <> 'deleted'
      union all
      select 'export', id, created_at,
        case state when 'running' then 'active' when 'failed' then 'error' else state end
      from export_job
      where (expires_at is null or expires_at > now()) and (${client}::text is null or client_id = ${client}::text)
    )
    select kind, id, count(*) over ()::int as total from jobs
    where ${state}::text is null or state = ${state}::text
    order by started desc, id desc
    limit ${options.limit} offset ${options.offset}`;
  if (rows.length === 0 && options.offset > 0) {
    // past the last page: the total still tells the pager where the last page is
    const [count] = await listJobHeads(sql, { ...options, offset: 0, limit: 1 }).then((p) => [p.total]);
    return { heads: [], total: count ?? 0 };
  }
  return { heads: rows.map((r) => ({ kind: r.kind, id: r.id })), total: rows[0]?.total ?? 0 };
}
