/** SPEC §1: the root client's secret comes from FHIRHOSE_ROOT_SECRET, or is generated once and printed once. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { loadConfig } from '../../src/config.ts';
import { startServer, type RunningServer } from '../../src/server.ts';
import { basic } from '../helpers/server.ts';
import { freshDatabase } from '../helpers/database.ts';

let databaseUrl: string;
beforeAll(async () => { databaseUrl = await freshDatabase(); });

async function start(secret?: string): Promise<{ server: RunningServer; lines: string[] }> {
  const lines: string[] = [];
  const env: Record<string, string> = { PORT: '0', HOST: '127.0.0.1', DATABASE_URL: databaseUrl };
  if (secret !== undefined) env.FHIRHOSE_ROOT_SECRET = secret;
  const server = await startServer(loadConfig(env), (line) => lines.push(line));
  return { server, lines };
}

async function status(server: RunningServer, secret: string): Promise<number> {
  const res = await fetch(`${server.url}/Patient`, { headers: { authorization: basic('root', secret) } });
  await res.arrayBuffer();
  return res.status;
}

let generated = '';

describe('root client', () => {
  test('without FHIRHOSE_ROOT_SECRET on a new database a secret is generated, printed once, and works', async () => {
    const { server, lines } = await start();
    try {
      const printed = lines.filter((l) => l.includes('root:'));
      expect(printed).toHaveLength(1);
      generated = /root:(\S+)$/.exec(printed[0]!)![1]!;
      expect(await status(server, generated)).toBe(200);
    } finally {
      await server.stop();
    }
  });

  test('the next start without it prints nothing new and keeps the secret', async () => {
    const { server, lines } = await start();
    try {
      expect(lines.join('\n')).not.toContain('root:');
      expect(lines.join('\n')).not.toContain(generated);
      expect(await status(server, generated)).toBe(200);
    } finally {
      await server.stop();
    }
  });

  test('setting FHIRHOSE_ROOT_SECRET replaces the secret; the old one stops working', async () => {
    const { server, lines } = await start('chosen-secret');
    try {
      expect(lines.join('\n')).not.toContain('chosen-secret');
      expect(await status(server, 'chosen-secret')).toBe(200);
      expect(await status(server, generated)).toBe(401);
    } finally {
      await server.stop();
    }
    const again = await start();
    try {
      expect(await status(again.server, 'chosen-secret')).toBe(200);
    } finally {
      await again.server.stop();
    }
  });

  test('the root secret is stored hashed, current and past versions alike', async () => {
    const { server } = await start();
    try {
      const rows = await server.sql`select resource->>'secret' as s from client where id = 'root'
                                    union all select resource->>'secret' from client_history where id = 'root'`;
      expect(rows.length).toBe(2);
      for (const r of rows) expect(r.s).toStartWith('$argon2id$');
      const [leak] = await server.sql`select count(*)::int as n from client_history where resource::text like '%chosen-secret%' or resource::text like ${'%' + generated + '%'}`;
      expect(leak!.n).toBe(0);
    } finally {
      await server.stop();
    }
  });
});
