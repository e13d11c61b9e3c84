import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, test } from 'bun:test';
import { OperationOutcomeError } from '../../src/fhir/outcome.ts';
import { RATIO_FLOOR, gunzipIfNeeded, gzipStream, gzipWriter } from '../../src/streams/gzip.ts';
import { within } from '../helpers/wait.ts';

const encoder = new TextEncoder();
const ndjson = Array.from({ length: 2000 }, (_, i) => `{"resourceType":"Patient","id":"p${i}","name":"é${i}"}`).join('\n');
const plain = encoder.encode(ndjson);
const gzipped = Bun.gzipSync(plain);

function streamOf(chunks: Uint8Array[], onPull?: () => void): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        onPull?.();
        const chunk = chunks[i++];
        if (chunk === undefined) controller.close();
        else controller.enqueue(chunk);
      },
    },
    { highWaterMark: 0 },
  );
}

function chunked(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

async function bytesOf(stream: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function gunzipFailure(bytes: Uint8Array): Promise<OperationOutcomeError> {
  try {
    await bytesOf(gunzipIfNeeded(streamOf(chunked(bytes, 100))));
  } catch (error) {
    expect(error).toBeInstanceOf(OperationOutcomeError);
    expect((error as OperationOutcomeError).code).toBe('unprocessable');
    return error as OperationOutcomeError;
  }
  throw new Error('expected the gzip to be rejected');
}

describe('gunzipIfNeeded', () => {
  test('decompresses gzip, whatever the chunking, down to one byte per chunk', async () => {
    expect(await bytesOf(gunzipIfNeeded(streamOf([gzipped])))).toEqual(plain);
    expect(await bytesOf(gunzipIfNeeded(streamOf(chunked(gzipped, 1))))).toEqual(plain);
  });

  test('passes data without the gzip magic through unchanged', async () => {
    expect(await bytesOf(gunzipIfNeeded(streamOf(chunked(plain, 1000))))).toEqual(plain);
    const oneMagicByte = new Uint8Array([0x1f, 0x0a]);
    expect(await bytesOf(gunzipIfNeeded(streamOf(chunked(oneMagicByte, 1))))).toEqual(oneMagicByte);
    expect(await bytesOf(gunzipIfNeeded(streamOf([])))).toEqual(new Uint8Array(0));
  });

  test('decompresses multi-member gzip', async () => {
    const second = encoder.encode('\n{"resourceType":"Patient","id":"last"}\n');
    const both = new Uint8Array([...gzipped, ...Bun.gzipSync(second)]);
    expect(await bytesOf(gunzipIfNeeded(streamOf(chunked(both, 777))))).toEqual(new Uint8Array([...plain, ...second]));
  });

  test('rejects gzip that ends mid-stream as truncated', async () => {
    const error = await gunzipFailure(gzipped.subarray(0, gzipped.length >> 1));
    expect(error.message).toBe('gzip data is truncated (it ends mid-stream)');
  });

  test('rejects gzip cut inside its CRC/length trailer', async () => {
    expect((await gunzipFailure(gzipped.subarray(0, gzipped.length - 3))).message).toMatch(/^gzip data is (truncated|corrupt)/);
  });

  test('rejects corrupt gzip', async () => {
    const corrupt = gzipped.slice();
    for (let i = 20; i < 60; i++) corrupt[i] = 0xff;
    expect((await gunzipFailure(corrupt)).message).toMatch(/^gzip data is corrupt/);
    const badCrc = gzipped.slice();
    badCrc[badCrc.length - 6]! ^= 1;
    expect((await gunzipFailure(badCrc)).message).toMatch(/^gzip data is corrupt/);
  });

  test('rejects random bytes after the gzip magic', async () => {
    const random = new Uint8Array(4096);
    crypto.getRandomValues(random);
    random.set([0x1f, 0x8b, 8, 0]);
    expect((await gunzipFailure(random)).message).toMatch(/^gzip data is (corrupt|truncated)/);
  });

  test('passes an error of its input through unchanged', async () => {
    const dropped = new Error('connection dropped');
    let pulls = 0;
    const input = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulls++ === 0) controller.enqueue(gzipped.subarray(0, 500));
        else controller.error(dropped);
      },
    });
    await expect(bytesOf(gunzipIfNeeded(input))).rejects.toBe(dropped);
  });

  test('reads its input only as its output is consumed', async () => {
    const big = encoder.encode(`${ndjson}\n`.repeat(50));
    let pulls = 0;
    const chunks = chunked(Bun.gzipSync(big), 1024);
    const reader = gunzipIfNeeded(streamOf(chunks, () => pulls++)).getReader();
    await reader.read();
    await Bun.sleep(20);
    expect(pulls).toBeLessThan(10);
    expect(chunks.length).toBeGreaterThan(100);
    await reader.cancel();
  });

  test('cancelling the output cancels the input', async () => {
    let cancelled: unknown;
    const input = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(gzipped.subarray(0, 1000)),
      cancel: (reason) => {
        cancelled = reason;
      },
    });
    const reader = gunzipIfNeeded(input).getReader();
    await reader.read();
    await reader.cancel('client went away');
    await within(10_000, () => cancelled !== undefined, 'the input cancelled');
    expect(cancelled).toBe('client went away');
  });
});

