/**
 * The two connection pools of SPEC §10, so bulk work can never take the connections API requests
 * need: `api` for auth, CRUD, search and status reads (FHIRHOSE_POOL_SIZE), `bulk` for `$dump`,
 * `$load` and the `$import` runner (FHIRHOSE_BULK_POOL_SIZE). Each `$dump-sql` opens one
 * connection of its own (at most FHIRHOSE_BULK_CONCURRENCY at once, the bulk cap) that refuses any
 * server message larger than FHIRHOSE_SQL_MAX_VALUE_BYTES (patches/postgres.mjs fix 3), so a query
 * of `repeat('x', 1e9)` fails when its row starts arriving instead of being buffered whole. Its own,
 * not pooled: a pooled connection ended that way never came back (its next start-up timed out).
 */
import { connect, type Sql } from './db.ts';

export interface Pools {
  api: Sql;
  bulk: Sql;
  /** A single-connection client for one `$dump-sql` cursor, bounded per row; `end()` it after. */
  sqlReader(): Sql;
}

export interface PoolSizes {
  apiPoolSize: number;
  bulkPoolSize: number;
  bulkConcurrency: number;
  sqlMaxValueBytes: number;
}

export function openPools(url: string, sizes: PoolSizes): Pools {
  return {
    api: connect(url, { max: sizes.apiPoolSize }),
    bulk: connect(url, { max: sizes.bulkPoolSize, applicationName: 'fhirhose bulk' }),
    sqlReader: () => connect(url, { max: 1, maxMessageBytes: sizes.sqlMaxValueBytes }),
  };
}

export async function closePools(pools: Pools, timeoutSeconds: number): Promise<void> {
  await Promise.all([pools.api, pools.bulk].map((sql) => sql.end({ timeout: timeoutSeconds })));
}
