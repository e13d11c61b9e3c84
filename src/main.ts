/**
 * `npm start`: read config, start everything, stop in order on SIGINT/SIGTERM/SIGHUP (stop
 * accepting connections, let the requests in flight finish within FHIRHOSE_SHUTDOWN_GRACE_MS, hand
 * running jobs back at a batch boundary, close the pools, stop the PostgreSQL we started), exit 0. Any failure is one
 * line on stderr and a non-zero exit, never a stack trace.
 */
import { loadConfig, type Config } from './config.ts';
import { startServer, type RunningServer } from './server.ts';
import { createLogger } from './logging.ts';
import { connectionLost } from './storage/db.ts';

function fail(message: string, code: number): never {
  console.error(`fhirhose: ${message}`);
  process.exit(code);
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    fail((err as Error).message, 2);
  }
  const log = createLogger(config);
  // When the database drops a connection in the middle of a transaction (a restart, a failover),
  // postgres.js 3.4.9 rejects its transaction's close-watch promise, and Bun saw that rejection as
  // unhandled and exited (tests/jobs/import-database-loss.test.ts). Whoever ran the transaction
  // has had the same error already, so a lost connection is one log line; anything else still
  // ends the process, as an unhandled rejection does by default.
  process.on('unhandledRejection', (reason) => {
    if (connectionLost(reason)) return log(`database connection lost: ${(reason as Error).message}`);
    console.error(reason);
    process.exit(1);
  });
  // Signals are handled from the start: a SIGTERM while starting (e.g. right after /health first
  // answers, before this function went on) waits for the start, then stops in order, instead of
  // ending the process with 143 and an embedded PostgreSQL left behind.
  let stopping = false;
  let startup: Promise<RunningServer> | undefined;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal} received: stopping`);
    let running: RunningServer;
    try {
      running = await startup!;
    } catch {
      return; // the start failed: it exits with its own message
    }
    try {
      await running.stop();
    } catch (err) {
      fail(`error while stopping: ${(err as Error).message}`, 1);
    }
    log('stopped');
    process.exit(0);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));
  startup = startServer(config, log);
  try {
    await startup;
  } catch (err) {
    fail(String((err as Error)?.message ?? err).trim().replace(/\s*\n\s*/g, ' '), 1);
  }
}

await main();
