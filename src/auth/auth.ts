/**
 * Basic auth with Clients and AccessPolicies (SPEC §3).
 * - A verified `Authorization` header is remembered for a few seconds, so a known-good credential
 *   does not cost an argon2 hash per request; policies are read at most every 10 s.
 * - Both caches drop what they read before any server (or psql) changed a Client or AccessPolicy:
 *   auth-changes.ts calls `forget` on the NOTIFY a trigger sends at commit (SPEC §11). The TTLs
 *   only bound how long a notification lost with the listening connection can leave a stale entry.
 */
import type { Sql } from '../storage/db.ts';
import { clientSecretHash, listPolicies, sees, type Snapshot } from '../storage/auth.ts';
import { hashSecret, verifySecret } from './secrets.ts';
import { matcho } from './matcho.ts';
import { loginLimiter } from './login-limiter.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { isPlainObject, type Json } from '../fhir/resource.ts';

export const ROOT_CLIENT = 'root';
const CREDENTIAL_TTL_MS = 10_000;
const POLICY_TTL_MS = 10_000;

/** What a policy sees of a request (Aidbox's matcho request shape). */
export interface AccessRequest {
  uri: string;
  'request-method': string;
  params: Record<string, string>;
  client: { id: string };
}

export interface Auth {
  /**
   * The client id of a valid `Authorization: Basic` header; throws 401 otherwise, or 429 after too
   * many failures for that client id or from that address (login-limiter.ts).
   */
  authenticate(header: string | undefined, address?: string): Promise<string>;
  /** Throws 403 unless the client may make this request. */
  authorize(request: AccessRequest): Promise<void>;
  /**
   * Call after a Client or AccessPolicy changed (on this server or another one). With the writing
   * transaction's `xid`, entries read in a snapshot that saw it are kept; without, all are dropped.
   */
  forget(type: 'Client' | 'AccessPolicy', xid?: bigint): void;
}

let decoy: Promise<string> | undefined;
function decoyHash(): Promise<string> {
  decoy ??= hashSecret(crypto.randomUUID());
  return decoy;
}

const unauthorized = (message: string) =>
  new OperationOutcomeError('login', message, { headers: { 'WWW-Authenticate': 'Basic realm="fhirhose"' } });

export function createAuth(sql: Sql, options: { loginFailuresPerMinute?: number } = {}): Auth {
  const limiter = loginLimiter(options.loginFailuresPerMinute ?? 0);
  const verified = new Map<string, { clientId: string; until: number; snapshot: Snapshot }>();
  let policies: { list: { id: string; resource: Record<string, Json> }[]; until: number; snapshot: Snapshot } | undefined;
  const clientChanges = changeLog();
  const policyChanges = changeLog();

  async function authenticate(header: string | undefined, address?: string): Promise<string> {
    if (!header) throw unauthorized('Authentication required: send HTTP Basic credentials of a Client');
    const known = verified.get(header);
    if (known && known.until > Date.now()) return known.clientId;
    const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    if (!match) throw unauthorized('Only HTTP Basic authentication is supported');
    const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw unauthorized('Malformed Basic credentials');
    const clientId = decoded.slice(0, colon);
    const secret = decoded.slice(colon + 1);
    limiter.check(clientId, address); // before any hash (SPEC §10)
    const mark = clientChanges.mark();
    const { hash, snapshot } = await clientSecretHash(sql, clientId);
    // an unknown client costs the same argon2 verification as a wrong secret: timing does not reveal which ids exist
    const ok = await verifySecret(secret, hash ?? (await decoyHash()));
    if (!hash || !ok) {
      limiter.failed(clientId, address);
      throw unauthorized('Invalid client id or secret');
    }
    // a change heard meanwhile that this read did not see: valid when read, but not cached
    if (!clientChanges.seenSince(mark, snapshot)) return clientId;
    if (verified.size > 10_000) verified.clear();
    verified.set(header, { clientId, until: Date.now() + CREDENTIAL_TTL_MS, snapshot });
    return clientId;
  }

  async function authorize(request: AccessRequest): Promise<void> {
    if (request.client.id === ROOT_CLIENT) return;
    let current = policies?.list;
    if (!policies || policies.until < Date.now()) {
      const mark = policyChanges.mark();
      const read = await listPolicies(sql);
      current = read.policies;
      if (policyChanges.seenSince(mark, read.snapshot)) policies = { list: read.policies, until: Date.now() + POLICY_TTL_MS, snapshot: read.snapshot };
    }
    for (const policy of current!) {
      if (appliesTo(policy.resource, request.client.id) && allows(policy.resource, request)) return;
    }
    throw new OperationOutcomeError('forbidden', `Access denied: no AccessPolicy allows client "${request.client.id}" to ${request['request-method'].toUpperCase()} ${request.uri}`);
  }

  return {
    authenticate,
    authorize,
    forget(type, xid) {
      const stale = (snapshot: Snapshot) => xid === undefined || !sees(snapshot, xid);
      if (type === 'Client') {
        clientChanges.record(xid);
        for (const [header, entry] of verified) if (stale(entry.snapshot)) verified.delete(header);
      } else {
        policyChanges.record(xid);
        if (policies && stale(policies.snapshot)) policies = undefined;
      }
    },
  };
}

/**
 * The changes this server heard of, so a lookup that was under way when one arrived can tell
 * whether what it read already included it (then it may cache it) or not.
 */
function changeLog() {
  let seq = 0;
  const recent: { seq: number; xid?: bigint }[] = [];
  return {
    mark: () => seq,
    record(xid?: bigint) {
      recent.push({ seq: ++seq, xid });
      if (recent.length > 256) recent.shift();
    },
    seenSince(mark: number, snapshot: Snapshot): boolean {
      if (mark === seq) return true;
      if (!recent[0] || recent[0].seq > mark + 1) return false; // older than we remember: assume not
      return recent.every((c) => c.seq <= mark || (c.xid !== undefined && sees(snapshot, c.xid)));
    },
  };
}

function appliesTo(policy: Record<string, Json>, clientId: string): boolean {
  const link = policy.link;
  if (!Array.isArray(link) || link.length === 0) return true;
  // `{resourceType: Client, id}` as in the Aidbox examples, or a FHIR `{reference: "Client/<id>"}`
  return link.some((l) => isPlainObject(l) && ((l.resourceType === 'Client' && l.id === clientId) || l.reference === `Client/${clientId}`));
}

function allows(policy: Record<string, Json>, request: AccessRequest): boolean {
  switch (policy.engine) {
    case 'allow':
      return true;
    case 'matcho':
      return isPlainObject(policy.matcho) && matcho(policy.matcho, request);
    default:
      return false; // unknown engines allow nothing
  }
}
