/**
 * The job kinds one runner claims (SPEC §11). Adding a kind = a module exporting a `JobKind` and
 * one line here; rows with a kind this server does not know are left for servers that do.
 */
import type { JobKind, KindDeps } from './job.ts';
import { importInputKind } from './import-input.ts';
import { validationKind } from './validation.ts';
import { exportKind } from './export-job.ts';
import { importPullKind } from './pull-job.ts';

export function jobKinds(deps: KindDeps): JobKind[] {
  return [importInputKind(deps), validationKind(deps), exportKind(deps), importPullKind(deps)];
}
