/**
 * One measurement of `npm run bench` (SPEC §9): the same work done three ways in the same run —
 * raw on one connection (the baseline), raw split over two connections at once (the two-core
 * limit), and through fhirhose — round by round, the order rotating each round so that all three
 * see the same machine load. Prints the rates, fhirhose's ratio to each raw variant, and where the
 * CPU went (PostgreSQL backends, the fhirhose server, the bench process as client).
 */
import { backendsBetween, processSeconds, serverCpu, type RawResult } from './raw.ts';
import { fmt, median, type BenchEnv } from './common.ts';

export interface TrialSpec {
  /** e.g. `$load` */
  op: string;
  rows: number;
  rounds: number;
  /** Untimed, before every run of every variant (e.g. empty the tables). */
  reset?: () => Promise<unknown>;
  /** One untimed run of each variant first (JIT warm-up of server and bench). */
  warmup?: boolean;
  raw1: { label: string; run: () => Promise<RawResult> };
  raw2: { label: string; run: () => Promise<RawResult> };
  ours: { label: string; run: () => Promise<void> };
  /** Targets of SPEC §9: vs the 1-connection baseline, vs the two-core limit. */
  target1: number;
  target2: number;
}

export interface TrialResult {
  raw1: number[];
  raw2: number[];
  ours: number[];
  ratio1: number;
  ratio2: number;
}

interface Cpu { pg: number; server: number; client: number }

export async function trial(env: BenchEnv, spec: TrialSpec): Promise<TrialResult> {
  const { print } = env;
  const seconds = { raw1: [] as number[], raw2: [] as number[], ours: [] as number[] };
  const cpu = { raw1: zero(), raw2: zero(), ours: zero() };
  const runRaw = async (which: 'raw1' | 'raw2', timedRound: boolean) => {
    await spec.reset?.();
    const client = process.cpuUsage();
    const t0 = performance.now();
    const result = await spec[which].run();
    const wall = (performance.now() - t0) / 1000;
    if (result.rows !== spec.rows) throw new Error(`${spec[which].label}: ${result.rows} rows for ${spec.rows}`);
    if (!timedRound) return;
    seconds[which].push(wall);
    cpu[which].pg += result.pg;
    cpu[which].client += cpuOf(process.cpuUsage(client));
  };
  const runOurs = async (timedRound: boolean) => {
    await spec.reset?.();
    const before = await serverCpu(env.sql, env.server.pid);
    const client = process.cpuUsage();
    const t0 = performance.now();
    await spec.ours.run();
    const wall = (performance.now() - t0) / 1000;
    const clientCpu = cpuOf(process.cpuUsage(client));
    const after = await serverCpu(env.sql, env.server.pid);
    if (!timedRound) return;
    seconds.ours.push(wall);
    cpu.ours.pg += backendsBetween(before.backends, after.backends);
    cpu.ours.server += processSeconds(env.server.pid) - before.server;
    cpu.ours.client += clientCpu;
  };
  const order = [() => runRaw('raw1', true), () => runRaw('raw2', true), () => runOurs(true)];
  if (spec.warmup) {
    await runRaw('raw1', false);
    await runRaw('raw2', false);
    await runOurs(false);
  }
  for (let round = 0; round < spec.rounds; round++) {
    for (let i = 0; i < order.length; i++) await order[(round + i) % order.length]!();
  }
  const rounds = spec.rounds;
  const header = `${'resources/s per round'.padEnd(40)} ${Array.from({ length: rounds }, (_, i) => `round ${i + 1}`.padStart(9)).join(' ')}`;
  print(header);
  print(rateLine(spec.raw1.label, spec.rows, seconds.raw1));
  print(rateLine(spec.raw2.label, spec.rows, seconds.raw2));
  print(rateLine(spec.ours.label, spec.rows, seconds.ours));
  const ratio1 = median(seconds.raw1) / median(seconds.ours);
  const ratio2 = median(seconds.raw2) / median(seconds.ours);
  print(ratioLine(`${spec.op} / raw, 1 connection`, ratio1, spec.target1));
  print(ratioLine(`${spec.op} / raw, 2 connections (limit)`, ratio2, spec.target2));
  print(`(raw 2 connections / raw 1 connection: ${fmt(median(seconds.raw1) / median(seconds.raw2), 2)}×)`);
  const per = (n: number) => fmt(n / rounds, 1);
  print(`CPU s per round: raw 1 conn — PostgreSQL ${per(cpu.raw1.pg)}, client ${per(cpu.raw1.client)} (wall ${fmt(median(seconds.raw1), 1)}); ` +
    `raw 2 conns — PostgreSQL ${per(cpu.raw2.pg)}, client ${per(cpu.raw2.client)} (wall ${fmt(median(seconds.raw2), 1)}); ` +
    `${spec.op} — PostgreSQL ${per(cpu.ours.pg)}, server ${per(cpu.ours.server)}, client ${per(cpu.ours.client)} (wall ${fmt(median(seconds.ours), 1)})`);
  return { ...seconds, ratio1, ratio2 };
}

const zero = (): Cpu => ({ pg: 0, server: 0, client: 0 });
const cpuOf = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1e6;

/** One line of a results table: label, then per-round rates, median and best. */
export function rateLine(label: string, rows: number, seconds: number[]): string {
  const rates = seconds.map((s) => rows / s);
  return `${label.padEnd(40)} ${rates.map((r) => fmt(r).padStart(9)).join(' ')}   median ${fmt(median(rates)).padStart(9)}/s   best ${fmt(Math.max(...rates)).padStart(9)}/s`;
}

function ratioLine(label: string, ratio: number, target: number): string {
  return `${label.padEnd(40)} ${fmt(ratio, 2)}× (median times; target ≥ ${target}) ${ratio >= target ? 'OK' : 'BELOW TARGET'}`;
}
