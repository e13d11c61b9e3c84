/**
 * Versioned, idempotent migrations (SPEC §2). Each runs once, recorded in `_migrations`; an advisory
 * lock makes concurrent starts on one database safe.
 */
import type { Sql } from './db.ts';
import { ident } from './db.ts';
import { ALL_TYPES, tableOf, historyTableOf } from '../fhir/types.ts';

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
  });
  return applied;
}
