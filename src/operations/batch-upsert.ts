/**
 * `PUT /` with an array of resources (SPEC §4): every item is checked first, then all are upserted
 * in one transaction. One bad item → 400 naming its index, and nothing is written.
 */
import type { OperationContext } from './context.ts';
import { prepareForWrite, present } from './server-types.ts';
import { checkResource, fromRow, toStored, type Json, type Resource } from '../fhir/resource.ts';
import { isKnownType } from '../fhir/types.ts';
import { invalid, OperationOutcomeError } from '../fhir/outcome.ts';
import { writeResource } from '../storage/resources.ts';
import { takeVersion } from '../storage/versions.ts';

export async function batchUpsert(ctx: OperationContext, body: unknown): Promise<Resource[]> {
  if (!Array.isArray(body)) throw invalid('PUT / expects an array of resources, each with resourceType and id');
  // SPEC §10: every item is held (parsed, prepared, written, returned) until the transaction ends;
  // 24 MB of small resources took the server to 530 MB. Bulk data goes through $load.
  const max = ctx.config.batchMaxResources;
  if (body.length > max) {
    throw new OperationOutcomeError('too-large', `PUT / takes at most ${max} resources (FHIRHOSE_BATCH_MAX_RESOURCES), got ${body.length}; load more with POST /$load`);
  }
  const items: { type: string; id: string; stored: Record<string, Json> }[] = [];
  const seen = new Set<string>();
  for (const [index, item] of body.entries()) {
    const where = `item ${index}`;
    const resource = checkResource(item, where);
    const type = resource.resourceType;
    if (typeof type !== 'string') throw invalid(`${where}: resourceType is required`);
    if (!isKnownType(type)) throw invalid(`${where}: unknown resourceType "${type}"`);
    if (typeof resource.id !== 'string') throw invalid(`${where}: id is required`);
    const key = `${type}/${resource.id}`;
    if (seen.has(key)) throw invalid(`${where}: ${key} appears more than once in the batch`);
    seen.add(key);
    items.push({ type, id: resource.id, stored: await prepareForWrite(type, toStored(resource), `${where} (${key})`) });
  }
  const rows = await ctx.sql.begin(async (tx) => {
    const out = [];
    const version = await takeVersion(tx); // one txid and lastUpdated for the whole batch: one transaction
    for (const item of items) out.push((await writeResource(tx, item.type, item.id, item.stored, { version })).row);
    return out;
  });
  for (const type of new Set(items.map((i) => i.type))) ctx.changed(type);
  return rows.map((row) => present(fromRow(row)));
}
