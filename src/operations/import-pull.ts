/**
 * `POST /$import` with a `Parameters` body (SPEC §13): either the files are listed as `input`
 * parts, or `exportUrl` names a finished Bulk Data manifest (`exportType: static`) whose output
 * files become the inputs. Either way: one ordinary import session (import.ts).
 *
 * Credentials of a manifest go to the manifest's own origin; its files get them only when the
 * manifest says `requiresAccessToken: true` and they are on that same origin.
 */
import type { OperationContext } from './context.ts';
import { startImport, type ImportAnswer, type ImportNotifier } from './import.ts';
import { parseImportParameters } from './import-parameters.ts';
import { readManifest } from './import-manifest.ts';
import { parseImportRequest } from './import-request.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';

export async function importFromParameters(ctx: OperationContext, runner: ImportNotifier, body: unknown): Promise<ImportAnswer> {
  const parsed = parseImportParameters(body);
  if (parsed.kind === 'inputs') return startImport(ctx, runner, parsed.request, { credential: parsed.credential });
  const origin = new URL(parsed.exportUrl).origin;
  const credential = parsed.authorization === undefined ? undefined : { origins: [origin], authorization: parsed.authorization };
  const files = await readManifest(parsed.exportUrl, { limits: ctx.config.sources, importRoot: ctx.config.importRoot, credential });
  if (files.deleted > 0) {
    throw new OperationOutcomeError('unprocessable', `The export manifest lists ${files.deleted} "deleted" file${files.deleted === 1 ? '' : 's'}; applying deletes is not supported yet, so nothing was imported`);
  }
  if (files.inputs.length === 0) throw new OperationOutcomeError('unprocessable', 'The export manifest lists no output files: nothing to import');
  const request = parseImportRequest({
    ...parsed.fields,
    inputSource: parsed.fields.inputSource ?? origin + new URL(parsed.exportUrl).pathname,
    inputs: files.inputs,
  });
  return startImport(ctx, runner, request, { credential: files.requiresAccessToken ? credential : undefined });
}
