/** STYLE §5: the environment is read once, validated, and a bad value is one clear line. */
import { describe, expect, test } from 'bun:test';
import path from 'node:path';
import { loadConfig } from '../src/config.ts';

describe('config: happy', () => {
  test('defaults match the README table', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      port: 8080, host: '0.0.0.0', pgPort: 5433, poolSize: 12, bodyLimit: 16 * 1024 * 1024,
      maxLineBytes: 16 * 1024 * 1024, sqlTimeoutMs: 60_000, importBatchLines: 5000, importConcurrency: 2, log: 'info',
    });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.rootSecret).toBeUndefined();
    expect(c.readUrl).toBeUndefined();
    expect(c.readMaxLagMs).toBe(10_000);
    expect(c.dataDir).toBe(path.resolve('./data'));
    expect(c.importRoot).toBe(path.resolve('./import'));
    expect(c.sources).toEqual({
      allow: undefined, connectTimeoutMs: 10_000, stallTimeoutMs: 30_000, minRate: 1024, rateWindowMs: 60_000,
      maxBytes: 50_000_000_000, maxRatio: 200,
    });
  });

  test('source limits: seconds may be fractions; FHIRHOSE_SOURCE_ALLOW is a comma or space list of URL prefixes', () => {
    const c = loadConfig({
      FHIRHOSE_SOURCE_CONNECT_TIMEOUT: '0.5', FHIRHOSE_SOURCE_STALL_TIMEOUT: '2', FHIRHOSE_SOURCE_MIN_RATE: '0', FHIRHOSE_SOURCE_RATE_WINDOW: '1.5',
      FHIRHOSE_SOURCE_ALLOW: 'https://a.org/exports/, http://127.0.0.1:9000/  https://b.net',
      FHIRHOSE_MAX_SOURCE_BYTES: '1048576', FHIRHOSE_MAX_COMPRESSION_RATIO: '50',
    });
    expect(c.sources).toEqual({
      allow: ['https://a.org/exports/', 'http://127.0.0.1:9000/', 'https://b.net'], connectTimeoutMs: 500, stallTimeoutMs: 2000,
      minRate: 0, rateWindowMs: 1500, maxBytes: 1_048_576, maxRatio: 50,
    });
  });

  test('FHIRHOSE_DNS_SERVERS: unset is the system resolver; a comma or space list of ip, ip:port and [ipv6]:port', () => {
    expect(loadConfig({}).sources.dnsServers).toBeUndefined();
    expect(loadConfig({ FHIRHOSE_DNS_SERVERS: '10.0.0.2, 127.0.0.1:5353  [::1]:53,fd00::53' }).sources.dnsServers)
      .toEqual(['10.0.0.2', '127.0.0.1:5353', '[::1]:53', 'fd00::53']);
  });

  test('defaults of the $export settings', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ exportDir: path.resolve('./data/exports'), exportFileResources: 100_000, exportExpiresS: 86_400 });
    expect(c.baseUrl).toBeUndefined();
  });

  test('$export settings: the base URL loses its trailing slash; the export folder follows FHIRHOSE_DATA_DIR unless set', () => {
    expect(loadConfig({ FHIRHOSE_BASE_URL: 'https://fhir.example.org/fhir/' }).baseUrl).toBe('https://fhir.example.org/fhir');
    expect(loadConfig({ FHIRHOSE_DATA_DIR: 'var/d' }).exportDir).toBe(path.resolve('var/d/exports'));
    expect(loadConfig({ FHIRHOSE_DATA_DIR: 'var/d', FHIRHOSE_EXPORT_DIR: '/srv/exports' }).exportDir).toBe('/srv/exports');
  });

  test('values are read from the environment; relative folders become absolute; blank means unset', () => {
    const c = loadConfig({ PORT: '9000', DATABASE_URL: 'postgresql://u:p@db/x', FHIRHOSE_DATA_DIR: 'var/d', FHIRHOSE_ROOT_SECRET: 's3', FHIRHOSE_PG_PORT: '  ', FHIRHOSE_LOG: 'quiet' });
    expect(c).toMatchObject({ port: 9000, databaseUrl: 'postgresql://u:p@db/x', dataDir: path.resolve('var/d'), rootSecret: 's3', pgPort: 5433, log: 'quiet' });
  });

  test('job leases default to 15 s and 4 jobs per server; both can be set', () => {
    expect(loadConfig({})).toMatchObject({ leaseMs: 15_000, jobConcurrency: 4 });
    expect(loadConfig({ FHIRHOSE_LEASE_MS: '3000', FHIRHOSE_JOB_CONCURRENCY: '8' })).toMatchObject({ leaseMs: 3000, jobConcurrency: 8 });
  });
});

