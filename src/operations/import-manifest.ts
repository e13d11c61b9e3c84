/**
 * A finished Bulk Data manifest read as the inputs of an import (SPEC §13 "ping and pull",
 * `exportType: static`): every `output` file becomes one input; `link` pages with relation `next`
 * are followed. The manifest is fetched through the same confinement, timeouts and retries as any
 * source (streams/source.ts), with the credential for its own origin; it must be JSON of at most
 * MAX_MANIFEST_BYTES per page.
 */
import type { SourceLimits } from '../config.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { isPlainObject } from '../fhir/resource.ts';
import { isFhirType } from '../fhir/types.ts';
import { openSource } from '../streams/source.ts';
import type { OriginCredential } from '../streams/outbound.ts';

export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
export const MAX_MANIFEST_PAGES = 1000;

export interface ManifestFiles {
  inputs: { type: string; url: string }[];
  transactionTime?: string;
  requiresAccessToken: boolean;
  /** `deleted` files (ndjson of transaction Bundles of DELETEs) with a count above 0 or none given, over all pages. */
  deleted: { type: string; url: string }[];
}

export async function readManifest(
  exportUrl: string,
  options: {
    limits: SourceLimits; importRoot: string; credential?: OriginCredential; signal?: AbortSignal;
    /** The first page, already read (a pull's last poll answered it). */
    first?: Record<string, unknown>;
  },
): Promise<ManifestFiles> {
  const files: ManifestFiles = { inputs: [], requiresAccessToken: false, deleted: [] };
  const seen = new Set<string>();
  let next: string | undefined = exportUrl;
  for (let page = 0; next !== undefined; page++) {
    if (seen.has(next)) break; // a link back to a page already read
    if (page === MAX_MANIFEST_PAGES) throw failed(exportUrl, `it has more than ${MAX_MANIFEST_PAGES} pages of links`);
    seen.add(next);
    const here: string = next;
    const manifest = page === 0 && options.first ? options.first : await readPage(here, options);
    if (page === 0 && typeof manifest.transactionTime === 'string') files.transactionTime = manifest.transactionTime;
    if (manifest.requiresAccessToken === true) files.requiresAccessToken = true;
    if (!Array.isArray(manifest.output)) throw failed(here, '"output" is not an array: is this a finished Bulk Data manifest?');
    for (const [i, entry] of manifest.output.entries()) {
      if (!isPlainObject(entry) || typeof entry.type !== 'string' || typeof entry.url !== 'string') {
        throw failed(here, `output[${i}] must have a string "type" and "url"`);
      }
      if (!isFhirType(entry.type)) throw failed(here, `output[${i}].type "${entry.type}" is not a FHIR R4 resource type`);
      files.inputs.push({ type: entry.type, url: resolveUrl(entry.url, here, `output[${i}].url`) });
    }
    if (Array.isArray(manifest.deleted)) {
      for (const [i, entry] of manifest.deleted.entries()) {
        if (!isPlainObject(entry) || typeof entry.url !== 'string') throw failed(here, `deleted[${i}] must have a string "url"`);
        if (entry.count === 0) continue;
        files.deleted.push({ type: 'Bundle', url: resolveUrl(entry.url, here, `deleted[${i}].url`) });
      }
    }
    next = undefined;
    if (Array.isArray(manifest.link)) {
      const link = manifest.link.find((l) => isPlainObject(l) && l.relation === 'next' && typeof l.url === 'string');
      if (isPlainObject(link)) next = resolveUrl(link.url as string, here, 'link.url');
    }
  }
  return files;
}

async function readPage(
  url: string,
  options: { limits: SourceLimits; importRoot: string; credential?: OriginCredential; signal?: AbortSignal },
): Promise<Record<string, unknown>> {
  if (!/^https?:\/\//i.test(url)) throw failed(url, 'exportUrl must be an http(s):// URL');
  const source = await openSource(url, { ...options, label: 'the export manifest' });
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of source.stream) {
    size += chunk.byteLength;
    if (size > MAX_MANIFEST_BYTES) {
      await source.stream.cancel().catch(() => {});
      throw failed(url, `it is larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw failed(url, 'it is not JSON');
  }
  if (!isPlainObject(value)) throw failed(url, 'it is not a JSON object');
  return value;
}

function resolveUrl(url: string, base: string, where: string): string {
  try {
    const resolved = new URL(url, base);
    if (resolved.protocol !== 'http:' && resolved.protocol !== 'https:') throw new Error('not http(s)');
    return resolved.href;
  } catch {
    throw failed(base, `${where} "${url}" is not an http(s) URL`);
  }
}

function failed(url: string, what: string): OperationOutcomeError {
  let shown = url;
  try {
    const u = new URL(url);
    shown = `${u.protocol}//${u.host}${u.pathname}`;
  } catch { /* shown as given */ }
  return new OperationOutcomeError('bad-gateway', `Cannot read the export manifest ${shown}: ${what}`);
}
