/** Starts PostgreSQL once per `bun test` run (see helpers/database.ts) and stops it at the end. */
import { afterAll } from 'bun:test';
import { startTestDatabase } from './helpers/database.ts';

const db = await startTestDatabase();
process.env.FHIRHOSE_TEST_ADMIN_URL = db.adminUrl;

// a loaded machine can take more than bun's 5 s default hook limit to stop PostgreSQL
afterAll(async () => {
  await db.stop();
}, 60_000);
