/**
 * Helpers of the $dump / $dump-sql tests: bulk rows via COPY, a raw HTTP/1.1 client that shows the
 * chunked framing (fetch hides whether a body ended cleanly) and can stop reading, and
 * pg_stat_activity probes.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Sql } from '../../src/storage/db.ts';
import { basic, ROOT_SECRET } from '../helpers/server.ts';

const SYNTHEA = path.join(import.meta.dir, '../fixtures/synthea/Patient.000.ndjson');

/** The Synthea fixture Patients, as full resources. */
export function syntheaPatients(): Record<string, unknown>[] {
  return fs.readFileSync(SYNTHEA, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Appends `n` Synthea Patients (stored shape, ids `<prefix><i>`) to `patient` with one COPY. */
export async function copyPatients(sql: Sql, n: number, prefix = 'bulk-'): Promise<void> {
  const stored = syntheaPatients().map(({ id: _id, resourceType: _t, ...rest }) => JSON.stringify(rest).replaceAll('\\', '\\\\'));
  const stream = await sql`copy patient (id, txid, status, resource) from stdin`.writable();
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`${prefix}${i}\t${i + 1}\tcreated\t${stored[i % stored.length]}\n`);
  for (let i = 0; i < lines.length; i += 2000) {
    if (!stream.write(lines.slice(i, i + 2000).join(''))) await new Promise((r) => stream.once('drain', r));
  }
  await new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/** Queries of this test database that are running a COPY (or anything matching `like`). */
export async function running(sql: Sql, like: string): Promise<{ pid: number; state: string; wait_event: string | null }[]> {
  const rows = await sql`select pid, state, wait_event from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and query ilike ${like} and state = 'active'`;
  return rows as unknown as { pid: number; state: string; wait_event: string | null }[];
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  socket: net.Socket;
  /** Body bytes received so far (still chunk-framed when chunked). */
  received(): number;
  /** Resolves when the server closes the connection: the raw body bytes after the headers. */
  ended: Promise<Buffer>;
}

/** A GET over a plain socket, `Connection: close`, root credentials unless headers say otherwise. */
export function rawGet(url: string, pathname: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  const all = { authorization: basic('root', ROOT_SECRET), 'accept-encoding': 'identity', ...headers };
  const head = Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.write(`GET ${pathname} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n${head}connection: close\r\n\r\n`);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let answered = false;
    let bodyStart = -1;
    let endedResolve!: (b: Buffer) => void;
    const ended = new Promise<Buffer>((r) => { endedResolve = r; });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (answered) return;
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      answered = true;
      bodyStart = end + 4;
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const parsed: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        parsed[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine!.split(' ')[1]), headers: parsed, socket, received: () => size - bodyStart, ended });
    });
    socket.on('error', (err) => { if (!answered) reject(err); });
    socket.on('close', () => endedResolve(Buffer.concat(chunks).subarray(Math.max(bodyStart, 0))));
  });
}

/** Decodes `Transfer-Encoding: chunked`; `complete` is whether the terminating 0-size chunk came. */
export function dechunk(raw: Buffer): { body: Buffer; complete: boolean } {
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const lineEnd = raw.indexOf('\r\n', pos);
    if (lineEnd < 0) return { body: Buffer.concat(parts), complete: false };
    const size = parseInt(raw.toString('latin1', pos, lineEnd), 16);
    if (Number.isNaN(size)) return { body: Buffer.concat(parts), complete: false };
    if (size === 0) return { body: Buffer.concat(parts), complete: raw.indexOf('\r\n', lineEnd + 2) === lineEnd + 2 };
    if (lineEnd + 2 + size + 2 > raw.length) {
      parts.push(raw.subarray(lineEnd + 2));
      return { body: Buffer.concat(parts), complete: false };
    }
    parts.push(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
    pos = lineEnd + 2 + size + 2;
  }
}

/**
 * A strict RFC 4180 reader (any one-character delimiter; LF or CRLF line ends). An unquoted empty
 * field reads as null and `""` as the empty string, as PostgreSQL's COPY … CSV reads them.
 */
export function parseCsv(text: string, delimiter: string): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let row: (string | null)[] = [];
  let i = 0;
  while (i < text.length) {
    let value: string | null;
    if (text[i] === '"') {
      let end = i + 1;
      value = '';
      for (;;) {
        const quote = text.indexOf('"', end);
        if (quote < 0) throw new Error(`unterminated quoted field at ${i}`);
        value += text.slice(end, quote);
        if (text[quote + 1] === '"') { value += '"'; end = quote + 2; continue; }
        i = quote + 1;
        break;
      }
    } else {
      let end = i;
      while (end < text.length && text[end] !== delimiter && text[end] !== '\n' && text[end] !== '\r') {
        if (text[end] === '"') throw new Error(`quote inside an unquoted field at ${end}`);
        end++;
      }
      value = end === i ? null : text.slice(i, end);
      i = end;
    }
    row.push(value);
    if (text[i] === delimiter) { i++; continue; }
    if (text[i] === '\r' && text[i + 1] === '\n') i++;
    if (text[i] !== '\n' && i < text.length) throw new Error(`unexpected ${JSON.stringify(text[i])} after a field at ${i}`);
    i++;
    rows.push(row);
    row = [];
  }
  return rows;
}
