/**
 * `GET /metrics` (SPEC §14): the process's counters and request histogram, then gauges read now
 * from the database — jobs by kind and state, and connections per pool.
 */
import type { OperationContext } from './context.ts';
import { metrics } from '../metrics/fhirhose.ts';
import { gaugeText } from '../metrics/registry.ts';
import { jobCounts } from '../storage/jobs.ts';
import { poolUsage } from '../storage/pool-usage.ts';

export async function renderMetrics(ctx: OperationContext): Promise<string> {
  const [jobs, pools] = await Promise.all([jobCounts(ctx.sql), poolUsage(ctx.sql)]);
  const { config } = ctx;
  const max = { api: config.poolSize, bulk: config.bulkPoolSize, jobs: config.jobConcurrency + 3 };
  return metrics.render()
    + gaugeText('fhirhose_jobs', 'Jobs in the job table by kind and state (running: ready with a live lease; queued: ready without)',
      jobs.map((j) => ({ labels: { kind: j.kind, state: j.state }, value: j.n })))
    + gaugeText('fhirhose_pool_connections', 'Open connections per pool and PostgreSQL state (pg_stat_activity; every server on this database)',
      pools.map((p) => ({ labels: { pool: p.pool, state: p.state }, value: p.n })))
    + gaugeText('fhirhose_pool_max_connections', 'Configured size of each pool of this server',
      Object.entries(max).map(([pool, value]) => ({ labels: { pool }, value })));
}
