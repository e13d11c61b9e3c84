/**
 * The Synthea data in `../shared` (beside the repository, as on the developers' machines and in
 * CI). Tests that need more than tests/fixtures skip cleanly when it is absent.
 */
import fs from 'node:fs';
import path from 'node:path';

const CANDIDATES = [path.resolve(import.meta.dir, '../../../shared/data/synthea'), '/work/shared/data/synthea'];

/** The synthea folder, or undefined when no copy of shared/ is reachable. */
export const SYNTHEA: string | undefined = CANDIDATES.find((dir) => fs.existsSync(dir));

/** A path below sample-bulk-fhir-datasets (e.g. '10-patients'), or a path that does not exist. */
export function sampleDataset(relative: string): string {
  return path.join(SYNTHEA ?? '/nonexistent-shared', 'sample-bulk-fhir-datasets', relative);
}
