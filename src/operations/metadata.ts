/** `GET /metadata`: a CapabilityStatement listing what is implemented. */
import { ALL_TYPES } from '../fhir/types.ts';

export function capabilityStatement(baseUrl: string, version: string): Record<string, unknown> {
  const interaction = ['read', 'vread', 'update', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'fhirhose', version },
    implementation: { description: 'fhirhose: bulk FHIR in and out of PostgreSQL', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['json', 'yaml', 'ndjson'],
    rest: [
      {
        mode: 'server',
        security: { description: 'HTTP Basic with a Client id and secret; AccessPolicy engines allow and matcho' },
        interaction: [{ code: 'batch' }],
        operation: [
          { name: 'dump-sql', definition: 'POST /$dump-sql' },
          { name: 'load', definition: 'POST /$load' },
          { name: 'import', definition: 'POST /$import' },
        ],
        resource: ALL_TYPES.map((type) => ({
          type,
          interaction,
          versioning: 'versioned',
          searchParam: [
            { name: '_id', type: 'token' },
            { name: '_lastUpdated', type: 'date' },
          ],
          operation: [
            { name: 'dump', definition: `GET /${type}/$dump` },
            { name: 'load', definition: `POST /${type}/$load` },
          ],
        })),
      },
    ],
  };
}