describe('gunzipIfNeeded limits', () => {
  async function refusal(stream: ReadableStream<Uint8Array>): Promise<OperationOutcomeError> {
    const error = await bytesOf(stream).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(OperationOutcomeError);
    return error as OperationOutcomeError;
  }

  test('output past maxBytes errors the stream, plain or gzipped, and cancels the input', async () => {
    for (const bytes of [plain, gzipped]) {
      let cancelled = false;
      const input = new ReadableStream<Uint8Array>({
        start(controller) { for (const c of chunked(bytes, 1000)) controller.enqueue(c); },
        cancel() { cancelled = true; },
      });
      const error = await refusal(gunzipIfNeeded(input, { maxBytes: 10_000, maxRatio: 200 }));
      expect(error.code).toBe('too-large');
      expect(error.message).toBe('the source expands to more than 10000 bytes of ndjson (FHIRHOSE_MAX_SOURCE_BYTES)');
      expect(cancelled).toBe(true);
    }
    expect(await bytesOf(gunzipIfNeeded(streamOf([gzipped]), { maxBytes: plain.length, maxRatio: 200 }))).toEqual(plain);
  });

  test('a gzip expanding past maxRatio is refused as a bomb once past the floor; a small one that compresses well is not', async () => {
    const bomb = Bun.gzipSync(new Uint8Array(RATIO_FLOOR * 8).fill(0x61));
    expect(bomb.length * 200).toBeLessThan(RATIO_FLOOR * 8);
    const error = await refusal(gunzipIfNeeded(streamOf(chunked(bomb, 64 * 1024)), { maxBytes: 1e12, maxRatio: 200 }));
    expect(error.code).toBe('unprocessable');
    expect(error.message).toMatch(/^the gzip expands more than 200 times \(\d+ bytes from \d+\), refused as a probable gzip bomb \(FHIRHOSE_MAX_COMPRESSION_RATIO\)$/);
    const small = new Uint8Array(RATIO_FLOOR / 2).fill(0x61);
    expect(await bytesOf(gunzipIfNeeded(streamOf([Bun.gzipSync(small)]), { maxBytes: 1e12, maxRatio: 200 }))).toEqual(small);
  });
});