describe('config: errors', () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'Invalid configuration: PORT="abc" must be a whole number from 0 to 65535'],
    [{ PORT: '65536' }, 'Invalid configuration: PORT="65536" must be a whole number from 0 to 65535'],
    [{ PORT: '80.5' }, 'Invalid configuration: PORT="80.5" must be a whole number from 0 to 65535'],
    [{ FHIRHOSE_PG_PORT: '0' }, 'Invalid configuration: FHIRHOSE_PG_PORT="0" must be a whole number from 1 to 65535'],
    [{ FHIRHOSE_POOL_SIZE: '1' }, 'Invalid configuration: FHIRHOSE_POOL_SIZE="1" must be a whole number from 2 to 200'],
    [{ FHIRHOSE_BODY_LIMIT: '10' }, 'Invalid configuration: FHIRHOSE_BODY_LIMIT="10" must be a whole number, at least 1024'],
    [{ FHIRHOSE_READ_MAX_LAG_MS: '-1' }, 'Invalid configuration: FHIRHOSE_READ_MAX_LAG_MS="-1" must be a whole number, at least 0'],
    [{ FHIRHOSE_LEASE_MS: '100' }, 'Invalid configuration: FHIRHOSE_LEASE_MS="100" must be a whole number from 500 to 3600000'],
    [{ FHIRHOSE_JOB_CONCURRENCY: '0' }, 'Invalid configuration: FHIRHOSE_JOB_CONCURRENCY="0" must be a whole number from 1 to 64'],
    [{ FHIRHOSE_LOG: 'debug' }, 'Invalid configuration: FHIRHOSE_LOG="debug" must be info, json or quiet'],
    [{ FHIRHOSE_SOURCE_STALL_TIMEOUT: '0' }, 'Invalid configuration: FHIRHOSE_SOURCE_STALL_TIMEOUT="0" must be a number of seconds, more than 0'],
    [{ FHIRHOSE_SOURCE_CONNECT_TIMEOUT: 'soon' }, 'Invalid configuration: FHIRHOSE_SOURCE_CONNECT_TIMEOUT="soon" must be a number of seconds, more than 0'],
    [{ FHIRHOSE_SOURCE_ALLOW: 'ftp://a.org/, http://b.org/' }, 'Invalid configuration: FHIRHOSE_SOURCE_ALLOW="ftp://a.org/, http://b.org/" must be http(s) URL prefixes separated by commas or spaces'],
    [{ FHIRHOSE_DNS_SERVERS: 'dns.example.org' }, 'Invalid configuration: FHIRHOSE_DNS_SERVERS="dns.example.org" must be DNS server addresses (ip, ip:port or [ipv6]:port) separated by commas or spaces'],
    [{ FHIRHOSE_DNS_SERVERS: '10.0.0.2, 127.0.0.1:70000' }, 'Invalid configuration: FHIRHOSE_DNS_SERVERS="10.0.0.2, 127.0.0.1:70000" must be DNS server addresses (ip, ip:port or [ipv6]:port) separated by commas or spaces'],
    [{ FHIRHOSE_DNS_SERVERS: '[10.0.0.2]:53' }, 'Invalid configuration: FHIRHOSE_DNS_SERVERS="[10.0.0.2]:53" must be DNS server addresses (ip, ip:port or [ipv6]:port) separated by commas or spaces'],
    [{ FHIRHOSE_MAX_COMPRESSION_RATIO: '1' }, 'Invalid configuration: FHIRHOSE_MAX_COMPRESSION_RATIO="1" must be a whole number, at least 2'],
    [{ FHIRHOSE_BASE_URL: 'fhir.example.org' }, 'Invalid configuration: FHIRHOSE_BASE_URL="fhir.example.org" must be an absolute http(s) URL'],
    [{ FHIRHOSE_EXPORT_FILE_RESOURCES: '0' }, 'Invalid configuration: FHIRHOSE_EXPORT_FILE_RESOURCES="0" must be a whole number, at least 1'],
    [{ FHIRHOSE_EXPORT_EXPIRES_S: '1h' }, 'Invalid configuration: FHIRHOSE_EXPORT_EXPIRES_S="1h" must be a whole number, at least 1'],
  ];
  for (const [env, message] of cases) {
    test(`${Object.entries(env)[0]!.join('=')} is refused with one line naming it`, () => {
      expect(() => loadConfig(env)).toThrow(message);
    });
  }
});

