/** `npm start`: read config, start everything, stop in order on SIGINT/SIGTERM. */
import { loadConfig } from './config.ts';
import { createLogger, startServer } from './server.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`fhirhose: ${(err as Error).message}`);
    process.exit(2);
  }
  const log = createLogger(config);
  let running;
  try {
    running = await startServer(config, log);
  } catch (err) {
    console.error(`fhirhose: ${(err as Error).message}`);
    process.exit(1);
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal} received: stopping`);
    await running.stop();
    log('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

await main();
