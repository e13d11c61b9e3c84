/**
 * Composition: config → database (embedded or DATABASE_URL) → migrations → root client →
 * job runner → Bun.serve; `stop()` shuts down in the reverse order.
 */
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import type { Config } from './config.ts';
import { connect, type Sql } from './storage/db.ts';
import { closePools, openPools } from './storage/pools.ts';
import { startEmbedded, type EmbeddedDatabase } from './storage/embedded.ts';
import { migrate } from './storage/migrations.ts';
import { checkPostgresInternals } from './storage/postgres-internals.ts';
import { inspectSqlReader } from './storage/sql-reader.ts';
import { createAuth } from './auth/auth.ts';
import { watchAuthChanges } from './auth/auth-changes.ts';
import { openReplica } from './storage/replica.ts';
import { ensureRootClient } from './auth/root.ts';
import { createApp } from './app.ts';
import type { OperationContext } from './operations/context.ts';
import { createJobRunner } from './jobs/runner.ts';
import { jobKinds } from './jobs/kinds.ts';
import pkg from '../package.json' with { type: 'json' };
import { createLogger } from './logging.ts';

export interface RunningServer {
  url: string;
  port: number;
  databaseUrl: string;
  sql: Sql;
  stop(): Promise<void>;
}

export async function startServer(config: Config, log: (line: string) => void = createLogger(config)): Promise<RunningServer> {
  // Before the database starts: a busy PORT is one clear line, not a PostgreSQL started for nothing.
  if (config.port !== 0 && !(await canListen(config.host, config.port))) throw portInUse(config.port);
  // The README's file:// examples read from ./import: a missing root is created, not a 500 later.
  await mkdir(config.importRoot, { recursive: true }).catch((error: unknown) => {
    throw new Error(`FHIRHOSE_IMPORT_ROOT ${config.importRoot} cannot be created (${(error as { code?: string }).code ?? String(error)})`);
  });
  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbedded({ dataDir: config.dataDir, port: config.pgPort, log });
    databaseUrl = embedded.url;
    log(`embedded PostgreSQL ready: psql ${databaseUrl}`);
  }
  const pools = openPools(databaseUrl, { apiPoolSize: config.poolSize, ...config });
  const sql = pools.api;
  let sqlRole: string | undefined;
  try {
    await checkPostgresInternals(sql);
    const applied = await migrate(sql);
    if (applied.length) log(`applied migrations ${applied.join(', ')}`);
    await ensureRootClient(sql, config.rootSecret, log);
    const reader = await inspectSqlReader(sql);
    sqlRole = reader.role;
    if (reader.warning) log(`warning: ${reader.warning}`);
  } catch (err) {
    await closePools(pools, 1);
    await embedded?.stop();
    throw err;
  }

  const replica = config.readUrl ? openReplica(config.readUrl, { poolSize: config.poolSize, maxLagMs: config.readMaxLagMs, sqlMaxValueBytes: config.sqlMaxValueBytes }) : undefined;
  if (replica) log(`bulk reads ($dump, $dump-sql) go to the read replica of FHIRHOSE_READ_URL`);
  const auth = createAuth(sql, { loginFailuresPerMinute: config.loginFailuresPerMinute });
  let authWatch: Awaited<ReturnType<typeof watchAuthChanges>>;
  try {
    authWatch = await watchAuthChanges(sql, auth);
  } catch (err) {
    await closePools(pools, 1);
    await replica?.sql.end({ timeout: 1 });
    await embedded?.stop();
    throw err;
  }
  const ctx: OperationContext = {
    sql,
    config,
    log,
    sqlRole,
    replica,
    pools,
    changed(type) {
      if (type === 'Client' || type === 'AccessPolicy') auth.forget(type);
    },
  };
  // Background work has a pool of its own (SPEC §11): a frozen server's transaction is ended by
  // PostgreSQL, so it never holds the row locks other servers need for ever: idle in transaction
  // for a lease, or a statement open for two. Both are needed: a client frozen between a
  // statement's Execute and its Sync leaves the backend `active`, waiting on the client, where
  // only statement_timeout reaches it (seen in tests/jobs/runner-freeze.test.ts, holding the
  // session row that the other servers' runs waited for).
  const jobSql = connect(databaseUrl, {
    max: config.jobConcurrency + 3,
    applicationName: 'fhirhose jobs',
    settings: {
      idle_in_transaction_session_timeout: config.leaseMs,
      statement_timeout: 2 * config.leaseMs,
    },
  });
  const jobs = createJobRunner({ sql: jobSql, config, log, kinds: jobKinds({ sql: jobSql, bulkSql: pools.bulk, config, log }) });
  const app = createApp({ ctx, auth, version: pkg.version, imports: jobs, exports: jobs });

  let server: ReturnType<typeof Bun.serve>;
  try {
    // Bun's own body limit (default 128 MiB) answers 413 with an empty body before any handler, and
    // refused every upload above it (SPEC §13: streamed, bounded by FHIRHOSE_MAX_SOURCE_BYTES like
    // any source). So it is as high as Bun takes: a JSON or YAML body is bounded by
    // FHIRHOSE_BODY_LIMIT in http/body.ts, and a body nobody reads is not buffered (Bun 1.4.5 took
    // 8 MB of a 1.5 GB body while a handler waited 1.5 s without reading it).
    const maxRequestBodySize = Number.MAX_SAFE_INTEGER;
    server = Bun.serve({ port: config.port, hostname: config.host, fetch: app.fetch, idleTimeout: 0, maxRequestBodySize });
  } catch (err) {
    await closePools(pools, 1);
    await replica?.sql.end({ timeout: 1 });
    await jobSql.end({ timeout: 1 });
    await embedded?.stop();
    const inUse = /EADDRINUSE|in use/i.test(String((err as Error).message ?? err));
    throw inUse ? portInUse(config.port) : new Error(`Cannot listen on port ${config.port}: ${(err as Error).message}`);
  }
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${server.port}`;
  log(`fhirhose ${pkg.version} listening on ${url}`);
  // After listening, so a port clash never leaves jobs claimed; takes up work left by others too.
  await jobs.start();

  return {
    url,
    port: server.port!,
    databaseUrl,
    sql,
    async stop() {
      // SPEC §10: stop accepting, let in-flight requests finish; job runs stop at a batch boundary
      // meanwhile and are handed back, claimable by another server
      await Promise.all([drain(server, config.shutdownGraceMs, log), jobs.stop()]);
      await authWatch.unlisten().catch(() => {});
      await jobSql.end({ timeout: 5 });
      await closePools(pools, 5);
      await replica?.sql.end({ timeout: 5 });
      await embedded?.stop();
    },
  };
}

/**
 * Closes the listener at once (new connections are refused) and waits for the requests in flight,
 * streamed bodies included, for at most `graceMs` (FHIRHOSE_SHUTDOWN_GRACE_MS); then cuts the rest.
 * Bun's `stop(false)` resolves when the last one is done (checked: a streaming response finishes).
 */
async function drain(server: ReturnType<typeof Bun.serve>, graceMs: number, log: (line: string) => void): Promise<void> {
  const pending = server.pendingRequests;
  if (pending > 0) log(`waiting up to ${graceMs} ms (FHIRHOSE_SHUTDOWN_GRACE_MS) for ${pending} request(s) in flight`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    server.stop(false).then(() => true),
    new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), graceMs); }),
  ]);
  clearTimeout(timer);
  if (!drained) {
    log(`${server.pendingRequests} request(s) still running after ${graceMs} ms (FHIRHOSE_SHUTDOWN_GRACE_MS): cut`);
    await server.stop(true);
  }
}

function portInUse(port: number): Error {
  return new Error(`Port ${port} is already in use; stop the other process or set PORT`);
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}
