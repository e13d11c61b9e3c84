/**
 * `GET /<Type>/$dump` (SPEC §5): every resource of a type as ndjson, streamed with backpressure
 * from one binary `COPY` (two for a big table, see storage/dump.ts), optionally gzipped. Everything that can fail with a status (unknown
 * type 404, bad parameter 400, PostgreSQL refusing the COPY) fails before the body starts;
 * after that a failure errors the stream, which aborts the chunked response.
 */
import type { OperationContext } from './context.ts';
import { assertType } from './crud.ts';
import { lineWriter } from './dump-lines.ts';
import { resourcesDumped } from '../metrics/fhirhose.ts';
import { parseDateTime, startInstant } from '../fhir/datetime.ts';
import { invalid } from '../fhir/outcome.ts';
import { gzipStream } from '../streams/gzip.ts';
import { relieveMemory } from '../memory.ts';
import { openDump, DUMP_FIELD_COUNT } from '../storage/dump.ts';
import { copyBinaryDecoder } from '../storage/copy-binary.ts';
import { bulkReader, replicaFailure } from './bulk-reader.ts';

export interface DumpParams {
  /** Normalised instant: only resources created after it. */
  since?: string;
  gzip: boolean;
}

export interface DumpResponse {
  body: ReadableStream<Uint8Array>;
  headers: Record<string, string>;
}

export interface DumpRequest {
  query: URLSearchParams;
  acceptEncoding?: string;
}

/** Query parameters and `Accept-Encoding` → validated options; 400 on a bad value. */
export function dumpParams({ query, acceptEncoding }: DumpRequest): DumpParams {
  const since = query.get('_since');
  const gzip = flag(query, 'gzip');
  flag(query, 'fhir'); // accepted: resources are stored in FHIR format already
  return {
    since: since === null ? undefined : normaliseInstant(since),
    gzip: gzip ?? acceptsGzip(acceptEncoding),
  };
}

/** Checks the type (404), then the parameters (400), then opens the COPY; all before any byte. */
export async function dump(ctx: OperationContext, type: string, request: DumpRequest): Promise<DumpResponse> {
  assertType(type);
  const params = dumpParams(request);
  const reader = await bulkReader(ctx);
  // split dumps may take half of the pool they read from: the bulk pool, or the replica's
  const poolSize = ctx.pools && reader === ctx.sql ? ctx.config.bulkPoolSize : ctx.config.poolSize;
  let parts: ReadableStream<Uint8Array>[];
  try {
    parts = await openDump(reader, { type, since: params.since, poolSize });
  } catch (err) {
    throw replicaFailure(ctx, reader, err);
  }
  const lines = ndjson(type, parts, ctx.log);
  const headers: Record<string, string> = { 'Content-Type': 'application/ndjson', 'Cache-Control': 'no-store', Vary: 'Accept-Encoding' };
  if (!params.gzip) return { body: lines, headers };
  return { body: gzipStream(lines), headers: { ...headers, 'Content-Encoding': 'gzip' } };
}

type Read = { done: boolean; value?: Uint8Array };

/**
 * COPY tuples → ndjson lines. Each part (one or two COPYs, see storage/dump.ts) has at most one
 * read outstanding, and a pull returns as soon as some lines are ready, so the client's pace
 * drives every COPY. A failing part cancels the others and errors the stream.
 */
function ndjson(type: string, streams: ReadableStream<Uint8Array>[], log: (line: string) => void): ReadableStream<Uint8Array> {
  const writer = lineWriter(type);
  let dumped = 0; // rows decoded since the counter was last moved (once per pull, not per row)
  const parts = streams.map((stream, index) => ({
    index,
    reader: stream.getReader(),
    decoder: copyBinaryDecoder(DUMP_FIELD_COUNT, (buf: Buffer, fields: Int32Array) => {
      writer.tuple(buf, fields);
      dumped++;
    }),
    pending: undefined as Promise<{ index: number; result: Read }> | undefined,
    done: false,
  }));
  const cancelAll = (reason: unknown) => Promise.all(parts.map((p) => (p.done ? undefined : p.reader.cancel(reason).catch(() => {}))));

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          const active = parts.filter((p) => !p.done);
          if (active.length === 0) return controller.close();
          for (const p of active) p.pending ??= p.reader.read().then((result) => ({ index: p.index, result }));
          let next: { index: number; result: Read };
          try {
            next = await Promise.race(active.map((p) => p.pending!));
          } catch (err) {
            log(`GET /${type}/$dump aborted: ${(err as Error).message ?? String(err)}`);
            await cancelAll(err);
            throw err;
          }
          const part = parts[next.index]!;
          part.pending = undefined;
          if (next.result.done) {
            part.done = true;
            part.decoder.end();
          } else {
            part.decoder.push(next.result.value!);
          }
          const chunks = writer.take();
          if (dumped > 0) resourcesDumped.inc({ type }, dumped);
          dumped = 0;
          for (const chunk of chunks) controller.enqueue(chunk);
          // as `$load`, `$import` and `$export` do: the chunks sent before these are garbage, and
          // with 8 fast clients JSC let them pile up to 290–350 MB (BENCHMARKS.md, limits)
          relieveMemory();
          if (chunks.length > 0) return;
        }
      },
      cancel(reason) {
        return cancelAll(reason).then(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

function flag(query: URLSearchParams, name: string): boolean | undefined {
  const value = query.get(name);
  if (value === null) return undefined;
  if (value === 'true' || value === '') return true;
  if (value === 'false') return false;
  throw invalid(`Parameter ${name} must be true or false, got ${JSON.stringify(value)}`);
}

function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header.split(',').some((part) => {
    const [coding, ...rest] = part.trim().toLowerCase().split(';');
    const q = rest.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return coding === 'gzip' && (q === undefined || Number(q.slice(2)) > 0);
  });
}

/**
 * `_since` as FHIR writes instants (SPEC §5), also a date or a partial dateTime, read as UTC when
 * it names no zone. Returns `YYYY-MM-DDThh:mm:ss[.f]±zone`, safe to inline in SQL.
 */
export function normaliseInstant(raw: string): string {
  const value = parseDateTime(raw);
  if (!value) throw invalid(`Parameter _since must be an instant like 2024-01-31T12:00:00Z, got ${JSON.stringify(raw)}`);
  return startInstant(value);
}
