/** A process's resident memory from /proc/<pid>/status (SPEC §10: memory assertions read /proc). */
import fs from 'node:fs';

/** Current (VmRSS) and peak (VmHWM) resident set of `pid`, in MiB. */
export function rssOf(pid: number): { rss: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** Samples `pid`'s resident set every 50 ms until `stop()`; returns the highest seen, in MiB. */
export function sampleRss(pid: number): { stop(): number } {
  let max = rssOf(pid).rss;
  const timer = setInterval(() => { try { max = Math.max(max, rssOf(pid).rss); } catch { /* exited */ } }, 50);
  return { stop() { clearInterval(timer); try { max = Math.max(max, rssOf(pid).rss); } catch { /* exited */ } return max; } };
}
