/**
 * Struct validation (SPEC §7 `checks: struct`) off the event loop: the R4 schema is compiled and
 * applied in one worker thread (operations/struct-worker.ts), started on first use and kept.
 *
 * Compiling the schema costs 2–5 s of CPU (fhir/validate.ts), and validating is most of the
 * per-line cost of a `validation: on` load. On the event loop, the first `validation: on` load
 * froze every other request for those seconds; in the worker, the loads wait for it and nothing
 * else does (tests/operations/load-validation-worker.test.ts).
 */
import { Worker } from 'node:worker_threads';
import type { Line } from '../streams/lines.ts';
import type { LineOptions, ParsedLine } from './ingest.ts';

export type StructRequest =
  | { id: number; kind: 'lines'; lines: Line[]; options: LineOptions }
  | { id: number; kind: 'resources'; resources: unknown[] };

export type StructReply =
  | { id: number; parsed: ParsedLine[] }
  | { id: number; problems: (string | null)[] }
  | { id: number; error: string };

interface Pending {
  resolve(reply: StructReply): void;
  reject(error: Error): void;
}

let worker: Worker | undefined;
let nextId = 0;
const pending = new Map<number, Pending>();

/** `parseLine` with `struct: true` for each line, in the worker. */
export async function parseLinesChecked(lines: Line[], options: LineOptions): Promise<ParsedLine[]> {
  const reply = await ask({ id: ++nextId, kind: 'lines', lines, options: { ...options, struct: true } });
  if (!('parsed' in reply)) throw new Error('struct validation worker answered lines without parsed lines');
  return reply.parsed;
}

/** `validateStruct` of each resource, in the worker: null when valid, else the message. */
export async function validateStructs(resources: unknown[]): Promise<(string | null)[]> {
  const reply = await ask({ id: ++nextId, kind: 'resources', resources });
  if (!('problems' in reply)) throw new Error('struct validation worker answered resources without problems');
  return reply.problems;
}

function ask(request: StructRequest): Promise<StructReply> {
  const target = running();
  return new Promise<StructReply>((resolve, reject) => {
    // Referenced while it owes an answer (a process waiting for one must not exit or idle past it).
    if (pending.size === 0) target.ref();
    pending.set(request.id, { resolve, reject });
    target.postMessage(request);
  }).then((reply) => {
    if ('error' in reply) throw new Error(`struct validation failed: ${reply.error}`);
    return reply;
  });
}

function running(): Worker {
  if (worker) return worker;
  const started = new Worker(new URL('./struct-worker.ts', import.meta.url));
  // Idle, it must not keep the process alive (see ask for while it works).
  started.unref();
  started.on('message', (reply: StructReply) => {
    const waiting = pending.get(reply.id);
    pending.delete(reply.id);
    if (pending.size === 0) started.unref();
    waiting?.resolve(reply);
  });
  started.on('error', (error: unknown) => stopped(started, error instanceof Error ? error : new Error(String(error))));
  started.on('exit', (code) => stopped(started, new Error(`struct validation worker exited (code ${code})`)));
  worker = started;
  return started;
}

/** The worker died: whatever it was asked fails, and the next request starts a new one. */
function stopped(which: Worker, error: Error): void {
  if (worker !== which) return;
  worker = undefined;
  for (const waiting of pending.values()) waiting.reject(error);
  pending.clear();
}
