/**
 * A real DNS server on a UDP port of 127.0.0.1, for FHIRHOSE_DNS_SERVERS: it answers A and AAAA
 * queries with whatever `answer` returns for that name and the how-many-th query of it this is
 * (counted per name and type), and records every query. A rebinding server is an `answer` that
 * says one thing first and another later.
 */
import dgram from 'node:dgram';
import { isIP } from 'node:net';

export interface DnsQuery { name: string; type: 'A' | 'AAAA' | number; answered: string[] }

export interface DnsServer {
  /** `127.0.0.1:port`, as FHIRHOSE_DNS_SERVERS takes it. */
  address: string;
  queries: DnsQuery[];
  /** Queries of `name` (A and AAAA). */
  of(name: string): DnsQuery[];
  stop(): Promise<void>;
}

/** Addresses for the `nth` (from 0) query of `name`; none: an empty answer (NODATA). */
export type Answer = (name: string, nth: number) => string[];

export async function startDnsServer(answer: Answer): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const queries: DnsQuery[] = [];
  const counts = new Map<string, number>();
  socket.on('message', (message, from) => {
    const parsed = parseQuestion(message);
    if (!parsed) return;
    const { name, qtype, questionEnd } = parsed;
    const type = qtype === 1 ? 'A' : qtype === 28 ? 'AAAA' : qtype;
    const key = `${name} ${type}`;
    const nth = counts.get(key) ?? 0;
    counts.set(key, nth + 1);
    const family = type === 'A' ? 4 : type === 'AAAA' ? 6 : 0;
    const answered = family === 0 ? [] : answer(name, nth).filter((a) => isIP(a) === family);
    queries.push({ name, type, answered });
    socket.send(reply(message, questionEnd, answered), from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${socket.address().port}`,
    queries,
    of: (name) => queries.filter((q) => q.name === name),
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

function parseQuestion(message: Buffer): { name: string; qtype: number; questionEnd: number } | undefined {
  if (message.length < 17) return undefined;
  const labels: string[] = [];
  let i = 12;
  while (i < message.length && message[i] !== 0) {
    const length = message[i]!;
    labels.push(message.subarray(i + 1, i + 1 + length).toString('latin1'));
    i += length + 1;
  }
  if (i + 5 > message.length) return undefined;
  return { name: labels.join('.').toLowerCase(), qtype: message.readUInt16BE(i + 1), questionEnd: i + 5 };
}

/** The query's id and question, flagged as an authoritative answer, with one record per address (TTL 0). */
function reply(query: Buffer, questionEnd: number, addresses: string[]): Buffer {
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  header.writeUInt16BE(0x8580, 2); // response, authoritative, recursion desired+available, no error
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(addresses.length, 6);
  const records = addresses.map((address) => {
    const data = isIP(address) === 4 ? Buffer.from(address.split('.').map(Number)) : ipv6Bytes(address);
    const record = Buffer.alloc(12);
    record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    record.writeUInt16BE(data.length === 4 ? 1 : 28, 2);
    record.writeUInt16BE(1, 4); // class IN
    record.writeUInt32BE(0, 6); // TTL 0: nothing may cache it
    record.writeUInt16BE(data.length, 10);
    return Buffer.concat([record, data]);
  });
  return Buffer.concat([header, query.subarray(12, questionEnd), ...records]);
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const part = (s: string | undefined) => (s ? s.split(':').map((h) => parseInt(h, 16)) : []);
  const left = part(head);
  const right = part(tail);
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill(0), ...right];
  const bytes = Buffer.alloc(16);
  groups.forEach((g, k) => bytes.writeUInt16BE(g, k * 2));
  return bytes;
}
