import { describe, expect, test } from 'bun:test';
import path from 'node:path';
import { countBytes, ndjsonLines, type Line } from '../../src/streams/lines.ts';

const encoder = new TextEncoder();

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = chunks[i++];
      if (chunk === undefined) controller.close();
      else controller.enqueue(chunk);
    },
  });
}

function bytewise(text: string | Uint8Array): Uint8Array[] {
  const bytes = typeof text === 'string' ? encoder.encode(text) : text;
  return Array.from(bytes, (b) => new Uint8Array([b]));
}

async function collect(chunks: Uint8Array[], maxLineBytes = 1000, skipLines?: number) {
  const lines: Line[] = [];
  const bytesRead: number[] = [];
  for await (const batch of ndjsonLines(streamOf(chunks), { maxLineBytes, skipLines })) {
    lines.push(...batch.lines);
    bytesRead.push(batch.bytesRead);
  }
  return { lines, bytesRead };
}


const mixed = '{"a":1}\r\n\n   \t\n{"b":"é€😀"}\n\r\n{"c":3}';
const mixedLines = [
  { no: 1, text: '{"a":1}' },
  { no: 4, text: '{"b":"é€😀"}' },
  { no: 6, text: '{"c":3}' },
];

describe('ndjsonLines', () => {
  test('numbers lines from 1, strips CRLF, skips blank lines but counts them, keeps a last line without newline', async () => {
    const { lines, bytesRead } = await collect([encoder.encode(mixed)]);
    expect(lines).toEqual(mixedLines);
    expect(bytesRead.at(-1)).toBe(encoder.encode(mixed).length);
  });

  test('gives the same lines whatever the chunking, down to one byte per chunk', async () => {
    const bytes = encoder.encode(mixed);
    expect((await collect(bytewise(bytes))).lines).toEqual(mixedLines);
    for (let cut = 1; cut < bytes.length; cut++) {
      const { lines } = await collect([bytes.subarray(0, cut), bytes.subarray(cut)]);
      expect(lines).toEqual(mixedLines);
    }
  });

  test('decodes a multi-byte character split across chunks', async () => {
    const bytes = encoder.encode('{"x":"😀"}\n');
    const at = bytes.indexOf(0xf0) + 2;
    const { lines } = await collect([bytes.subarray(0, at), bytes.subarray(at)]);
    expect(lines).toEqual([{ no: 1, text: '{"x":"😀"}' }]);
  });

  test('reports cumulative bytesRead with each batch, and once more at the end when needed', async () => {
    const { bytesRead } = await collect(bytewise('{}\n{}\n\n\n'));
    expect(bytesRead).toEqual([3, 6, 8]);
  });

  test('reports a line over maxLineBytes as tooLong and goes on, in one chunk or many', async () => {
    const long = `{"x":"${'y'.repeat(200)}"}`;
    const text = `{"a":1}\n${long}\r\n${'z'.repeat(100)}\n{"b":2}\n${long}`;
    const expected: Line[] = [
      { no: 1, text: '{"a":1}' },
      { no: 2, tooLong: true },
      { no: 3, text: 'z'.repeat(100) },
      { no: 4, text: '{"b":2}' },
      { no: 5, tooLong: true },
    ];
    expect((await collect([encoder.encode(text)], 100)).lines).toEqual(expected);
    expect((await collect(bytewise(text), 100)).lines).toEqual(expected);
  });

  test('measures the limit in UTF-8 bytes without the CR', async () => {
    const text = `${'é'.repeat(50)}\r\n${'é'.repeat(51)}\n`;
    const expected: Line[] = [{ no: 1, text: 'é'.repeat(50) }, { no: 2, tooLong: true }];
    expect((await collect([encoder.encode(text)], 100)).lines).toEqual(expected);
    expect((await collect(bytewise(text), 100)).lines).toEqual(expected);
  });

  test('a line of invalid UTF-8 is one notText line; the lines around it are read', async () => {
    const bytes = new Uint8Array([...encoder.encode('{"a":1}\n{"b":2}\n{"c":"'), 0xc3, 0x28, ...encoder.encode('"}\r\n{"d":4}\n{"e":"'), 0xff, ...encoder.encode('"}')]);
    const expected: Line[] = [
      { no: 1, text: '{"a":1}' }, { no: 2, text: '{"b":2}' }, { no: 3, notText: true }, { no: 4, text: '{"d":4}' }, { no: 5, notText: true },
    ];
    for (const chunks of [[bytes], bytewise(bytes), [bytes.subarray(0, 20), bytes.subarray(20)]]) {
      expect((await collect(chunks)).lines).toEqual(expected);
    }
  });

  test('a long line of invalid UTF-8 is reported as too long, not buffered', async () => {
    const bytes = new Uint8Array([...new Uint8Array(200).fill(0xff), 10, ...encoder.encode('{"a":1}\n')]);
    expect((await collect([bytes], 100)).lines).toEqual([{ no: 1, tooLong: true }, { no: 2, text: '{"a":1}' }]);
  });

  test('a NUL byte is left to the JSON parser: the line is yielded, the next ones too', async () => {
    const { lines } = await collect([encoder.encode('{"a":1}\n\n{"b":"\0"}\n{"c":3}\n')]);
    expect(lines).toEqual([{ no: 1, text: '{"a":1}' }, { no: 3, text: '{"b":"\0"}' }, { no: 4, text: '{"c":3}' }]);
  });

  test('random bytes are bad lines, never a thrown error', async () => {
    const random = new Uint8Array(64 * 1024);
    crypto.getRandomValues(random);
    const { lines } = await collect([random], 100_000);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.some((l) => 'notText' in l)).toBe(true);
  });

  test('skipLines consumes the first lines without yielding them; numbers stay absolute', async () => {
    const text = '{"n":1}\n{"n":2}\n\n{"n":4}\n{"n":5}';
    const expected = [{ no: 4, text: '{"n":4}' }, { no: 5, text: '{"n":5}' }];
    expect((await collect([encoder.encode(text)], 1000, 3)).lines).toEqual(expected);
    expect((await collect(bytewise(text), 1000, 3)).lines).toEqual(expected);
    expect((await collect(bytewise(text), 1000, 9)).lines).toEqual([]);
  });

  test('strips a byte order mark from the first line only', async () => {
    const { lines } = await collect([encoder.encode('\uFEFF{"a":1}\n{"b":2}\n')]);
    expect(lines).toEqual([{ no: 1, text: '{"a":1}' }, { no: 2, text: '{"b":2}' }]);
  });

  test('leaving the loop early cancels the input', async () => {
    let cancelled = false;
    const input = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(encoder.encode('{"a":1}\n')),
      cancel: () => {
        cancelled = true;
      },
    });
    for await (const batch of ndjsonLines(input, { maxLineBytes: 100 })) {
      expect(batch.lines).toHaveLength(1);
      break;
    }
    expect(cancelled).toBe(true);
  });

  const synthea = path.join(import.meta.dir, '../fixtures/synthea/two-patients/DocumentReference.000.ndjson');
  test('splits a real Synthea file into parseable resources', async () => {
    const file = Bun.file(synthea);
    const expected = (await file.text()).split('\n').filter((line) => line.trim() !== '');
    const texts: string[] = [];
    let bytesRead = 0;
    for await (const batch of ndjsonLines(file.stream(), { maxLineBytes: 1 << 20 })) {
      for (const line of batch.lines) if ('text' in line) texts.push(line.text);
      bytesRead = batch.bytesRead;
    }
    expect(texts).toEqual(expected);
    expect(bytesRead).toBe(file.size);
    expect(texts).toHaveLength(30);
    expect(texts.every((text) => JSON.parse(text).resourceType === 'DocumentReference')).toBe(true);
  });
});

describe('countBytes', () => {
  test('reports every chunk size and passes the bytes through', async () => {
    const seen: number[] = [];
    const chunks = [encoder.encode('abc'), encoder.encode('de')];
    const out = await new Response(countBytes(streamOf(chunks), (n) => seen.push(n))).text();
    expect(out).toBe('abcde');
    expect(seen).toEqual([3, 2]);
  });
});
