/**
 * The families fhirhose exposes on `/metrics` (SPEC §14, README "Console and metrics"). Counters
 * live in one process-wide registry so the HTTP layer and the job runner count into the same
 * series; gauges (jobs, pools) are read from the database at scrape time (`addGauges`).
 */
import { Registry } from './registry.ts';

export const metrics = new Registry();

export const resourcesImported = metrics.counter('fhirhose_resources_imported_total',
  'Resources written by $load and $import, by resource type and operation');
export const resourcesExported = metrics.counter('fhirhose_resources_exported_total', 'Resources written to $export files, by resource type');
export const resourcesDumped = metrics.counter('fhirhose_resources_dumped_total', 'Resources streamed by $dump, by resource type');
export const bytesRead = metrics.counter('fhirhose_source_bytes_read_total', 'Bytes read from $load and $import sources (as fetched, before gunzip)');
export const badLines = metrics.counter('fhirhose_bad_lines_total', 'Source lines refused by $load and $import, by operation');
export const requests = metrics.histogram('fhirhose_http_request_duration_seconds',
  'HTTP requests by method, route pattern and status: count and duration in seconds',
  [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);

/** Adds counts of one operation per resource type. */
export function countImported(operation: '$load' | '$import', counts: Record<string, number>): void {
  for (const [type, n] of Object.entries(counts)) if (n > 0) resourcesImported.inc({ type, operation }, n);
}
