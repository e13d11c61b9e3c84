/**
 * Connections per pool as PostgreSQL sees them (SPEC §14 `/metrics`): postgres.js does not expose
 * its pool's queues, so each pool connects under its own application_name (storage/pools.ts,
 * server.ts) and pg_stat_activity is grouped by it. Servers sharing one database all show here.
 */
import type { AnySql } from './db.ts';

export const POOL_APPLICATION_NAMES: Record<string, string> = {
  'fhirhose': 'api',
  'fhirhose bulk': 'bulk',
  'fhirhose jobs': 'jobs',
};

export async function poolUsage(sql: AnySql): Promise<{ pool: string; state: string; n: number }[]> {
  const names = Object.keys(POOL_APPLICATION_NAMES);
  const rows = await sql`select application_name as name, coalesce(state, 'unknown') as state, count(*)::int as n
    from pg_stat_activity
    where datname = current_database() and application_name in ${sql(names)} and pid <> pg_backend_pid()
    group by 1, 2 order by 1, 2`;
  return rows.map((r) => ({ pool: POOL_APPLICATION_NAMES[r.name as string]!, state: r.state as string, n: r.n as number }));
}
