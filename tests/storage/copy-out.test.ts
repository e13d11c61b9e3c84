import { describe, expect, test } from 'bun:test';
import { unframe } from '../../src/storage/copy-out.ts';

/** A CopyData message as PostgreSQL sends it: `d`, int32 length (counting itself), payload. */
function message(payload: string): Buffer {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(5);
  head[0] = 0x64;
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

describe('unframe (runs of CopyData messages from patched postgres.js)', () => {
  test('copies the payloads of a run of messages back to back, after what the buffer holds', () => {
    const into = Buffer.alloc(64, 0x2e);
    const end = unframe(Buffer.concat([message('first row\n'), message(''), message('second ✓\n')]), into, 3);
    expect(into.toString('utf8', 0, end)).toBe('...first row\nsecond ✓\n');
  });

  test('a byte that does not start a CopyData message is an error, not garbage in the dump', () => {
    const notCopyData = Buffer.concat([message('row\n'), Buffer.from('C\0\0\0\x0bCOPY 1\0')]);
    expect(() => unframe(notCopyData, Buffer.alloc(64), 0)).toThrow('expected a CopyData message, got byte 67');
  });
});
