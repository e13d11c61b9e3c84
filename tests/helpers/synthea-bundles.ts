/**
 * The Synthea patient Bundles of tests/fixtures/synthea/bulk-data-server-r4 as plain resources: one per id,
 * `urn:uuid:<id>` references rewritten to `<Type>/<id>` (the shared data README's conversion).
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'bun:test';
import { startTestServer, type TestServer } from './server.ts';

const DIR = path.join(import.meta.dir, '../fixtures/synthea/bulk-data-server-r4');

export interface SyntheaPatient {
  patientId: string;
  resources: Record<string, any>[];
}

export function syntheaBundles(): SyntheaPatient[] {
  const bundles = fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')) as { entry: { resource: Record<string, any> }[] });
  const typeOf = new Map<string, string>();
  for (const b of bundles) for (const e of b.entry) typeOf.set(e.resource.id, e.resource.resourceType);
  const fix = (text: string) => text.replace(/"reference":"urn:uuid:([0-9a-f-]{36})"/g, (m, id: string) => (typeOf.has(id) ? `"reference":"${typeOf.get(id)}/${id}"` : m));
  return bundles.map((b) => {
    const resources = b.entry.map((e) => JSON.parse(fix(JSON.stringify(e.resource))) as Record<string, any>);
    return { patientId: resources.find((r) => r.resourceType === 'Patient')!.id, resources };
  });
}

/** Every resource once (shared Practitioners and Organizations appear in several Bundles). */
export function uniqueResources(patients: SyntheaPatient[]): Record<string, any>[] {
  const seen = new Map<string, Record<string, any>>();
  for (const p of patients) for (const r of p.resources) seen.set(`${r.resourceType}/${r.id}`, r);
  return [...seen.values()];
}

/** A test server holding every resource of the Synthea bundles, loaded with one `PUT /`. */
export async function syntheaServer(): Promise<{ server: TestServer; patients: SyntheaPatient[]; all: Record<string, any>[] }> {
  const server = await startTestServer();
  const patients = syntheaBundles();
  const all = uniqueResources(patients);
  const put = await server.request('/', { method: 'PUT', json: all });
  expect(put.status).toBe(200);
  return { server, patients, all };
}
