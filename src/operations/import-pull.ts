/**
 * `POST /$import` with a `Parameters` body (SPEC §13): either the files are listed as `input`
 * parts, or `exportUrl` names another server's export:
 *
 * - `exportType: static`: the URL is a finished manifest; its files become the inputs now;
 * - `exportType: dynamic` (the default): a session is created with no inputs and an
 *   `import-pull` job (jobs/pull-job.ts) that kicks off the export there, polls it and turns its
 *   manifest's files into the session's inputs. `_since: latest` stands for the source's
 *   `transactionTime` of the last finished pull with the same kick-off (incremental sync); with
 *   none, the pull is a full one (README "Migrate from another FHIR server").
 *
 * Either way: one ordinary import session (import.ts). Credentials go to the export's own origin;
 * its files get them only when the manifest says `requiresAccessToken: true` and they are on that
 * same origin.
 */
import type { OperationContext } from './context.ts';
import { startImport, type ImportAnswer, type ImportNotifier } from './import.ts';
import { parseImportParameters, type ParametersImport } from './import-parameters.ts';
import { readManifest } from './import-manifest.ts';
import { parseImportRequest } from './import-request.ts';
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { checkDestination } from '../streams/outbound.ts';
import type { SourceCredential } from '../storage/import-credentials.ts';
import { IMPORT_PULL, insertPull, lastPulledTransactionTime, pullJobKey } from '../storage/import-pulls.ts';
import { insertJob } from '../storage/jobs.ts';

export async function importFromParameters(ctx: OperationContext, runner: ImportNotifier, body: unknown): Promise<ImportAnswer> {
  const parsed = parseImportParameters(body);
  if (parsed.kind === 'inputs') return startImport(ctx, runner, parsed.request, { credential: parsed.credential });
  const origin = new URL(parsed.exportUrl).origin;
  const authorization = parsed.authorization ?? ctx.config.sourceAuthorization[origin];
  const credential = authorization === undefined ? undefined : { origins: [origin], authorization };
  if (parsed.kind === 'pull') return startPull(ctx, runner, parsed, credential);
  const files = await readManifest(parsed.exportUrl, { limits: ctx.config.sources, importRoot: ctx.config.importRoot, credential });
  if (files.inputs.length === 0 && files.deleted.length === 0) throw new OperationOutcomeError('unprocessable', 'The export manifest lists no output files: nothing to import');
  const request = parseImportRequest({
    ...parsed.fields,
    inputSource: parsed.fields.inputSource ?? origin + new URL(parsed.exportUrl).pathname,
    inputs: files.inputs.length > 0 ? files.inputs : [{ url: parsed.exportUrl }],
  });
  if (files.inputs.length === 0) request.inputs = [];
  return startImport(ctx, runner, request, {
    credential: files.requiresAccessToken ? credential : undefined,
    // SPEC §13: deletes after the outputs (jobs/import-deletes.ts waits for them)
    extraInputs: files.deleted.map((d) => ({ type: d.type, url: d.url, storage: 'deleted', source: d.url })),
  });
}

async function startPull(
  ctx: OperationContext,
  runner: ImportNotifier,
  parsed: Extract<ParametersImport, { kind: 'pull' }>,
  credential: SourceCredential | undefined,
): Promise<ImportAnswer> {
  const url = new URL(parsed.exportUrl);
  // refused now, with no session, rather than when the job first fetches it
  await checkDestination(url, ctx.config.sources, (what) => `Cannot pull from "exportUrl": ${what}`).catch((error: unknown) => {
    if (error instanceof OperationOutcomeError && error.code === 'forbidden') throw error;
  });
  const sourceKey = sourceKeyOf(parsed.exportUrl, parsed.kickoff);
  const kickoff = [...parsed.kickoff];
  let since = kickoff.find(([n]) => n === '_since')?.[1] ?? url.searchParams.get('_since') ?? undefined;
  if (parsed.sinceLatest) {
    since = await lastPulledTransactionTime(ctx.sql, sourceKey);
    if (since !== undefined) kickoff.push(['_since', since]);
  }
  // the request's own fields checked like any import's; its inputs come from the manifest later
  const request = { ...parseImportRequest({ ...parsed.fields, inputSource: parsed.fields.inputSource ?? url.origin + url.pathname, inputs: [{ url: parsed.exportUrl }] }), inputs: [] };
  const answer = await startImport(ctx, runner, request, {
    credential,
    prepare: async (tx, id) => {
      await insertPull(tx, id, { exportUrl: parsed.exportUrl, sourceKey, kickoff: { params: kickoff }, since });
      await insertJob(tx, { kind: IMPORT_PULL, key: pullJobKey(id), grp: id, payload: { session: id } });
    },
  });
  const from = parsed.sinceLatest ? (since === undefined ? ' (_since latest: no earlier finished pull, so a full one)' : ` (_since latest = ${since})`) : '';
  ctx.log(`import ${answer.session.id}: pulling ${url.origin}${url.pathname}${from}`);
  return answer;
}

/**
 * What "the same exportUrl" means for `_since: latest`: the kick-off URL and parameters without
 * `_since`, parameters sorted, so the order they were given in does not matter.
 */
export function sourceKeyOf(exportUrl: string, kickoff: [string, string][]): string {
  const url = new URL(exportUrl);
  const params: [string, string][] = [...url.searchParams.entries(), ...kickoff].filter(([n]) => n !== '_since');
  params.sort((a, b) => (a[0] === b[0] ? a[1].localeCompare(b[1]) : a[0].localeCompare(b[0])));
  url.search = '';
  url.hash = '';
  return `${url.href}?${params.map(([n, v]) => `${n}=${v}`).join('&')}`;
}
