/**
 * `npm start`: read config, start everything, stop in order on SIGINT/SIGTERM/SIGHUP (stop
 * accepting requests, close the pool, stop the PostgreSQL we started), exit 0. Any failure is one
 * line on stderr and a non-zero exit, never a stack trace.
 */
import { loadConfig, type Config } from './config.ts';
import { createLogger, startServer, type RunningServer } from './server.ts';

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
  let running: RunningServer;
  try {
    running = await startServer(config, log);
  } catch (err) {
    fail(String((err as Error)?.message ?? err).trim().replace(/\s*\n\s*/g, ' '), 1);
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal} received: stopping`);
    try {
      await running.stop();
    } catch (err) {
      fail(`error while stopping: ${(err as Error).message}`, 1);
    }
    log('stopped');
    process.exit(0);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));
}

await main();
