/** Client and AccessPolicy rows, as the auth layer needs them. */
import type { Sql } from './db.ts';
import type { Json } from '../fhir/resource.ts';

export async function clientSecretHash(sql: Sql, clientId: string): Promise<string | undefined> {
  const [row] = await sql`select resource->>'secret' as secret from "client" where id = ${clientId}`;
  return row?.secret ?? undefined;
}

export async function listPolicies(sql: Sql): Promise<{ id: string; resource: Record<string, Json> }[]> {
  const rows = await sql`select id, resource from "accesspolicy" order by id`;
  return rows.map((r) => ({ id: r.id as string, resource: r.resource as Record<string, Json> }));
}
