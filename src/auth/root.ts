/**
 * The root client (SPEC §1): secret from FHIRHOSE_ROOT_SECRET, or, on first start without it,
 * a random one that is stored hashed and printed once.
 */
import crypto from 'node:crypto';
import type { Sql } from '../storage/db.ts';
import { clientSecretHash } from '../storage/auth.ts';
import { writeResource } from '../storage/resources.ts';
import { hashSecret, verifySecret } from './secrets.ts';
import { ROOT_CLIENT } from './auth.ts';

export async function ensureRootClient(sql: Sql, secret: string | undefined, log: (line: string) => void): Promise<void> {
  const { hash: existing } = await clientSecretHash(sql, ROOT_CLIENT);
  if (secret === undefined && existing) return;
  if (secret !== undefined && existing && (await verifySecret(secret, existing))) return;
  const chosen = secret ?? crypto.randomBytes(24).toString('base64url');
  const hash = await hashSecret(chosen);
  await sql.begin((tx) => writeResource(tx, 'Client', ROOT_CLIENT, { secret: hash, grant_types: ['basic'] }));
  if (secret === undefined) {
    log(`generated the root client's secret (shown once; set FHIRHOSE_ROOT_SECRET to choose it): root:${chosen}`);
  } else {
    log('root client secret set from FHIRHOSE_ROOT_SECRET');
  }
}
