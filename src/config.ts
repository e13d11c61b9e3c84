/**
 * The environment, read once and validated (STYLE §5). Only this module reads `process.env`;
 * everything else receives a `Config`. A bad value stops the process with one clear line.
 */
import { z } from 'zod';
import path from 'node:path';
import { isDnsServer } from './streams/resolve.ts';

function int(def: number, min = 0, max = Number.MAX_SAFE_INTEGER) {
  const error = max === Number.MAX_SAFE_INTEGER ? `must be a whole number, at least ${min}` : `must be a whole number from ${min} to ${max}`;
  return z.coerce.number({ error }).int({ error }).min(min, { error }).max(max, { error }).default(def);
}

/** A duration in seconds (fractions allowed), returned in milliseconds. */
function seconds(def: number) {
  const error = 'must be a number of seconds, more than 0';
  return z.coerce.number({ error }).positive({ error }).default(def).transform((s) => Math.round(s * 1000));
}

/** Comma- or space-separated http(s) URL prefixes. */
const urlPrefixes = z
  .string()
  .transform((v) => v.split(/[\s,]+/).filter(Boolean))
  .refine((list) => list.every((p) => URL.canParse(p) && /^https?:$/.test(new URL(p).protocol)), 'must be http(s) URL prefixes separated by commas or spaces')
  .optional();

/** Comma- or space-separated DNS servers: `ip`, `ip:port` or `[ipv6]:port`. */
const dnsServers = z
  .string()
  .transform((v) => v.split(/[\s,]+/).filter(Boolean))
  .refine((list) => list.length > 0 && list.every(isDnsServer), 'must be DNS server addresses (ip, ip:port or [ipv6]:port) separated by commas or spaces')
  .optional();

/**
 * SPEC §13: credentials for other servers' exports, by origin: a JSON object
 * `{"https://other.example": "Bearer eyJ…"}` (any Authorization value). Used when a pull's
 * request brings none; sent to that origin only.
 */
const originAuthorizations = z
  .string()
  .transform((v, ctx) => {
    let value: unknown;
    try {
      value = JSON.parse(v);
    } catch {
      value = undefined;
    }
    const ok = typeof value === 'object' && value !== null && !Array.isArray(value)
      && Object.entries(value).every(([k, a]) => URL.canParse(k) && new URL(k).origin === k && typeof a === 'string' && a.length > 0);
    if (!ok) {
      ctx.addIssue({ code: 'custom', message: 'must be a JSON object of origins (https://host[:port], no path) to Authorization values' });
      return z.NEVER;
    }
    return value as Record<string, string>;
  })
  .default({});

/** Values never echoed in an error: they may hold a password. */
const SECRET_VARIABLES = new Set(['DATABASE_URL', 'FHIRHOSE_ROOT_SECRET', 'FHIRHOSE_READ_URL', 'FHIRHOSE_SOURCE_AUTHORIZATION']);

