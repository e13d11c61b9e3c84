/**
 * The server's memory while it loads (SPEC §9: under 300 MB, not growing with the source). JSC
 * collects the garbage of bulk work late: each line read, parsed and written again leaves its
 * strings and objects behind, several times the line's size, and big strings live outside the
 * heap JSC's schedule looks at. Two `$import` inputs at once of data from another server (30–60 KB
 * base64 attachments next to small Observations, scripts/bench/gen-hapi-style.ts) took the server
 * to 295–337 MB before a collection came, though the batches alive at any time were a few MB.
 *
 * `relieveMemory()`, called between batches by `$load` and `$import` (and between `$export`'s
 * file chunks: rows of 12 MB that do not compress took it to 333 MB), runs a full collection when
 * the process is above SOFT_LIMIT. Measured on that import (2 rounds each, server CPU s / peak):
 * never 6.7–7.5 s / 283–307 MB; after every batch 7.4–9.0 s / 187–192 MB; above 200 MB only
 * 6.9–7.5 s / 223–239 MB. At most one collection per COLLECT_EVERY_MS, so a server that really
 * holds that much (many loads at once) spends a few per cent of a core on them, not more.
 */
const MB = 1024 * 1024;
const SOFT_LIMIT = 200 * MB;
/** Reading the RSS costs ~13 µs (/proc): at most once per this many ms. */
const CHECK_EVERY_MS = 20;
/** A full collection costs ~2–20 ms: at most one per this many ms, however much is alive. */
const COLLECT_EVERY_MS = 250;

let nextCheck = 0;
let nextCollect = 0;

export function relieveMemory(): void {
  const now = performance.now();
  if (now < nextCheck || now < nextCollect) return;
  nextCheck = now + CHECK_EVERY_MS;
  if (process.memoryUsage.rss() <= SOFT_LIMIT) return;
  Bun.gc(true);
  nextCollect = performance.now() + COLLECT_EVERY_MS;
}
