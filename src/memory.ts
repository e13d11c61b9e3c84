/**
 * The server's memory while it loads (SPEC §9: under 300 MB, not growing with the source). JSC
 * collects the garbage of bulk work late: each line read, parsed and written again leaves its
 * strings and objects behind, several times the line's size, and big strings live outside the
 * heap JSC's schedule looks at. Two `$import` inputs at once of data from another server (30–60 KB
 * base64 attachments next to small Observations, scripts/bench/gen-hapi-style.ts) took the server
 * to 295–337 MB before a collection came, though the batches alive at any time were a few MB.
 *
 * `relieveMemory()`, called between batches by `$load` and `$import` (and between `$export`'s
 * file chunks: rows of 12 MB that do not compress took it to 333 MB; and per pull of a `$dump`:
 * 8 fast clients took it to 290–350 MB), runs a full collection when the process is above
 * SOFT_LIMIT. Measured on that import (2 rounds each, server CPU s / peak): never 6.7–7.5 s /
 * 283–307 MB; after every batch 7.4–9.0 s / 187–192 MB; above 200 MB only 6.9–7.5 s / 223–239 MB.
 * At most one collection per COLLECT_EVERY_MS up to URGENT_LIMIT, so a server that really holds
 * that much (many loads at once) spends a few per cent of a core on them; past it, memory comes
 * first, since SPEC §9's 300 MB is near.
 *
 * A collection is run only once the process has grown by GROWTH since the last one left it, and
 * takes at most a MAX_SHARE of the thread's time: a process whose memory is live, not garbage (the
 * test runner, which holds every test's server in one process, sat at 270–310 MB), ran a full
 * collection of 40–50 ms at every check, and a 140 MB upload took 60 s instead of 2.
 */
const MB = 1024 * 1024;
const SOFT_LIMIT = 200 * MB;
/** Reading the RSS costs ~13 µs (/proc): at most once per this many ms. */
const CHECK_EVERY_MS = 20;
/** A full collection costs ~2–20 ms: at most one per this many ms below URGENT_LIMIT. */
const COLLECT_EVERY_MS = 250;

/**
 * Above this, a collection at every check (each CHECK_EVERY_MS at most): rows of 12 MB that do not
 * compress, read by two COPYs at once, leave tens of MB of garbage per 250 ms (each COPY message,
 * its socket chunks, its line), and tests/operations/export-big-rows.test.ts saw 250–304 MB in
 * 8 runs with COLLECT_EVERY_MS alone; with this, 235–272 MB in 6. `$import` of the Synthea mix and
 * of HAPI-style data, A/B: server CPU 3.16 vs 3.17 s and 3.89 vs 3.96 s (BENCHMARKS.md).
 */
const URGENT_LIMIT = 230 * MB;
/** What the process must have grown since the last collection left it for another to be worth it. */
const GROWTH = 16 * MB;
/** The most of the thread's time collections take: after one of d ms, the next waits d / MAX_SHARE. */
const MAX_SHARE = 0.2;

let nextCheck = 0;
let lastCollect = -Infinity;
/** The RSS the last collection left, lowered by any later check that reads less. */
let floor = 0;

export function relieveMemory(): void {
  const now = performance.now();
  if (now < nextCheck) return;
  nextCheck = now + CHECK_EVERY_MS;
  const rss = process.memoryUsage.rss();
  if (rss < floor) floor = rss;
  if (rss <= SOFT_LIMIT || rss - floor < GROWTH) return;
  if (rss <= URGENT_LIMIT && now - lastCollect < COLLECT_EVERY_MS) return;
  Bun.gc(true);
  lastCollect = performance.now();
  nextCheck = now + Math.max(CHECK_EVERY_MS, (lastCollect - now) / MAX_SHARE);
  floor = process.memoryUsage.rss();
}