const schema = z.object({
  PORT: int(8080, 0, 65535),
  HOST: z.string().min(1).default('0.0.0.0'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://').optional(),
  FHIRHOSE_DATA_DIR: z.string().min(1).default('./data'),
  FHIRHOSE_PG_PORT: int(5433, 1, 65535),
  FHIRHOSE_ROOT_SECRET: z.string().min(1).optional(),
  FHIRHOSE_IMPORT_ROOT: z.string().min(1).default('./import'),
  FHIRHOSE_POOL_SIZE: int(12, 2, 200),
  FHIRHOSE_BODY_LIMIT: int(16 * 1024 * 1024, 1024),
  FHIRHOSE_MAX_LINE_BYTES: int(16 * 1024 * 1024, 1024),
  FHIRHOSE_SQL_TIMEOUT_MS: int(60_000, 100),
  FHIRHOSE_IMPORT_BATCH_LINES: int(5_000, 1),
  FHIRHOSE_IMPORT_CONCURRENCY: int(2, 1, 64),
  FHIRHOSE_READ_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://').optional(),
  FHIRHOSE_READ_MAX_LAG_MS: int(10_000, 0),
  FHIRHOSE_SOURCE_CONNECT_TIMEOUT: seconds(10),
  FHIRHOSE_SOURCE_STALL_TIMEOUT: seconds(30),
  FHIRHOSE_SOURCE_MIN_RATE: int(1024),
  FHIRHOSE_SOURCE_RATE_WINDOW: seconds(60),
  FHIRHOSE_SOURCE_ALLOW: urlPrefixes,
  FHIRHOSE_SOURCE_AUTHORIZATION: originAuthorizations,
  FHIRHOSE_DNS_SERVERS: dnsServers,
  FHIRHOSE_MAX_SOURCE_BYTES: int(50 * 1000 ** 3, 1024),
  FHIRHOSE_MAX_COMPRESSION_RATIO: int(200, 2),
  FHIRHOSE_JOB_CONCURRENCY: int(4, 1, 64),
  FHIRHOSE_LEASE_MS: int(15_000, 500, 3_600_000),
  FHIRHOSE_BULK_POOL_SIZE: int(16, 2, 200),
  FHIRHOSE_BULK_CONCURRENCY: int(8, 1, 200),
  FHIRHOSE_BULK_QUEUE: int(32, 0, 10_000),
  FHIRHOSE_BULK_QUEUE_WAIT_MS: int(10_000, 0),
  FHIRHOSE_DOWNLOAD_CONCURRENCY: int(64, 1, 10_000),
  FHIRHOSE_SLOW_READER_BYTES_PER_SEC: int(4096, 0),
  FHIRHOSE_SLOW_READER_WINDOW_MS: int(30_000, 100),
  FHIRHOSE_SQL_MAX_VALUE_BYTES: int(16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
  FHIRHOSE_LOGIN_FAILURES_PER_MINUTE: int(10, 0),
  FHIRHOSE_SHUTDOWN_GRACE_MS: int(20_000, 0),
  FHIRHOSE_BATCH_MAX_RESOURCES: int(10_000, 1),
  FHIRHOSE_LOG: z.enum(['info', 'json', 'quiet'], { error: 'must be info, json or quiet' }).default('info'),
  FHIRHOSE_BASE_URL: z.url({ protocol: /^https?$/, error: 'must be an absolute http(s) URL' }).optional(),
  FHIRHOSE_EXPORT_DIR: z.string().min(1).optional(),
  FHIRHOSE_EXPORT_FILE_RESOURCES: int(100_000, 1),
  FHIRHOSE_EXPORT_EXPIRES_S: int(24 * 3600, 1),
});

export interface Config {
  port: number;
  host: string;
  /** External database; when absent an embedded PostgreSQL is started. */
  databaseUrl?: string;
  dataDir: string;
  pgPort: number;
  rootSecret?: string;
  /** Absolute, resolved: file sources must stay below it (SPEC §1). */
  importRoot: string;
  poolSize: number;
  bodyLimit: number;
  maxLineBytes: number;
  sqlTimeoutMs: number;
  importBatchLines: number;
  /** Inputs of one session run at once on one server. */
  importConcurrency: number;
  /** A hot standby that bulk reads ($dump, $dump-sql) use instead of the primary (SPEC §11). */
  readUrl?: string;
  /** How long a bulk read waits for the standby to replay what the primary had committed (503 after). */
  readMaxLagMs: number;
  /** The limits of `$load`/`$import` sources (SPEC §10). */
  sources: SourceLimits;
  /** Authorization values for other servers' exports by origin, when a pull brings none (SPEC §13). */
  sourceAuthorization: Record<string, string>;
  /** Jobs (of every kind) one server runs at once. */
  jobConcurrency: number;
  /** How long a claimed job stays this server's without a renewal (SPEC §11). */
  leaseMs: number;
  /** info: text lines; json: one JSON object per line (SPEC §14); quiet: nothing. */
  log: 'info' | 'json' | 'quiet';
  /** SPEC §10 limits: README "Limits". `poolSize` is the API pool; bulk work has its own. */
  bulkPoolSize: number;
  bulkConcurrency: number;
  bulkQueue: number;
  bulkQueueWaitMs: number;
  /** `$export` file downloads streaming at once; as many more may wait briefly (http/bulk-gate.ts). */
  downloadConcurrency: number;
  slowReaderBytesPerSec: number;
  slowReaderWindowMs: number;
  sqlMaxValueBytes: number;
  loginFailuresPerMinute: number;
  shutdownGraceMs: number;
  /** The public base of this server (no trailing slash): `$export` status and file URLs start with it. */
  baseUrl?: string;
  /** Absolute: where `$export` files live (FHIRHOSE_EXPORT_DIR, else FHIRHOSE_DATA_DIR/exports). */
  exportDir: string;
  /** Resources per `$export` file before the next file of the same type starts. */
  exportFileResources: number;
  /** Seconds a finished `$export` and its files are kept. */
  exportExpiresS: number;
  /** Resources one `PUT /` may carry (each costs memory until the transaction ends). */
  batchMaxResources: number;
}

export interface SourceLimits {
  /** URL prefixes an http(s) source must match; undefined: any host but link-local/metadata. */
  allow?: string[];
  connectTimeoutMs: number;
  /** Resolvers of outbound names (FHIRHOSE_DNS_SERVERS); undefined: the system's. */
  dnsServers?: string[];
  stallTimeoutMs: number;
  /** Bytes per second over each `rateWindowMs` of waiting for the source. */
  minRate: number;
  rateWindowMs: number;
  /** Bytes of ndjson a source may expand to (after gunzip). */
  maxBytes: number;
  /** Decompressed bytes per compressed byte above which a gzip is refused as a probable bomb. */
  maxRatio: number;
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = schema.safeParse(cleaned);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    const name = String(first.path[0]);
    const shown = SECRET_VARIABLES.has(name) ? name : `${name}=${JSON.stringify(cleaned[name] ?? '')}`;
    throw new Error(`Invalid configuration: ${shown} ${first.message}`);
  }
  const e = parsed.data;
  return {
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: path.resolve(e.FHIRHOSE_DATA_DIR),
    pgPort: e.FHIRHOSE_PG_PORT,
    rootSecret: e.FHIRHOSE_ROOT_SECRET,
    importRoot: path.resolve(e.FHIRHOSE_IMPORT_ROOT),
    poolSize: e.FHIRHOSE_POOL_SIZE,
    bodyLimit: e.FHIRHOSE_BODY_LIMIT,
    maxLineBytes: e.FHIRHOSE_MAX_LINE_BYTES,
    sqlTimeoutMs: e.FHIRHOSE_SQL_TIMEOUT_MS,
    importBatchLines: e.FHIRHOSE_IMPORT_BATCH_LINES,
    importConcurrency: e.FHIRHOSE_IMPORT_CONCURRENCY,
    readUrl: e.FHIRHOSE_READ_URL,
    readMaxLagMs: e.FHIRHOSE_READ_MAX_LAG_MS,
    sources: {
      allow: e.FHIRHOSE_SOURCE_ALLOW,
      connectTimeoutMs: e.FHIRHOSE_SOURCE_CONNECT_TIMEOUT,
      dnsServers: e.FHIRHOSE_DNS_SERVERS,
      stallTimeoutMs: e.FHIRHOSE_SOURCE_STALL_TIMEOUT,
      minRate: e.FHIRHOSE_SOURCE_MIN_RATE,
      rateWindowMs: e.FHIRHOSE_SOURCE_RATE_WINDOW,
      maxBytes: e.FHIRHOSE_MAX_SOURCE_BYTES,
      maxRatio: e.FHIRHOSE_MAX_COMPRESSION_RATIO,
    },
    sourceAuthorization: e.FHIRHOSE_SOURCE_AUTHORIZATION,
    jobConcurrency: e.FHIRHOSE_JOB_CONCURRENCY,
    leaseMs: e.FHIRHOSE_LEASE_MS,
    log: e.FHIRHOSE_LOG,
    bulkPoolSize: e.FHIRHOSE_BULK_POOL_SIZE,
    bulkConcurrency: e.FHIRHOSE_BULK_CONCURRENCY,
    bulkQueue: e.FHIRHOSE_BULK_QUEUE,
    bulkQueueWaitMs: e.FHIRHOSE_BULK_QUEUE_WAIT_MS,
    downloadConcurrency: e.FHIRHOSE_DOWNLOAD_CONCURRENCY,
    slowReaderBytesPerSec: e.FHIRHOSE_SLOW_READER_BYTES_PER_SEC,
    slowReaderWindowMs: e.FHIRHOSE_SLOW_READER_WINDOW_MS,
    sqlMaxValueBytes: e.FHIRHOSE_SQL_MAX_VALUE_BYTES,
    loginFailuresPerMinute: e.FHIRHOSE_LOGIN_FAILURES_PER_MINUTE,
    shutdownGraceMs: e.FHIRHOSE_SHUTDOWN_GRACE_MS,
    baseUrl: e.FHIRHOSE_BASE_URL?.replace(/\/+$/, ''),
    exportDir: path.resolve(e.FHIRHOSE_EXPORT_DIR ?? path.join(e.FHIRHOSE_DATA_DIR, 'exports')),
    exportFileResources: e.FHIRHOSE_EXPORT_FILE_RESOURCES,
    exportExpiresS: e.FHIRHOSE_EXPORT_EXPIRES_S,
    batchMaxResources: e.FHIRHOSE_BATCH_MAX_RESOURCES,
  };
}
