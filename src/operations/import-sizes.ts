/**
 * The sizes of a new session's inputs, asked before it starts (SPEC §8 progress): a file's size,
 * or an http(s) source's Content-Length from a HEAD request (through the same confinement and
 * timeouts as the read). Known up front, every input is weighed by its bytes from the first read,
 * so `progress` never has to switch weighting half-way (which made it go backwards).
 * A size that cannot be had (no Content-Length or 0, HEAD refused, a file not there yet) is undefined.
 */
import { stat } from 'node:fs/promises';
import type { SourceLimits } from '../config.ts';
import { fetchConfined, type OriginCredential } from '../streams/outbound.ts';

/** A HEAD that takes longer than this is not waited for: the start answers without that size. */
const HEAD_TIMEOUT_MS = 3000;
/** HEAD requests in flight at once, for sessions of many inputs. */
const PARALLEL = 8;

export async function inputSizes(sources: string[], limits: SourceLimits, credential?: OriginCredential): Promise<(number | undefined)[]> {
  const sizes: (number | undefined)[] = new Array(sources.length).fill(undefined);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < sources.length; i = next++) sizes[i] = await sizeOf(sources[i]!, limits, credential);
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, sources.length) }, worker));
  return sizes;
}

async function sizeOf(source: string, limits: SourceLimits, credential?: OriginCredential): Promise<number | undefined> {
  try {
    if (!/^https?:\/\//i.test(source)) {
      const info = await stat(source);
      return info.isFile() && info.size > 0 ? info.size : undefined;
    }
    const head = { ...limits, connectTimeoutMs: Math.min(limits.connectTimeoutMs, HEAD_TIMEOUT_MS) };
    const { response } = await fetchConfined(new URL(source), head, { method: 'HEAD', describe: (what) => what, credential });
    await response.body?.cancel().catch(() => {});
    const length = response.headers.get('content-length');
    // With a Content-Encoding the bytes read are the decoded ones: that length would not match them.
    if (!response.ok || length === null || !/^\d+$/.test(length) || response.headers.has('content-encoding')) return undefined;
    // 0 is what a server without the size says to a HEAD as often as a real empty file: unknown.
    return Number(length) > 0 ? Number(length) : undefined;
  } catch {
    return undefined;
  }
}