describe('gzipStream', () => {
  test('round-trips through gunzipIfNeeded', async () => {
    const compressed = await bytesOf(gzipStream(streamOf(chunked(plain, 4096))));
    expect(compressed.length).toBeLessThan(plain.length / 3);
    expect(await bytesOf(gunzipIfNeeded(streamOf([compressed])))).toEqual(plain);
  });

  test('compresses an empty input to a valid empty gzip', async () => {
    expect(Bun.gunzipSync(await bytesOf(gzipStream(streamOf([]))))).toEqual(new Uint8Array(0));
  });

  test('ndjson is compressed as level 1 does, base64 of random bytes stored: one member with both', async () => {
    const lines = encoder.encode(Array.from({ length: 40_000 }, (_, i) => `{"resourceType":"Observation","id":"o${i}","valueQuantity":{"value":${i * 1.5}}}`).join('\n') + '\n');
    const noise = Buffer.from(crypto.randomBytes(6 << 20).toString('base64'));
    const input = Buffer.concat([lines, noise, lines]);
    const gz = await bytesOf(gzipStream(streamOf(chunked(input, 300_000))));
    expect(Buffer.from(zlib.gunzipSync(gz)).equals(input)).toBe(true);
    // the noise is stored, not deflated at level 6 as CompressionStream did: the whole is no bigger
    // than level 1 makes it, give or take 1 %
    expect(gz.length).toBeLessThan(zlib.gzipSync(input, { level: 1 }).length * 1.01);
    expect(gz.length).toBeGreaterThan(noise.length);
  });

  test('reads an endless input only as its output is read: a few MiB for three chunks, then cancelled with the reader', async () => {
    const line = encoder.encode(`{"resourceType":"Observation","id":"x","note":"${'abc '.repeat(50)}"}\n`);
    const chunk = Buffer.concat(Array.from({ length: 1000 }, () => line)); // ~200 KB
    let offered = 0;
    let cancelled: unknown;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) { offered += chunk.length; controller.enqueue(chunk); },
      cancel(reason) { cancelled = reason; },
    }, { highWaterMark: 0 });
    const reader = gzipStream(endless).getReader();
    for (let i = 0; i < 3; i++) expect((await reader.read()).done).toBe(false);
    expect(offered).toBeLessThan(8 << 20);
    await reader.cancel(new Error('client gone'));
    expect((cancelled as Error).message).toBe('client gone');
  });

  test('an input that fails mid-way fails the output with its error', async () => {
    let n = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (++n > 30) controller.error(new Error('COPY failed'));
        else controller.enqueue(crypto.randomBytes(100_000));
      },
    }, { highWaterMark: 0 });
    await expect(bytesOf(gzipStream(failing))).rejects.toThrow('COPY failed');
  });
});

