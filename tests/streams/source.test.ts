import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';
import { openSource, resolveImportPath, SOURCE_ATTEMPTS, sourceError } from '../../src/streams/source.ts';
import { loadConfig } from '../../src/config.ts';

const limits = loadConfig({}).sources;

const body = '{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}\n';

let server: ReturnType<typeof Bun.serve>;
/** Requests per key of the /busy/ paths. */
const asks = new Map<string, number>();
let dropper: NetServer;
let base: string;
let dropUrl: string;
let scratch: string;
let root: string;

beforeAll(async () => {
  server = Bun.serve({
    port: 0,
    fetch(request) {
      const { pathname } = new URL(request.url);
      if (pathname === '/Patient.ndjson') return new Response(body);
      // /busy/<n>/<key>.ndjson: 503 (odd asks) or 429 (even), Retry-After 0, for the first n asks of that key
      const busy = /^\/busy\/(\d+)\/(\w+)\.ndjson$/.exec(pathname);
      if (busy) {
        const asked = (asks.get(busy[2]!) ?? 0) + 1;
        asks.set(busy[2]!, asked);
        if (asked <= Number(busy[1])) return new Response('busy', { status: asked % 2 ? 503 : 429, headers: { 'retry-after': '0' } });
        return new Response(body);
      }
      if (pathname === '/Patient.ndjson.gz') {
        return new Response(Bun.gzipSync(body), { headers: { 'content-encoding': 'gzip' } });
      }
      return new Response('no such file', { status: 404 });
    },
  });
  base = `http://127.0.0.1:${server.port}`;
  // Promises 100000 bytes, sends 5000, then closes the connection.
  dropper = createServer((socket) => {
    socket.once('data', () => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'{"a":1}\n'.repeat(625)}`);
      setTimeout(() => socket.destroy(), 20);
    });
  });
  await new Promise<void>((done) => dropper.listen(0, '127.0.0.1', done));
  dropUrl = `http://127.0.0.1:${(dropper.address() as { port: number }).port}/Observation.ndjson`;

  scratch = await realpath(await mkdtemp(join(tmpdir(), 'fhirhose-source-')));
  root = join(scratch, 'root');
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(root, 'sub', 'Patient.ndjson'), body);
  await writeFile(join(scratch, 'secret.ndjson'), '{"secret":true}\n');
  await symlink(join(scratch, 'secret.ndjson'), join(root, 'escape.ndjson'));
  await symlink(join(root, 'sub', 'Patient.ndjson'), join(root, 'alias.ndjson'));
});

afterAll(async () => {
  server.stop(true);
  dropper.close();
  await rm(scratch, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<OperationOutcomeError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(OperationOutcomeError);
    return error as OperationOutcomeError;
  }
  throw new Error('expected a rejection');
}

describe('openSource over HTTP', () => {
  test('streams a 200 body with its size and name', async () => {
    const source = await openSource(`${base}/Patient.ndjson?sig=abc`, { importRoot: root, limits });
    expect(source.name).toBe('Patient.ndjson');
    expect(source.bytesTotal).toBe(body.length);
    expect(await new Response(source.stream).text()).toBe(body);
  });

  test('leaves bytesTotal unknown when the body has a Content-Encoding', async () => {
    const source = await openSource(`${base}/Patient.ndjson.gz`, { importRoot: root, limits, label: 'patients' });
    expect(source.name).toBe('patients');
    expect(source.bytesTotal).toBeUndefined();
    expect(await new Response(source.stream).text()).toBe(body);
  });

  test('an HTTP 404 is a bad gateway that names the source, without the query string', async () => {
    const error = await rejection(openSource(`${base}/Missing.ndjson?token=s3cret`, { importRoot: root, limits }));
    expect(error.code).toBe('bad-gateway');
    expect(error.message).toBe(`Cannot load "Missing.ndjson": ${base}/Missing.ndjson answered HTTP 404`);
  });

  test('a closed port is a bad gateway: unreachable', async () => {
    const closed = Bun.serve({ port: 0, fetch: () => new Response() });
    const url = `http://127.0.0.1:${closed.port}/Patient.ndjson`;
    closed.stop(true);
    const error = await rejection(openSource(url, { importRoot: root, limits }));
    expect(error.code).toBe('bad-gateway');
    expect(error.message).toStartWith(`Cannot load "Patient.ndjson": ${url} is unreachable (`);
  });

  test('a connection dropped mid-body errors the stream; sourceError makes it a bad gateway', async () => {
    const source = await openSource(dropUrl, { importRoot: root, limits });
    expect(source.bytesTotal).toBe(100000);
    let caught: unknown;
    try {
      await new Response(source.stream).arrayBuffer();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeDefined();
    const error = sourceError(source.name, caught);
    expect(error.code).toBe('bad-gateway');
    expect(error.message).toStartWith('Cannot load "Observation.ndjson": reading failed mid-way (');
  });

  test('busy answers (503, 429) are "retry later" with busyWaitMs: asked again past SOURCE_ATTEMPTS until served', async () => {
    const busyAsks = SOURCE_ATTEMPTS + 2;
    const source = await openSource(`${base}/busy/${busyAsks}/later.ndjson`, { importRoot: root, limits, busyWaitMs: 60_000 });
    expect(await new Response(source.stream).text()).toBe(body);
    expect(asks.get('later')).toBe(busyAsks + 1);
  }, 60_000);

  test('without busyWaitMs (a request), busy answers are attempts: SOURCE_ATTEMPTS, then a bad gateway', async () => {
    const error = await rejection(openSource(`${base}/busy/100/request.ndjson`, { importRoot: root, limits }));
    expect(error.code).toBe('bad-gateway');
    expect(error.message).toBe(`Cannot load "request.ndjson": ${base}/busy/100/request.ndjson answered HTTP ${SOURCE_ATTEMPTS % 2 ? 503 : 429} (${SOURCE_ATTEMPTS} attempts)`);
    expect(asks.get('request')).toBe(SOURCE_ATTEMPTS);
  }, 60_000);

  test('a source busy for longer than busyWaitMs fails, saying how long it was busy', async () => {
    const error = await rejection(openSource(`${base}/busy/100/always.ndjson`, { importRoot: root, limits, busyWaitMs: 2_000 }));
    expect(error.code).toBe('bad-gateway');
    // two busy waits of 1 s (the least a busy answer is waited), then SOURCE_ATTEMPTS counted ones
    expect(error.message).toMatch(/^Cannot load "always\.ndjson": .* answered HTTP (503|429) \(\d+ attempts, after 2 s of busy answers\)$/);
    expect(asks.get('always')).toBe(2 + SOURCE_ATTEMPTS);
  }, 60_000);

  test('an aborted signal rejects with its reason', async () => {
    const controller = new AbortController();
    controller.abort(new Error('shutting down'));
    await expect(openSource(`${base}/Patient.ndjson`, { importRoot: root, limits, signal: controller.signal })).rejects.toThrow('shutting down');
  });
});

describe('openSource over files', () => {
  test('reads a file under the import root, as a path or a file:// URL', async () => {
    const path = join(root, 'sub', 'Patient.ndjson');
    for (const url of [path, `file://${path}`, join(root, 'sub', '..', 'sub', 'Patient.ndjson'), join(root, 'alias.ndjson')]) {
      const source = await openSource(url, { importRoot: root, limits });
      expect(source.bytesTotal).toBe(body.length);
      expect(await new Response(source.stream).text()).toBe(body);
    }
    expect((await openSource(path, { importRoot: root, limits })).name).toBe('Patient.ndjson');
  });

  test('refuses paths outside the import root: `..`, symlinks, absolute paths elsewhere', async () => {
    for (const url of [
      join(root, '..', 'secret.ndjson'),
      `file://${root}/sub/../../secret.ndjson`,
      join(root, 'escape.ndjson'),
      '/etc/hostname',
      join(root, '..', 'no-such.ndjson'),
    ]) {
      const error = await rejection(openSource(url, { importRoot: root, limits }));
      expect(error.code).toBe('forbidden');
      expect(error.message).toEndWith(`${url} is outside FHIRHOSE_IMPORT_ROOT`);
    }
  });

  test('a missing file under the root is not found; a directory or another scheme is invalid', async () => {
    const missing = join(root, 'sub', 'Nope.ndjson');
    const notFound = await rejection(openSource(missing, { importRoot: root, limits }));
    expect(notFound.code).toBe('not-found');
    expect(notFound.message).toBe(`Cannot load "Nope.ndjson": ${missing} does not exist`);
    expect((await rejection(openSource(join(root, 'sub'), { importRoot: root, limits }))).code).toBe('invalid');
    expect((await rejection(openSource('ftp://example.org/a.ndjson', { importRoot: root, limits }))).code).toBe('invalid');
    expect((await rejection(openSource('sub/Patient.ndjson', { importRoot: root, limits }))).code).toBe('invalid');
  });

  test('resolveImportPath confines a resource-file path to the import root', async () => {
    expect(await resolveImportPath('sub/Patient.ndjson', root)).toBe(join(root, 'sub', 'Patient.ndjson'));
    expect((await rejection(resolveImportPath('../secret.ndjson', root))).code).toBe('forbidden');
    expect((await rejection(resolveImportPath('escape.ndjson', root))).code).toBe('forbidden');
    expect((await rejection(resolveImportPath('sub/Nope.ndjson', root))).code).toBe('not-found');
  });
});

describe('sourceError', () => {
  test('prefixes stream errors once and keeps their code', () => {
    const gzip = sourceError('a.ndjson.gz', new OperationOutcomeError('unprocessable', 'gzip data is truncated'));
    expect(gzip.code).toBe('unprocessable');
    expect(gzip.message).toBe('Cannot load "a.ndjson.gz": gzip data is truncated');
    expect(sourceError('a.ndjson.gz', gzip)).toBe(gzip);
  });
});