describe('config: security', () => {
  test('FHIRHOSE_READ_URL is read as given, and a bad one is named without echoing its password', () => {
    expect(loadConfig({ FHIRHOSE_READ_URL: 'postgres://r:p@standby/x', FHIRHOSE_READ_MAX_LAG_MS: '0' })).toMatchObject({ readUrl: 'postgres://r:p@standby/x', readMaxLagMs: 0 });
    let message = '';
    try {
      loadConfig({ FHIRHOSE_READ_URL: 'standby.example:5432 password=hunter2' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toBe('Invalid configuration: FHIRHOSE_READ_URL must start with postgres:// or postgresql://');
  });

  test('an invalid DATABASE_URL is named but its value (which may hold a password) is not echoed', () => {
    expect(() => loadConfig({ DATABASE_URL: 'mysql://admin:hunter2@db/x' })).toThrow('Invalid configuration: DATABASE_URL must start with postgres:// or postgresql://');
    try {
      loadConfig({ DATABASE_URL: 'mysql://admin:hunter2@db/x' });
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
  });
});

describe('config: FHIRHOSE_SOURCE_AUTHORIZATION (SPEC §13)', () => {
  test('origins to Authorization values; unset is none', () => {
    expect(loadConfig({}).sourceAuthorization).toEqual({});
    expect(loadConfig({ FHIRHOSE_SOURCE_AUTHORIZATION: '{"https://other.example.org": "Bearer abc.def", "http://127.0.0.1:9090": "Basic eDp5"}' }).sourceAuthorization)
      .toEqual({ 'https://other.example.org': 'Bearer abc.def', 'http://127.0.0.1:9090': 'Basic eDp5' });
  });

  test('a malformed value (not JSON, a path, not a string) is refused without echoing the token', () => {
    for (const value of ['Bearer t0ken-value', '{"https://other.example.org/fhir": "Bearer t0ken-value"}', '{"https://other.example.org": 12}', '["Bearer t0ken-value"]']) {
      let message = '';
      try {
        loadConfig({ FHIRHOSE_SOURCE_AUTHORIZATION: value });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toContain('FHIRHOSE_SOURCE_AUTHORIZATION must be a JSON object of origins');
      expect(message).not.toContain('t0ken-value');
    }
  });
});

describe('config: server limits (SPEC §10)', () => {
  test('defaults match the README rows', () => {
    expect(loadConfig({})).toMatchObject({
      bulkPoolSize: 16, bulkConcurrency: 8, bulkQueue: 32, bulkQueueWaitMs: 10_000, downloadConcurrency: 64,
      slowReaderBytesPerSec: 4096, slowReaderWindowMs: 30_000, sqlMaxValueBytes: 16 * 1024 * 1024,
      loginFailuresPerMinute: 10, shutdownGraceMs: 20_000, batchMaxResources: 10_000,
    });
  });

  test('values are read; bad ones are refused naming the variable', () => {
    expect(loadConfig({ FHIRHOSE_BULK_CONCURRENCY: '3', FHIRHOSE_BULK_QUEUE: '0', FHIRHOSE_SLOW_READER_BYTES_PER_SEC: '0' }))
      .toMatchObject({ bulkConcurrency: 3, bulkQueue: 0, slowReaderBytesPerSec: 0 });
    expect(() => loadConfig({ FHIRHOSE_BULK_CONCURRENCY: '0' })).toThrow('FHIRHOSE_BULK_CONCURRENCY="0" must be a whole number from 1 to 200');
    expect(() => loadConfig({ FHIRHOSE_BULK_POOL_SIZE: '1' })).toThrow('FHIRHOSE_BULK_POOL_SIZE="1"');
    expect(loadConfig({ FHIRHOSE_DOWNLOAD_CONCURRENCY: '2' })).toMatchObject({ downloadConcurrency: 2 });
    expect(() => loadConfig({ FHIRHOSE_DOWNLOAD_CONCURRENCY: '0' })).toThrow('FHIRHOSE_DOWNLOAD_CONCURRENCY="0" must be a whole number from 1 to 10000');
    expect(() => loadConfig({ FHIRHOSE_SLOW_READER_WINDOW_MS: 'soon' })).toThrow('FHIRHOSE_SLOW_READER_WINDOW_MS="soon"');
    expect(() => loadConfig({ FHIRHOSE_BATCH_MAX_RESOURCES: '0' })).toThrow('FHIRHOSE_BATCH_MAX_RESOURCES="0"');
    expect(() => loadConfig({ FHIRHOSE_SHUTDOWN_GRACE_MS: '1.5' })).toThrow('FHIRHOSE_SHUTDOWN_GRACE_MS="1.5"');
    expect(() => loadConfig({ FHIRHOSE_LOGIN_FAILURES_PER_MINUTE: '-1' })).toThrow('FHIRHOSE_LOGIN_FAILURES_PER_MINUTE="-1"');
    expect(() => loadConfig({ FHIRHOSE_SQL_MAX_VALUE_BYTES: '10' })).toThrow('FHIRHOSE_SQL_MAX_VALUE_BYTES="10" must be a whole number from 1024 to 1073741824');
  });
});
