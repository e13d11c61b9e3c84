/**
 * Limits part of `npm run bench` (SPEC §9 last row, §10): many `$dump` clients at once, and slow
 * readers, against the server's default limits; reports the server's peak RSS (target < 300 MB)
 * and the latency of `GET /Patient/<id>` measured meanwhile by one ordinary client.
 *
 * Phases of PHASE_MS each on 5,000 Synthea Patients (~17 MB a dump):
 * - none: the baseline latency of the GETs on the same machine at the same time;
 * - 8 clients (the default bulk cap) running `$dump` after `$dump`;
 * - 50 clients each running `$dump` after `$dump` as fast as they read;
 * - 20 clients reading a `$dump` at 10 KB/s (above FHIRHOSE_SLOW_READER_BYTES_PER_SEC, so kept);
 * - both at once.
 * Each client counts complete dumps, 503s (the bulk cap and its queue) and other failures.
 */
import net from 'node:net';
import path from 'node:path';
import { URL } from 'node:url';
import { block, fillPatients, fmt, type BenchEnv } from './common.ts';

const PATIENTS = 5_000;
const PHASE_MS = 20_000;
const SLOW_BYTES_PER_SEC = 10 * 1024;
/** The clients' `Accept-Encoding`: FHIRHOSE_BENCH_DUMP_ENCODING=gzip, as most HTTP clients send it, for gzipped dumps. */
const ENCODING = process.env.FHIRHOSE_BENCH_DUMP_ENCODING ?? 'identity';

interface Tally { complete: number; refused: number; failed: number; bytes: number }

export async function run(env: BenchEnv): Promise<void> {
  const { print } = env;
  print('## Limits: 50 concurrent $dump clients, 20 slow readers (10 KB/s)');
  print();
  await fillPatients(env.sql, PATIENTS);
  const ids = (await env.sql`select id from patient order by random() limit 200`).map((r) => String(r.id));
  const lines = [`${fmt(PATIENTS)} Synthea Patients; each phase ${PHASE_MS / 1000} s; default limits (bulk cap 8, queue 32 for 10 s, slow readers cut below 4 KB/s over 30 s)`, ''];
  lines.push('phase                      | dumps complete | 503 | failed | MB sent | peak RSS | GET p50 | GET p99 | GET max | GETs');
  const phases = [['none (baseline)', 0, 0], ['8 $dump clients (the cap)', 8, 0], ['50 $dump clients', 50, 0], ['20 readers at 10 KB/s', 0, 20], ['both at once', 50, 20]] as const;
  for (const [name, fast, slow] of phases) {
    env.server.resetPeak();
    const stop = Date.now() + PHASE_MS;
    const tally: Tally = { complete: 0, refused: 0, failed: 0, bytes: 0 };
    const [latencies] = await Promise.all([
      prober(env, ids, stop),
      ...Array.from({ length: fast }, () => fastClient(env, stop, tally)),
      ...Array.from({ length: slow }, () => slowClient(env, stop, tally)),
    ]);
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN;
    lines.push(`${name.padEnd(26)} | ${String(tally.complete).padStart(14)} | ${String(tally.refused).padStart(3)} | ${String(tally.failed).padStart(6)} | ${fmt(tally.bytes / 1e6).padStart(7)} | ${fmt(env.server.peakMb()).padStart(5)} MB | ${fmt(pct(0.5), 1).padStart(4)} ms | ${fmt(pct(0.99), 1).padStart(4)} ms | ${fmt(pct(1), 1).padStart(4)} ms | ${latencies.length}`);
  }
  block(print, lines);
  print();
}

/** `$dump` after `$dump` until the phase ends; every byte read. */
async function fastClient(env: BenchEnv, stop: number, tally: Tally): Promise<void> {
  while (Date.now() < stop) {
    try {
      const res = await fetch(`${env.url}/Patient/$dump`, { headers: { authorization: env.auth, 'accept-encoding': ENCODING } });
      if (res.status === 503) {
        tally.refused++;
        await res.arrayBuffer();
        await Bun.sleep(Math.min(1000, Math.max(0, stop - Date.now()))); // a polite client waits a little
        continue;
      }
      let bytes = 0;
      for await (const chunk of res.body!) bytes += chunk.byteLength;
      tally.bytes += bytes;
      if (res.ok) tally.complete++;
      else tally.failed++;
    } catch {
      tally.failed++;
    }
  }
}

/** One `$dump` read at SLOW_BYTES_PER_SEC over a raw socket until the phase ends (then it leaves). */
function slowClient(env: BenchEnv, stop: number, tally: Tally): Promise<void> {
  const { hostname, port } = new URL(env.url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.write(`GET /Patient/$dump HTTP/1.1\r\nhost: x\r\nauthorization: ${env.auth}\r\naccept-encoding: ${ENCODING}\r\nconnection: close\r\n\r\n`);
    let head = '';
    let counted = false;
    const finish = () => { clearTimeout(timer); socket.destroy(); resolve(); };
    const timer = setTimeout(finish, Math.max(0, stop - Date.now()));
    socket.on('data', (chunk: Buffer) => {
      tally.bytes += chunk.length;
      if (!counted && (head += chunk.toString('latin1', 0, Math.min(chunk.length, 64))).includes('\r\n')) {
        counted = true;
        const status = Number(head.split(' ')[1]);
        if (status === 503) tally.refused++;
        else if (status !== 200) tally.failed++;
      }
      socket.pause();
      setTimeout(() => socket.resume(), (chunk.length * 1000) / SLOW_BYTES_PER_SEC);
    });
    socket.on('close', finish);
    socket.on('error', () => { tally.failed++; finish(); });
  });
}

/** The ordinary client, in a process of its own (probe.ts): its GET latencies in ms. */
async function prober(env: BenchEnv, ids: string[], stop: number): Promise<number[]> {
  const child = Bun.spawn([process.execPath, path.join(import.meta.dir, 'probe.ts'), env.url, env.auth, String(stop - Date.now()), ...ids], { stdout: 'pipe', stderr: 'inherit' });
  const [out, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  if (code !== 0) throw new Error(`the GET prober exited with code ${code}`);
  return JSON.parse(out) as number[];
}
