/**
 * The role `POST /$dump-sql` queries run as (SPEC §6). fhirhose's own role is often a superuser
 * (always with the embedded PostgreSQL), and a read-only transaction still lets a superuser call
 * `pg_read_file`, `pg_ls_dir`, `lo_import` or `pg_terminate_backend`, and read `client` (secret
 * hashes) and `bulkimport_secret`. So the cursor runs under `SET LOCAL ROLE fhirhose_sql`: a NOLOGIN
 * role that may SELECT the resource tables and their `_history` twins, except `client`, and nothing
 * else — not `_migrations`, `bulkimport_input`/`_secret`, nor $load's staging tables, which are
 * created later and never granted (hence explicit grants per table, not default privileges).
 *
 * `SET ROLE` is checked against the *session* user, so inside the query
 * `set_config('role', 'postgres', false)` would switch straight back (verified on PostgreSQL 18).
 * `set_config(text, text, boolean)` is the only way a SELECT can change a setting (`SET` cannot
 * appear in a cursor), so EXECUTE on it is revoked from PUBLIC — which only a superuser may do, and
 * which only matters when the session user is one. fhirhose itself never calls `set_config`;
 * postgres.js sends its settings as startup parameters.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { ALL_TYPES, tableOf, historyTableOf } from '../fhir/types.ts';

export const SQL_READER_ROLE = 'fhirhose_sql';

/**
 * Functions a read-only transaction still lets a query call although they write or outlive it
 * (SPEC §10), all tried through $dump-sql on PostgreSQL 18 as fhirhose_sql: WAL messages
 * (`pg_logical_emit_message`, transactional or not), xid assignment (`txid_current`,
 * `pg_current_xact_id`), and advisory locks — session ones outlive the query, and even
 * transaction ones could hold the key fhirhose's migrations lock with for the statement timeout. EXECUTE on every
 * overload is revoked from PUBLIC (superuser only, like set_config), so fhirhose_sql gets
 * "permission denied"; superusers keep them, and fhirhose's own role is one whenever the revoke
 * can happen. (nextval/setval, lo_create and the like are refused already: read-only transaction,
 * no privilege on the sequence.) The unlock functions stay: fhirhose calls pg_advisory_unlock_all.
 */
export const WRITING_FUNCTIONS = [
  'pg_logical_emit_message', 'txid_current', 'pg_current_xact_id',
  'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared',
  'pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared', 'pg_try_advisory_xact_lock', 'pg_try_advisory_xact_lock_shared',
];

/** The tables `fhirhose_sql` may read: every resource table and its history, except Client's. */
export function readableTables(): string[] {
  return ALL_TYPES.filter((t) => t !== 'Client').flatMap((t) => [tableOf(t), historyTableOf(t)]);
}

const literal = (s: string) => `'${s.replaceAll("'", "''")}'`;

/**
 * Creates the role (when the current role is a superuser or has CREATEROLE), makes it SET-able by
 * the current role, and revokes `set_config` from PUBLIC (superuser only). Idempotent; a role that
 * may do none of it gets a no-op, and `$dump-sql` then runs as fhirhose's role (see sqlReaderRole).
 */
export function createReaderSql(): string {
  const role = ident(SQL_READER_ROLE);
  return `
do $$
declare me record;
begin
  select rolsuper, rolcreaterole into me from pg_roles where rolname = current_user;
  if not (me.rolsuper or me.rolcreaterole) then return; end if;
  if not exists (select 1 from pg_roles where rolname = ${literal(SQL_READER_ROLE)}) then
    begin
      create role ${role} nologin;
    exception when duplicate_object or unique_violation then null; -- another database migrating at once
    end;
  end if;
  if not me.rolsuper then
    begin
      -- a CREATEROLE role holds ADMIN on roles it creates (PostgreSQL 16+), not SET: grant itself SET
      execute format('grant ${role} to %I', current_user);
    exception when insufficient_privilege or invalid_grant_operation then null;
    end;
  else
    revoke execute on function pg_catalog.set_config(text, text, boolean) from public;
  end if;
end $$;`;
}

/**
 * Grants SELECT on each readable table that exists and lacks it, and USAGE on schema public. Run
 * at every start (inside migrate's lock), so resource tables added by later migrations are covered.
 */
export function grantReaderSql(): string {
  const role = ident(SQL_READER_ROLE);
  return `
do $$
declare t text; f regprocedure;
begin
  if not exists (select 1 from pg_roles where rolname = ${literal(SQL_READER_ROLE)}) then return; end if;
  if (select rolsuper from pg_roles where rolname = current_user) then
    for f in select p.oid::regprocedure from pg_proc p
      where p.pronamespace = 'pg_catalog'::regnamespace and p.proname = any (array[${WRITING_FUNCTIONS.map(literal).join(', ')}])
        and has_function_privilege(${literal(SQL_READER_ROLE)}, p.oid, 'EXECUTE') loop
      execute format('revoke execute on function %s from public', f);
    end loop;
  end if;
  if not has_schema_privilege(${literal(SQL_READER_ROLE)}, 'public', 'USAGE') then
    grant usage on schema public to ${role};
  end if;
  foreach t in array array[${readableTables().map(literal).join(', ')}]::text[] loop
    if to_regclass(quote_ident(t)) is not null and not has_table_privilege(${literal(SQL_READER_ROLE)}, to_regclass(quote_ident(t)), 'SELECT') then
      execute format('grant select on %I to ${role}', t);
    end if;
  end loop;
end $$;`;
}

/**
 * The role `$dump-sql` runs as, and a one-line warning when it is short of the protection above:
 * no role (missing, or this connection's role may not `SET ROLE` to it: tried in a rolled-back
 * transaction), or a role the query can leave with `set_config('role', …)` (not a superuser, so
 * `set_config` could not be revoked: the query can become fhirhose's role again, though never a
 * superuser).
 */
export async function inspectSqlReader(sql: Sql): Promise<{ role: string | undefined; warning: string | undefined }> {
  try {
    await sql.begin(async (tx) => {
      await tx`set local role ${tx(SQL_READER_ROLE)}`;
      throw new Rollback();
    });
  } catch (err) {
    if (!(err instanceof Rollback)) {
      if (typeof err === 'object' && err !== null && 'code' in err) {
        return { role: undefined, warning: `$dump-sql queries run with this database role's full privileges: role ${SQL_READER_ROLE} is missing or cannot be SET (a superuser or CREATEROLE role creates it at migration; see README, POST /$dump-sql)` };
      }
      throw err;
    }
  }
  const [row] = await sql`select has_function_privilege(${SQL_READER_ROLE}, 'pg_catalog.set_config(text,text,boolean)', 'EXECUTE') as escapable,
    (select string_agg(distinct p.proname, ', ') from pg_proc p where p.pronamespace = 'pg_catalog'::regnamespace
      and p.proname = any (${WRITING_FUNCTIONS}::text[]) and has_function_privilege(${SQL_READER_ROLE}, p.oid, 'EXECUTE')) as writers`;
  const warning = row!.escapable
    ? `$dump-sql queries run as ${SQL_READER_ROLE}, but set_config(…) is executable by PUBLIC (only a superuser may revoke it), so a query can switch back to this database role; see README, POST /$dump-sql`
    : row!.writers
      ? `$dump-sql queries run as ${SQL_READER_ROLE}, but may call ${String(row!.writers)} (EXECUTE granted to PUBLIC; only a superuser may revoke it); see README, POST /$dump-sql`
      : undefined;
  return { role: SQL_READER_ROLE, warning };
}

class Rollback extends Error {}
