/**
 * The protocol steps and checks of the reference Bulk Data client (smart-on-fhir/bulk-data-client,
 * `src/lib/BulkDataClient.ts`, `FileDownload.ts`, `streams/ParseNDJSON.ts`), restated here because
 * that client is not published on npm (`npm view bulk-data-client` → 404) and only the npm
 * registry is reachable from this project's machines. What it does, in order:
 *
 * 1. `GET <fhirUrl>/metadata` without credentials (its getCapabilityStatement);
 * 2. kick-off: `GET` with the parameters in the query, or `POST` with a Parameters body when
 *    `patient` is given, `Accept: application/fhir+json`, `Prefer: respond-async, handling=lenient`
 *    (lenient is its default), plus the configured request headers (our Basic credentials); it
 *    fails unless the answer has a `Content-Location`;
 * 3. polls that URL with `Accept: application/json`: 200 ends it, and the body must have an
 *    `output` array that is not empty; 202 goes on after Retry-After/10 clamped to 1–10 s
 *    (`parseInt(X-Progress)` is the percent); any other status is an error;
 * 4. downloads every output, deleted and error file with `Accept-Encoding: gzip, deflate, br,
 *    identity` and no automatic decompression (it decompresses by Content-Encoding itself),
 *    credentials when `requiresAccessToken`; a status ≥ 400 fails the download;
 * 5. parses each file as NDJSON: every non-empty line JSON, `resourceType` the item's `type`
 *    (`Bundle` for deleted, `OperationOutcome` for error), no line over 1,000,000 characters, and
 *    for output files exactly `count` resources.
 *
 * The downloads go through `node:http` (as its `got` does), so nothing is decoded for us.
 */
import { expect } from 'bun:test';
import http from 'node:http';
import zlib from 'node:zlib';

export interface ReferenceClientOptions {
  /** `http://host:port` (or with `/fhir`), no trailing slash. */
  fhirUrl: string;
  /** The `requests.headers` of the client's config: our Basic credentials. */
  headers: Record<string, string>;
  level: 'system' | 'patient' | { group: string };
  /** Kick-off parameters sent in the query (GET). */
  query?: Record<string, string>;
  /** `patient` ids: the client then POSTs a Parameters body. */
  patients?: string[];
  lenient?: boolean;
  timeoutMs?: number;
}

export interface DownloadedFile {
  exportType: 'output' | 'deleted' | 'error';
  type: string;
  url: string;
  count?: number;
  contentType: string | undefined;
  contentEncoding: string | undefined;
  resources: Record<string, any>[];
}

export interface ReferenceRun {
  capabilityStatement: Record<string, any>;
  statusUrl: string;
  manifest: Record<string, any>;
  /** The 202 answers seen while polling: their X-Progress percent and Retry-After. */
  polls: { percent: number; retryAfter: string | null }[];
  files: DownloadedFile[];
}

export async function referenceClientExport(options: ReferenceClientOptions): Promise<ReferenceRun> {
  const base = options.fhirUrl + '/';
  const metadata = await fetch(new URL('metadata', base), { headers: { accept: 'application/fhir+json' } });
  expect(metadata.status).toBe(200);
  const capabilityStatement = (await metadata.json()) as Record<string, any>;

  const path = options.level === 'system' ? '$export' : options.level === 'patient' ? 'Patient/$export' : `Group/${options.level.group}/$export`;
  const url = new URL(path, base);
  const headers: Record<string, string> = {
    ...options.headers,
    accept: 'application/fhir+json',
    prefer: `respond-async${options.lenient === false ? '' : ', handling=lenient'}`,
  };
  let kickOff: Response;
  if (options.patients?.length) {
    const parameter: Record<string, unknown>[] = Object.entries(options.query ?? {}).map(([name, value]) => ({ name, valueString: value }));
    for (const id of options.patients) parameter.push({ name: 'patient', valueReference: { reference: `Patient/${id}` } });
    kickOff = await fetch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ resourceType: 'Parameters', parameter }) });
  } else {
    for (const [name, value] of Object.entries(options.query ?? {})) url.searchParams.append(name, value);
    kickOff = await fetch(url, { headers });
  }
  const kickOffBody = await kickOff.text();
  expect({ status: kickOff.status, body: kickOffBody }).toMatchObject({ status: 202 });
  const statusUrl = kickOff.headers.get('content-location');
  expect(statusUrl).toBeTruthy();

  const polls: ReferenceRun['polls'] = [];
  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  let manifest: Record<string, any> | undefined;
  while (!manifest) {
    if (Date.now() > deadline) throw new Error(`${statusUrl} did not complete in time`);
    const res = await fetch(statusUrl!, { headers: { ...options.headers, accept: 'application/json' } });
    if (res.status === 200) {
      manifest = (await res.json()) as Record<string, any>;
      expect(Array.isArray(manifest.output)).toBe(true);
      expect(manifest.output.length).toBeGreaterThan(0);
      break;
    }
    expect({ status: res.status, body: await res.text() }).toMatchObject({ status: 202 });
    const percent = Number.parseInt((res.headers.get('x-progress') ?? '').trim(), 10);
    const retryAfter = res.headers.get('retry-after');
    polls.push({ percent, retryAfter });
    // the client's own pace: Retry-After/10 clamped to 1-10 s; polled faster here (the server must not mind)
    await Bun.sleep(100);
  }

  const files: DownloadedFile[] = [];
  for (const exportType of ['output', 'deleted', 'error'] as const) {
    for (const item of (manifest[exportType] ?? []) as { type: string; url: string; count?: number }[]) {
      files.push(await downloadFile(item, exportType, manifest.requiresAccessToken ? options.headers : {}));
    }
  }
  return { capabilityStatement, statusUrl: statusUrl!, manifest, polls, files };
}

async function downloadFile(item: { type: string; url: string; count?: number }, exportType: DownloadedFile['exportType'], headers: Record<string, string>): Promise<DownloadedFile> {
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get(item.url, { headers: { ...headers, 'accept-encoding': 'gzip, deflate, br, identity' } }, resolve).on('error', reject);
  });
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  if ((res.statusCode ?? 0) >= 400) throw new Error(`download of ${item.url} answered ${res.statusCode}: ${raw.toString()}`);
  const encoding = res.headers['content-encoding'];
  const text = (encoding === 'gzip' ? zlib.gunzipSync(raw) : encoding === 'deflate' ? zlib.inflateSync(raw) : encoding === 'br' ? zlib.brotliDecompressSync(raw) : raw).toString('utf8');
  const expected = exportType === 'output' ? item.type : exportType === 'deleted' ? 'Bundle' : 'OperationOutcome';
  const resources: Record<string, any>[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    expect(line.length).toBeLessThanOrEqual(1_000_000);
    const json = JSON.parse(line) as Record<string, any>;
    expect(json.resourceType).toBe(expected);
    resources.push(json);
  }
  if (exportType === 'output' && item.count !== undefined) expect(resources.length).toBe(item.count);
  return { exportType, type: item.type, url: item.url, count: item.count, contentType: res.headers['content-type'], contentEncoding: encoding, resources };
}
