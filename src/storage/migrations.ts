/**
 * Versioned, idempotent migrations (SPEC §2). Each runs once, recorded in `_migrations`; an advisory
 * lock makes concurrent starts on one database safe.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { ALL_TYPES, tableOf, historyTableOf } from '../fhir/types.ts';
import { createReaderSql, grantReaderSql } from './sql-reader.ts';
import { AUTH_CHANNEL } from './notify.ts';
import { JOBS_TABLE_SQL } from './jobs.ts';

interface Migration {
  version: number;
  name: string;
  sql: () => string;
}

function resourceTables(type: string): string {
  const columns = `id text not null, txid bigint not null,
    cts timestamptz not null default now(), ts timestamptz not null default now(),
    resource_type text not null default '${type}', status resource_status not null, resource jsonb not null`;
  return `create table if not exists ${ident(tableOf(type))} (${columns}, primary key (id));
create table if not exists ${ident(historyTableOf(type))} (${columns}, primary key (id, txid));`;
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'resource tables',
    sql: () => `
do $$ begin
  create type resource_status as enum ('created', 'updated', 'deleted', 'recreated');
exception when duplicate_object then null; end $$;
create sequence if not exists transaction_id_seq;
${ALL_TYPES.map(resourceTables).join('\n')}`,
  },
  {
    // $import (SPEC §8): per-input progress and checkpoints live beside the session row, so a batch
    // commit updates one narrow row of its own input and never contends on the session row.
    version: 2,
    name: 'import inputs and secrets',
    sql: () => `
create table if not exists bulkimport_input (
  session_id text not null references bulkimportstatus (id) on delete cascade,
  idx int not null,
  type text,
  url text not null,
  storage text not null,
  source text not null,
  status text not null default 'pending',
  checkpoint bigint not null default 0,
  lines_read bigint not null default 0,
  bytes_read bigint not null default 0,
  bytes_total bigint,
  imported bigint not null default 0,
  error_count bigint not null default 0,
  errors jsonb not null default '[]',
  message text,
  started_at timestamptz,
  finished_at timestamptz,
  run_ms bigint not null default 0,
  primary key (session_id, idx)
);
create table if not exists bulkimport_secret (
  session_id text primary key references bulkimportstatus (id) on delete cascade,
  hash text not null
);`,
  },
  {
    // $dump-sql (SPEC §6) runs user SQL as this role, not as fhirhose's own: see sql-reader.ts.
    version: 3,
    name: 'dump-sql reader role',
    sql: createReaderSql,
  },
  {
    // SPEC §11: a Client or AccessPolicy written by any server, or by hand with SQL, drops the
    // credential and policy caches of every server (auth/auth-changes.ts). A statement trigger, so
    // every path that writes these tables is covered (CRUD, PUT /, $load's merge, $import, psql);
    // pg_notify in a trigger is delivered at commit and deduplicated per transaction.
    version: 4,
    name: 'auth change notifications',
    sql: () => `
create or replace function fhirhose_auth_changed() returns trigger language plpgsql as $$
begin
  perform pg_notify('${AUTH_CHANNEL}', tg_argv[0]);
  return null;
end $$;
${[['client', 'Client'], ['accesspolicy', 'AccessPolicy']].map(([table, type]) => `
drop trigger if exists fhirhose_auth_changed on ${ident(table!)};
create trigger fhirhose_auth_changed after insert or update or delete or truncate on ${ident(table!)}
  for each statement execute function fhirhose_auth_changed('${type}');`).join('\n')}`,
  },
  {
    // SPEC §11: background work as leased rows (storage/jobs.ts). The inputs of sessions created
    // before this migration become jobs too, in the state their session gives them.
    version: 5,
    name: 'jobs',
    sql: () => `${JOBS_TABLE_SQL}
insert into fhirhose_job (kind, key, grp, state, payload, checkpoint)
select 'import-input', 'import-input:' || i.session_id || ':' || i.idx, i.session_id,
  case when i.status = 'done' then 'done'
       when i.status = 'error' then 'failed'
       when i.status = 'aborted' or s.resource->>'status' = 'aborted' then 'cancelled'
       when s.resource->>'status' = 'active' and i.status in ('pending', 'active') then 'ready'
       else 'held' end,
  jsonb_build_object('session', i.session_id, 'idx', i.idx), i.checkpoint
from bulkimport_input i join bulkimportstatus s on s.id = i.session_id
on conflict (key) do nothing;`,
  },
  {
    // $export (SPEC §12): one row per export with its planned parts and the checkpoint of done
    // parts (the work itself is an `export` row of fhirhose_job, SPEC §11); the files of done parts; the patients of a Patient/Group export;
    // the Practitioners, Organizations … its compartment resources reference.
    version: 6,
    name: 'export jobs',
    sql: () => `
create table if not exists export_job (
  id text primary key,
  client_id text not null,
  level text not null,
  request text not null,
  params jsonb not null,
  state text not null default 'running',
  parts jsonb,
  done_parts int[] not null default '{}',
  transaction_time timestamptz,
  total bigint not null default 0,
  exported bigint not null default 0,
  error_status int,
  error_message text,
  created_at timestamptz not null default now(),
  finished_at timestamptz,
  expires_at timestamptz
);
create index if not exists export_job_expires on export_job (expires_at) where state <> 'running';
create table if not exists export_file (
  job_id text not null references export_job (id) on delete cascade,
  name text not null,
  part int not null,
  kind text not null,
  type text not null,
  count bigint not null,
  bytes bigint not null,
  plain_bytes bigint not null,
  etag text not null,
  primary key (job_id, name)
);
create table if not exists export_patient (
  job_id text not null references export_job (id) on delete cascade,
  patient_id text not null,
  primary key (job_id, patient_id)
);
create table if not exists export_ref (
  job_id text not null references export_job (id) on delete cascade,
  type text not null,
  id text not null,
  primary key (job_id, type, id)
);`,
  },
  {
    // SPEC §13: the HTTP credentials of an import's sources (Parameters `credentialHttpBasic`),
    // kept apart from the session row so no read path shows them, sent only to `origin`, and
    // deleted when the session no longer needs them (done or aborted; storage/import-credentials.ts).
    version: 7,
    name: 'import credentials',
    sql: () => `
create table if not exists bulkimport_credential (
  session_id text primary key references bulkimportstatus (id) on delete cascade,
  origins text[] not null,
  authorization_header text not null
);`,
  },
  {
    // The notification names the writing transaction (`Client:<xid>`), so a server keeps what it
    // cached from a snapshot that already saw that transaction (auth/auth.ts) instead of dropping
    // everything on the echo of a change it has taken into account already.
    version: 8,
    name: 'auth change notifications name the transaction',
    sql: () => `
create or replace function fhirhose_auth_changed() returns trigger language plpgsql as $$
begin
  perform pg_notify('${AUTH_CHANNEL}', tg_argv[0] || ':' || pg_current_xact_id()::text);
  return null;
end $$;`,
  },
  {
    // SPEC §13 "ping and pull": the other server's export an import session reads
    // (storage/import-pulls.ts). The kick-off is recorded before it is sent and its status URL as
    // soon as it answers, so a restarted server polls the same remote job and never kicks off a
    // second one. `files`: whether the session's credential also goes to the manifest's files
    // (requiresAccessToken) or only to the kick-off, status and DELETE requests.
    version: 9,
    name: 'import pulls',
    sql: () => `
create table if not exists bulkimport_pull (
  session_id text primary key references bulkimportstatus (id) on delete cascade,
  export_url text not null,
  source_key text not null,
  kickoff jsonb not null default '{}',
  since text,
  state text not null default 'new' check (state in ('new', 'kicking-off', 'polling', 'listed')),
  status_url text,
  kickoffs int not null default 0,
  remote_progress text,
  transaction_time text,
  requires_access_token boolean,
  kicked_off_at timestamptz,
  listed_at timestamptz
);
create index if not exists bulkimport_pull_source on bulkimport_pull (source_key);
alter table bulkimport_credential add column if not exists files boolean not null default true;`,
  },
];

export async function migrate(sql: Sql): Promise<number[]> {
  const applied: number[] = [];
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(7041991)`;
    await tx`create table if not exists _migrations (version int primary key, name text not null, applied_at timestamptz not null default now())`;
    const done = new Set((await tx`select version from _migrations`).map((r) => Number(r.version)));
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.sql());
      await tx`insert into _migrations (version, name) values (${m.version}, ${m.name})`;
      applied.push(m.version);
    }
    // every start, not once: a resource table added by a later migration becomes readable too
    await tx.unsafe(grantReaderSql());
  });
  return applied;
}