describe('gzipWriter', () => {
  // ~3.3 MB of ndjson: several of the writer's 1 MiB input blocks, plus a partial one
  const big = encoder.encode(Array.from({ length: 40_000 }, (_, i) => `{"resourceType":"Observation","id":"o${i}","valueQuantity":{"value":${i * 1.5}}}`).join('\n') + '\n');

  async function written(chunks: Uint8Array[], reuse = false): Promise<Buffer<ArrayBuffer>> {
    return (await writtenWith(chunks, reuse)).gz;
  }

  async function writtenWith(chunks: Uint8Array[], reuse = false): Promise<{ gz: Buffer<ArrayBuffer>; stored: number }> {
    const out: Uint8Array[] = [];
    const writer = gzipWriter(async (bytes) => { out.push(new Uint8Array(bytes)); });
    const scratch = new Uint8Array(Math.max(1, ...chunks.map((c) => c.length)));
    for (const chunk of chunks) {
      if (!reuse) { await writer.write(chunk); continue; }
      // the caller writes from one buffer it overwrites as soon as write resolves
      scratch.set(chunk);
      await writer.write(scratch.subarray(0, chunk.length));
      scratch.fill(0x21);
    }
    await writer.close();
    return { gz: Buffer.concat(out), stored: writer.stored };
  }

  /** One member holding exactly `plain`: one deflate stream from the 10-byte header to the trailer, with their CRC-32 and length. */
  function expectOneMember(gz: Buffer, plain: Uint8Array): void {
    expect(gz.subarray(0, 3)).toEqual(Buffer.from([0x1f, 0x8b, 8]));
    const inflated = zlib.inflateRawSync(gz.subarray(10, gz.length - 8), { finishFlush: zlib.constants.Z_FINISH });
    expect(Buffer.from(inflated).equals(Buffer.from(plain))).toBe(true);
    expect(gz.readUInt32LE(gz.length - 8)).toBe(zlib.crc32(plain) >>> 0);
    expect(gz.readUInt32LE(gz.length - 4)).toBe(plain.length >>> 0);
    expect(Buffer.from(zlib.gunzipSync(gz)).equals(Buffer.from(plain))).toBe(true);
  }

  // base64 of random bytes, as a PDF or JPEG in an attachment: level 1 saves almost nothing on it
  const random = (bytes: number) => Buffer.from(crypto.randomBytes(bytes).toString('base64'));

  test('bytes that do not compress are stored, in the same member, at most 0.2 % bigger than level 1 makes them', async () => {
    const data = random(9 << 20); // 12 MiB
    const { gz, stored } = await writtenWith(chunked(data, 300_000));
    expectOneMember(gz, data);
    // judged over the first 2 MiB, stored from there on
    expect(stored).toBeGreaterThan(data.length * 0.7);
    expect(gz.length).toBeLessThan(zlib.gzipSync(data, { level: 1 }).length * 1.002);
  });

  test('bytes that stay incompressible are compressed again less and less often: 100 MiB stored but for 6 MiB', async () => {
    // 17 copies of 6 MiB of base64 of random bytes: each copy is far beyond level 1's 32 KiB window
    const noise = random(6 << 20).subarray(0, 6 << 20);
    const data = Buffer.concat(Array.from({ length: 17 }, () => noise)).subarray(0, 100 << 20);
    // the member is checked as it comes, by a gunzip stream (CRC-32 and length included)
    const gunzip = zlib.createGunzip();
    let inflated = 0;
    gunzip.on('data', (chunk: Buffer) => { inflated += chunk.length; });
    const ended = new Promise<void>((resolve, reject) => { gunzip.on('end', resolve); gunzip.on('error', reject); });
    const writer = gzipWriter(async (bytes) => { if (!gunzip.write(new Uint8Array(bytes))) await new Promise((r) => gunzip.once('drain', r)); });
    for (const chunk of chunked(data, 1 << 20)) await writer.writeOwned(chunk);
    await writer.close();
    gunzip.end();
    await ended;
    expect(inflated).toBe(data.length);
    // 2 MiB judged, then retries after 16, 32 and 64 MiB stored (2 MiB each): 94 MiB stored. A
    // retry every 16 MiB stores 88 MiB.
    expect(writer.stored).toBeGreaterThanOrEqual(data.length - (6 << 20));
  });

  test('ndjson is never stored; after stored bytes the ndjson that follows is compressed again, back-references reaching into them', async () => {
    expect((await writtenWith(chunked(big, 100_000))).stored).toBe(0);
    const noise = random(6 << 20).subarray(0, 6 << 20);
    // in the writer's 1 MiB blocks: 2 of ndjson, 6 of noise (2 judged, 4 stored), then ndjson that starts by repeating
    // the stored bytes' last 20 KB: the compressor after them has those as its dictionary
    const data = Buffer.concat([Buffer.concat([big, big]).subarray(0, 2 << 20), noise, noise.subarray(noise.length - 20_000), big, big]);
    const { gz, stored } = await writtenWith(chunked(data, 1 << 20));
    expectOneMember(gz, data);
    expect(stored).toBeGreaterThan(noise.length * 0.5);
    expect(stored).toBeLessThan(noise.length);
    // the ndjson after the noise is compressed: the whole is as small as level 1 makes it, give or take 1 %
    expect(gz.length).toBeLessThan(zlib.gzipSync(data, { level: 1 }).length * 1.01);
  });

  test('one gzip member whatever the write sizes: tiny, odd, larger than the input block', async () => {
    for (const size of [1, 777, 65_536, 3_000_000]) {
      const gz = await written(chunked(big.subarray(0, size === 1 ? 20_000 : big.length), size));
      expect({ size, same: Buffer.from(Bun.gunzipSync(gz)).equals(Buffer.from(big.subarray(0, size === 1 ? 20_000 : big.length))) }).toEqual({ size, same: true });
      // a single member: its trailer (CRC, length) ends the file, nothing follows it
      expect(new DataView(gz.buffer, gz.byteOffset + gz.length - 4).getUint32(0, true)).toBe((size === 1 ? 20_000 : big.length) >>> 0);
    }
  });

  test('a caller that reuses its buffer once write resolves does not change what was written', async () => {
    expect(Buffer.from(Bun.gunzipSync(await written(chunked(big, 50_000), true))).equals(Buffer.from(big))).toBe(true);
  });

  test('nothing written is a valid empty gzip', async () => {
    expect(Bun.gunzipSync(await written([]))).toEqual(new Uint8Array(0));
  });

  test('owned chunks, big ones uncopied, mixed with copied writes, keep their order in one member', async () => {
    const out: Uint8Array[] = [];
    const writer = gzipWriter(async (bytes) => { out.push(new Uint8Array(bytes)); });
    // sizes around the 256 KiB at which an owned chunk goes to zlib uncopied, and a partial block before one
    const sizes = [100, 300_000, 5, 262_144, 262_143, 1_100_000, 70_000, 400_000, 1];
    let at = 0;
    for (let i = 0; at < big.length; i++) {
      const chunk = big.subarray(at, at + sizes[i % sizes.length]!);
      await (i % 3 === 2 ? writer.write(chunk) : writer.writeOwned(chunk));
      at += chunk.length;
    }
    await writer.close();
    const gz = Buffer.concat(out);
    expect(Buffer.from(Bun.gunzipSync(gz)).equals(Buffer.from(big))).toBe(true);
    expect(gz.readUInt32LE(gz.length - 4)).toBe(big.length);
  });

  test('one member, as small as gzipSync of the same bytes, with their CRC-32 and length', async () => {
    // 4.7 MB of notes drawn from 3,000 random words (a fixed seed): a writer that deflated its
    // 1 MiB blocks apart, each starting from nothing, wrote 0.5 % more (tried, BENCHMARKS.md)
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const words = Array.from({ length: 3000 }, () => Array.from({ length: 8 }, () => String.fromCharCode(97 + Math.floor(rnd() * 26))).join(''));
    const notes = Buffer.from(Array.from({ length: 60_000 }, (_, i) => `{"id":"o${i}","note":"${Array.from({ length: 6 }, () => words[Math.floor(rnd() * words.length)]).join(' ')}"}`).join('\n'));
    const gz = await written(chunked(notes, 100_000));
    expect(gz.length).toBeLessThan(zlib.gzipSync(notes, { level: 1 }).length * 1.002);
    // a single member: after the 10-byte header, one deflate stream that ends right before the trailer
    const inflated = zlib.inflateRawSync(gz.subarray(10, gz.length - 8), { finishFlush: zlib.constants.Z_FINISH });
    expect(Buffer.from(inflated).equals(notes)).toBe(true);
    expect(gz.readUInt32LE(gz.length - 8)).toBe(zlib.crc32(notes) >>> 0);
    expect(gz.readUInt32LE(gz.length - 4)).toBe(notes.length);
  });

  test('a failing sink fails write or close with its error', async () => {
    const writer = gzipWriter(async () => { throw new Error('disk full'); });
    const attempt = async () => { for (const chunk of chunked(big, 100_000)) await writer.write(chunk); await writer.close(); };
    await expect(attempt()).rejects.toThrow('disk full');
  });
});
