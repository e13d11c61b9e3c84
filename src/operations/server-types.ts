/**
 * Rules for the server's own types, applied on every write path of the REST API and `PUT /`:
 * Client secrets are hashed before they are stored and never returned; AccessPolicy engines are
 * checked; BulkImportStatus rows belong to `$import` (SPEC §8: only actions move a session).
 */
import { hashSecret, isHashed } from '../auth/secrets.ts';
import { OperationOutcomeError, invalid } from '../fhir/outcome.ts';
import { isPlainObject, type Json, type Resource } from '../fhir/resource.ts';

export async function prepareForWrite(type: string, resource: Record<string, Json>, where: string): Promise<Record<string, Json>> {
  switch (type) {
    case 'Client': {
      const secret = resource.secret;
      if (secret !== undefined && typeof secret !== 'string') throw invalid(`${where}: Client.secret must be a string`);
      if (typeof secret === 'string' && !isHashed(secret)) return { ...resource, secret: await hashSecret(secret) };
      return resource;
    }
    case 'AccessPolicy': {
      if (resource.engine !== 'allow' && resource.engine !== 'matcho') {
        throw invalid(`${where}: AccessPolicy.engine must be "allow" or "matcho", got ${JSON.stringify(resource.engine ?? null)}`);
      }
      if (resource.engine === 'matcho' && !isPlainObject(resource.matcho)) throw invalid(`${where}: an AccessPolicy with engine "matcho" needs a "matcho" object`);
      return resource;
    }
    case 'BulkImportStatus':
      throw new OperationOutcomeError('not-allowed', `${where}: BulkImportStatus is managed by POST /$import actions and cannot be written directly`);
    default:
      return resource;
  }
}

/** What the API shows: a Client's secret (even hashed) never leaves the server. */
export function present(resource: Resource): Resource {
  if (resource.resourceType === 'Client' && 'secret' in resource) {
    const { secret: _secret, ...rest } = resource;
    return rest as Resource;
  }
  return resource;
}
