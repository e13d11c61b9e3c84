/**
 * Data unlike the project's Synthea files, for `npm run bench -- --data-dir DIR --data mix`: what
 * another FHIR server's export looks like. Every resource carries meta.versionId, lastUpdated,
 * source, profile and tag (as HAPI writes them); narrative with quotes, `&amp;`, backslashes and
 * tabs; names in many scripts; extensions; deep QuestionnaireResponses; contained resources; 5 %
 * of patients with a DocumentReference holding 30–60 KB of random bytes as base64 (a scanned
 * PDF: it does not compress, see pdfBytes); lines ending in CRLF. Deterministic (a fixed seed).
 *
 *   bun scripts/bench/gen-hapi-style.ts DIR [patients=20000]
 *
 * 20,000 patients: 166,000 resources, 206 MB in 5 files.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) throw new Error('usage: bun scripts/bench/gen-hapi-style.ts DIR [patients=20000]');
fs.mkdirSync(dir, { recursive: true });
let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
const pick = <T,>(a: T[]) => a[Math.floor(rnd() * a.length)]!;
// An attachment's bytes: a PDF's or JPEG's are compressed, so evenly spread. AES-CTR with a fixed
// key, not rnd(), whose top byte is not (per 100,000 draws each value came 237–611 times, and zlib
// level 1 shrank its base64 by 23 %, while base64 of gzipped bytes shrinks by 1 %).
const keystream = crypto.createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
const pdfBytes = (n: number) => keystream.update(Buffer.alloc(n));
const names = ['José', 'Zoë', 'Łukasz', '张伟', 'Søren', 'O\'Brien', 'Müller', 'Nguyễn', 'Ελένη', 'Алексей'];
const meta = (i: number) => ({ versionId: String(1 + (i % 7)), lastUpdated: `2024-0${1 + (i % 9)}-1${i % 10}T10:2${i % 10}:33.${100 + (i % 900)}+00:00`, source: `#hapi-${i % 97}`, profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab'], tag: [{ system: 'http://example.org/tags', code: `batch-${i % 13}` }] });
const div = (s: string) => `<div xmlns="http://www.w3.org/1999/xhtml"><p class="x">${s} said "hello" &amp; left\\right\ttab</p></div>`;
const out: Record<string, string[]> = { Patient: [], Observation: [], DocumentReference: [], QuestionnaireResponse: [], Encounter: [] };
const N = Number(process.argv[3] ?? 20_000);
for (let i = 0; i < N; i++) {
  const pid = `pat-${i}`;
  const name = pick(names);
  out.Patient!.push(JSON.stringify({ resourceType: 'Patient', id: pid, meta: meta(i), text: { status: 'generated', div: div(name) },
    extension: [{ url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', extension: [{ url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2106-3', display: 'White' } }, { url: 'text', valueString: 'White' }] }],
    identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: `MRN${i}` }], active: true, name: [{ use: 'official', family: name, given: [pick(names), 'Q.'] }], gender: pick(['male', 'female', 'other']), birthDate: `19${50 + (i % 50)}-0${1 + (i % 9)}-1${i % 10}`,
    address: [{ line: [`${i} Rue de l'Église`, 'Apt "B"'], city: 'Zürich', postalCode: '8001', country: 'CH' }] }));
  for (let k = 0; k < 6; k++) {
    out.Observation!.push(JSON.stringify({ resourceType: 'Observation', id: `obs-${i}-${k}`, meta: meta(i + k), status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
      code: { coding: [{ system: 'http://loinc.org', code: `${2000 + k}-${k}`, display: `Glucose [Mass/volume] in ${name}'s "serum"` }], text: 'Glucose — µg/dL' },
      subject: { reference: `Patient/${pid}` }, effectiveDateTime: `2023-05-0${1 + k}T08:00:00+02:00`, issued: '2023-05-01T09:00:00.000+02:00',
      valueQuantity: { value: Math.round(rnd() * 20000) / 100, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
      ...(k % 3 === 0 ? { component: [{ code: { text: 'systolic' }, valueQuantity: { value: 120 + k } }, { code: { text: 'diastolic' }, valueQuantity: { value: 80 - k } }] } : {}),
      ...(k === 5 ? { note: [{ text: 'Line one\nline two\twith "quotes" and \\ backslash\u0001' }] } : {}) }));
  }
  if (i % 20 === 0) {
    const data = pdfBytes(30000 + Math.floor(rnd() * 30000)).toString('base64');
    out.DocumentReference!.push(JSON.stringify({ resourceType: 'DocumentReference', id: `doc-${i}`, meta: meta(i), status: 'current', subject: { reference: `Patient/${pid}` }, content: [{ attachment: { contentType: 'application/pdf', data, title: `Résumé de ${name}.pdf` } }] }));
  }
  if (i % 4 === 0) {
    const item = (d: number): unknown => ({ linkId: `q${d}`, text: `Question ${d} «${name}»`, answer: [{ valueString: `ans ${d}`, ...(d < 6 ? { item: [item(d + 1)] } : {}) }] });
    out.QuestionnaireResponse!.push(JSON.stringify({ resourceType: 'QuestionnaireResponse', id: `qr-${i}`, meta: meta(i), status: 'completed', subject: { reference: `Patient/${pid}` }, item: [item(0), item(1)] }));
  }
  out.Encounter!.push(JSON.stringify({ resourceType: 'Encounter', id: `enc-${i}`, meta: meta(i), status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: { reference: `Patient/${pid}` }, period: { start: '2023-05-01T08:00:00+02:00', end: '2023-05-01T09:00:00+02:00' }, contained: [{ resourceType: 'Location', id: 'loc', name: 'Clinique "Sainte-Anne"' }], location: [{ location: { reference: '#loc' } }] }));
}
for (const [type, lines] of Object.entries(out)) fs.writeFileSync(path.join(dir, `${type}.ndjson`), lines.join('\r\n') + '\r\n');
console.log(Object.entries(out).map(([t, l]) => `${t} ${l.length}`).join(', '));
