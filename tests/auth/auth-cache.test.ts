/**
 * The credential cache and the change notifications (SPEC §11), on a real database: a change
 * drops exactly what was read before it. A credential verified after a change survives that
 * change's notification (no second argon2 hash), one read before it does not.
 */
import { afterAll, beforeAll, describe, expect, spyOn, test } from 'bun:test';
import { connect, type Sql } from '../../src/storage/db.ts';
import { freshDatabase } from '../helpers/database.ts';
import { createAuth, type Auth } from '../../src/auth/auth.ts';
import { watchAuthChanges } from '../../src/auth/auth-changes.ts';
import { hashSecret } from '../../src/auth/secrets.ts';
import { parseSnapshot, sees } from '../../src/storage/auth.ts';
import { basic } from '../helpers/server.ts';
import type { Subscription } from '../../src/storage/notify.ts';

let sql: Sql;
let auth: Auth;
let watch: Subscription;
const heard: { type: string; xid?: bigint }[] = [];

beforeAll(async () => {
  sql = connect(await freshDatabase(), { max: 4 });
  auth = createAuth(sql);
  watch = await watchAuthChanges(sql, {
    forget(type, xid) {
      heard.push({ type, xid });
      auth.forget(type, xid);
    },
  });
});
afterAll(async () => {
  await watch.unlisten();
  await sql.end();
});

/** Writes the client's secret by hand in one transaction; its xid. */
async function setSecret(id: string, secret: string): Promise<bigint> {
  const hash = await hashSecret(secret);
  return sql.begin(async (tx) => {
    await tx`insert into client (id, txid, status, resource) values (${id}, nextval('transaction_id_seq'), 'created', ${{ secret: hash } as never})
      on conflict (id) do update set resource = excluded.resource, status = 'updated'`;
    const [row] = await tx`select pg_current_xact_id()::text as xid`;
    return BigInt(row!.xid as string);
  });
}

async function heardOf(xid: bigint): Promise<void> {
  const until = Date.now() + 10_000;
  while (!heard.some((h) => h.xid === xid)) {
    if (Date.now() > until) throw new Error(`no notification for transaction ${xid} within 10 s`);
    await Bun.sleep(10);
  }
}

describe('cache and notifications', () => {
  test("a credential verified after a change is kept when that change's notification arrives: argon2 runs once", async () => {
    const verify = spyOn(Bun.password, 'verify');
    try {
      const xid = await setSecret('echo', 'one');
      verify.mockClear();
      // verified straight after the commit, usually before its notification is heard
      expect(await auth.authenticate(basic('echo', 'one'))).toBe('echo');
      await heardOf(xid);
      for (let i = 0; i < 5; i++) expect(await auth.authenticate(basic('echo', 'one'))).toBe('echo');
      expect(verify).toHaveBeenCalledTimes(1);
    } finally {
      verify.mockRestore();
    }
  });

  test('a credential verified before a change is dropped by its notification: the old secret is refused', async () => {
    await heardOf(await setSecret('rotate', 'old'));
    expect(await auth.authenticate(basic('rotate', 'old'))).toBe('rotate');
    const xid = await setSecret('rotate', 'new');
    await heardOf(xid);
    await expect(auth.authenticate(basic('rotate', 'old'))).rejects.toThrow('Invalid client id or secret');
    expect(await auth.authenticate(basic('rotate', 'new'))).toBe('rotate');
  });

  test('the notification names the writing transaction', async () => {
    const xid = await setSecret('named', 's');
    await heardOf(xid);
    expect(heard.find((h) => h.xid === xid)?.type).toBe('Client');
  });
});

describe('snapshots', () => {
  test('a snapshot sees transactions below xmin, and those below xmax that were not running', () => {
    const s = parseSnapshot('100:105:100,103');
    expect([99n, 101n, 102n, 104n].map((x) => sees(s, x))).toEqual([true, true, true, true]);
    expect([100n, 103n, 105n, 200n].map((x) => sees(s, x))).toEqual([false, false, false, false]);
    expect(sees(parseSnapshot('7:7:'), 6n)).toBe(true);
    expect(sees(parseSnapshot('7:7:'), 7n)).toBe(false);
  });
});
