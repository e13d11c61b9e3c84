/**
 * One real PostgreSQL per test run (STYLE §12): embedded, started by the preload, unless
 * TEST_DATABASE_URL names a server (whose role may CREATE DATABASE). A template database is
 * migrated once; each test file gets a fresh clone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { connect } from '../../src/storage/db.ts';
import { startEmbedded } from '../../src/storage/embedded.ts';
import { migrate } from '../../src/storage/migrations.ts';

const TEMPLATE = 'fhirhose_template';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Starts (or connects to) the run's PostgreSQL and migrates the template. Returns the admin URL and a stop function. */
export async function startTestDatabase(): Promise<{ adminUrl: string; stop: () => Promise<void> }> {
  let adminUrl = process.env.TEST_DATABASE_URL;
  let stop = async () => {};
  if (!adminUrl) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fhirhose-test-'));
    fs.chmodSync(dataDir, 0o755);
    const embedded = await startEmbedded({ dataDir, port: await freePort(), log: () => {} });
    adminUrl = embedded.url;
    stop = async () => {
      await embedded.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    };
  }
  const admin = connect(adminUrl, { max: 1 });
  await admin.unsafe(`drop database if exists ${TEMPLATE} with (force)`);
  await admin.unsafe(`create database ${TEMPLATE}`);
  await admin.end();
  const template = connect(withDatabase(adminUrl, TEMPLATE), { max: 1 });
  await migrate(template);
  await template.end();
  return { adminUrl, stop };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** A new database cloned from the migrated template; its URL. */
export async function freshDatabase(): Promise<string> {
  const adminUrl = process.env.FHIRHOSE_TEST_ADMIN_URL;
  if (!adminUrl) throw new Error('tests/preload.ts did not start the test database');
  const name = `t_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = connect(adminUrl, { max: 1 });
  try {
    await admin.unsafe(`create database ${name} template ${TEMPLATE}`);
  } finally {
    await admin.end();
  }
  return withDatabase(adminUrl, name);
}
