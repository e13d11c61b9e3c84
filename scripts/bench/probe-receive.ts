/**
 * What receiving `$dump`'s binary COPY costs Bun, with no decoding, splicing or HTTP: every type's
 * `COPY (select id, txid, ts, resource …) TO STDOUT (format binary)` of a data set, one table after
 * another on one connection, read three ways, round by round, and the bytes counted:
 *
 * - `pgjs`: postgres.js through src/storage/copy-out.ts (`reuseBuffer`), as `$dump` reads;
 * - `bun`: a bare `Bun.connect` socket speaking the protocol itself (startup, cleartext password
 *   as the embedded PostgreSQL asks, simple queries), each payload copied into one 1 MiB buffer;
 * - `bun-nap`: the same, but after a socket read under 64 KiB the socket is paused for 1 ms, so
 *   that PostgreSQL's 8 KiB sends pile up in the kernel and are read in fewer, bigger reads.
 *
 * Prints per round this process's CPU seconds (and of it kernel), the wall time, and for the bare
 * socket the number of reads and their mean size.
 *
 *   bun scripts/bench/probe-receive.ts [rows=200000] [mix|small|patients] [rounds=4]
 */
import { startServer, benchSql } from './common.ts';
import { dataSet, type DataSetName } from './data.ts';
import { fillTables } from './raw.ts';
import { connect, ident } from '../../src/storage/db.ts';
import { copyOut } from '../../src/storage/copy-out.ts';
import { tableOf } from '../../src/fhir/types.ts';

const rows = Number(process.argv[2] ?? 200_000);
const name = (process.argv[3] ?? 'mix') as DataSetName;
const rounds = Number(process.argv[4] ?? 4);
const NAP_BELOW = 64 * 1024;

const server = await startServer({});
const admin = benchSql(server.databaseUrl);
const sql = connect(server.databaseUrl, { max: 2, applicationName: 'fhirhose-bench-probe' });
try {
  const data = await dataSet(name, rows, []);
  const types = data.types.map((t) => t.type);
  await fillTables(admin, server.databaseUrl, data.types);
  const statement = (type: string) => `copy (select id, txid, ts, resource from ${ident(tableOf(type))}) to stdout (format binary)`;

  const viaPostgresJs = async () => {
    let bytes = 0;
    for (const type of types) {
      for await (const chunk of await copyOut(sql, statement(type), { reuseBuffer: true })) bytes += chunk.length;
    }
    return { bytes, reads: 0 };
  };

  const ways = [
    ['pgjs', viaPostgresJs],
    ['bun', () => viaBareSocket(server.databaseUrl, types.map(statement), 0)],
    ['bun-nap', () => viaBareSocket(server.databaseUrl, types.map(statement), 1)],
  ] as const;
  for (let round = 0; round < rounds; round++) {
    for (const [way, run] of ways) {
      const before = process.cpuUsage();
      const started = performance.now();
      const { bytes, reads } = await run();
      const cpu = process.cpuUsage(before);
      const perRead = reads > 0 ? `  reads ${reads}, mean ${Math.round(bytes / reads)} B` : '';
      console.log(`round ${round} ${way.padEnd(8)} ${(bytes / 1e6).toFixed(1)} MB  cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (kernel ${(cpu.system / 1e6).toFixed(2)})  wall ${((performance.now() - started) / 1000).toFixed(2)} s${perRead}`);
    }
  }
} finally {
  await sql.end();
  await admin.end();
  await server.stop();
}

function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** The statements one after another on a bare socket; resolves with the COPY payload bytes. */
async function viaBareSocket(databaseUrl: string, statements: string[], napMs: number): Promise<{ bytes: number; reads: number }> {
  const url = new URL(databaseUrl);
  const queue = [...statements];
  const target = Buffer.allocUnsafe(1 << 20);
  let at = 0, bytes = 0, reads = 0;
  let pending: Buffer | null = null;
  let napping = false;
  let settle!: (result: { bytes: number; reads: number }) => void;
  let fail!: (err: Error) => void;
  const done = new Promise<{ bytes: number; reads: number }>((resolve, reject) => { settle = resolve; fail = reject; });
  const socket = await Bun.connect({
    hostname: url.hostname,
    port: Number(url.port),
    socket: {
      data(s, chunk) {
        reads++;
        if (napMs > 0 && chunk.length < NAP_BELOW && !napping) {
          napping = true;
          s.pause();
          setTimeout(() => { napping = false; s.resume(); }, napMs);
        }
        const buf: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
        pending = null;
        let p = 0;
        while (p + 5 <= buf.length) {
          const length = buf.readUInt32BE(p + 1);
          if (p + 1 + length > buf.length) break;
          const kind = buf[p]!;
          if (kind === 0x64) { // CopyData
            if (at + length - 4 > target.length) at = 0;
            at += buf.copy(target, at, p + 5, p + 1 + length);
            bytes += length - 4;
          } else if (kind === 0x52 && buf.readUInt32BE(p + 5) === 3) { // AuthenticationCleartextPassword
            s.write(message('p', Buffer.from(decodeURIComponent(url.password) + '\0')));
          } else if (kind === 0x52 && buf.readUInt32BE(p + 5) !== 0) {
            fail(new Error('probe-receive speaks only cleartext password authentication'));
          } else if (kind === 0x45) { // ErrorResponse
            fail(new Error(buf.toString('utf8', p + 5, p + 1 + length)));
          } else if (kind === 0x5a) { // ReadyForQuery
            const next = queue.shift();
            if (next === undefined) { s.end(); settle({ bytes, reads }); }
            else s.write(message('Q', Buffer.from(next + '\0')));
          }
          p += 1 + length;
        }
        if (p < buf.length) pending = Buffer.from(buf.subarray(p));
      },
      error(_s, err) { fail(err); },
    },
  });
  const params = Buffer.from(`user\0${decodeURIComponent(url.username)}\0database\0${url.pathname.slice(1)}\0\0`);
  const startup = Buffer.alloc(8);
  startup.writeUInt32BE(params.length + 8, 0);
  startup.writeUInt32BE(196608, 4); // protocol 3.0
  socket.write(Buffer.concat([startup, params]));
  return done;
}
