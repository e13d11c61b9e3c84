/** `GET /metadata`: a CapabilityStatement listing what is implemented. */
import { ALL_TYPES } from '../fhir/types.ts';
import { searchParam, searchParamNames } from '../fhir/search-params.ts';

const BULK = 'http://hl7.org/fhir/uv/bulkdata';
/** The Bulk Data IG's operations (SPEC §12), by the names and definitions its clients look for. */
const EXPORT = { name: 'export', definition: `${BULK}/OperationDefinition/export` };
const PATIENT_EXPORT = { name: 'export', definition: `${BULK}/OperationDefinition/patient-export` };
const GROUP_EXPORT = { name: 'export', definition: `${BULK}/OperationDefinition/group-export` };

export function capabilityStatement(baseUrl: string, version: string): Record<string, unknown> {
  const interaction = ['read', 'vread', 'update', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    instantiates: [`${BULK}/CapabilityStatement/bulk-data`],
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
          EXPORT,
          PATIENT_EXPORT,
          GROUP_EXPORT,
        ],
        resource: ALL_TYPES.map((type) => ({
          type,
          interaction,
          versioning: 'versioned',
          searchParam: [
            { name: '_id', type: 'token' },
            { name: '_lastUpdated', type: 'date' },
            ...searchParamNames(type).map((name) => ({ name, type: searchParam(type, name)!.type })),
          ],
          operation: [
            { name: 'dump', definition: `GET /${type}/$dump` },
            { name: 'load', definition: `POST /${type}/$load` },
            ...(type === 'Patient' ? [PATIENT_EXPORT] : type === 'Group' ? [GROUP_EXPORT] : []),
          ],
        })),
      },
    ],
  };
}
