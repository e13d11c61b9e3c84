/**
 * Every server drops its credential and policy caches when any server changes a Client or an
 * AccessPolicy (SPEC §11: "a changed secret is refused by every replica immediately"). A trigger
 * on the client and accesspolicy tables (migration 4) sends `fhirhose_auth` at commit, whoever
 * wrote: CRUD, `PUT /`, `$load`, `$import` or psql; its payload names the writing transaction, so
 * entries read after that commit survive it. On every (re)subscription both caches are dropped,
 * since a change may have committed while the listening connection was down.
 */
import type { Sql } from '../storage/db.ts';
import { AUTH_CHANNEL, subscribe, type Subscription } from '../storage/notify.ts';
import type { Auth } from './auth.ts';

export function watchAuthChanges(sql: Sql, auth: Pick<Auth, 'forget'>): Promise<Subscription> {
  return subscribe(
    sql,
    AUTH_CHANNEL,
    (payload) => {
      // `Client:<xid>` (migration 8); anything else drops both caches entirely
      const [type, xidText] = payload.split(':');
      const xid = xidText && /^\d+$/.test(xidText) ? BigInt(xidText) : undefined;
      if (type !== 'AccessPolicy') auth.forget('Client', type === 'Client' ? xid : undefined);
      if (type !== 'Client') auth.forget('AccessPolicy', type === 'AccessPolicy' ? xid : undefined);
    },
    {
      onListen: () => {
        auth.forget('Client');
        auth.forget('AccessPolicy');
      },
    },
  );
}
