/** What operations receive from the composition root: plain values, no HTTP. */
import type { Sql } from '../storage/db.ts';
import type { Config } from '../config.ts';
import type { ReadReplica } from '../storage/replica.ts';

/** Who is asking: the authenticated Client of the request (SPEC §2). */
export interface Caller {
  clientId: string;
}

export interface OperationContext {
  /** The pool this operation uses: the API pool, or for bulk routes the bulk one (app.ts). */
  sql: Sql;
  /** Bulk work's own pools (storage/pools.ts, SPEC §10); absent: everything on `sql`. */
  pools?: { bulk: Sql; sqlReader(): Sql };
  config: Config;
  /** Called after a write to a type, so caches (auth) can forget. */
  changed(type: string): void;
  log(line: string): void;
  /** The role `$dump-sql` queries run as (storage/sql-reader.ts); undefined: fhirhose's own. */
  sqlRole?: string;
  /** FHIRHOSE_READ_URL's standby: bulk reads go there (operations/bulk-reader.ts), writes never. */
  replica?: ReadReplica;
  /** The request's authenticated client, set by the HTTP layer for each request; absent for work
   * that no request drives (the $import runner). Operations that own or audit what a client
   * started (import sessions, exports) read it here. */
  caller?: Caller;
}
