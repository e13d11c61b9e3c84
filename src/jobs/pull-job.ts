/**
 * The `import-pull` job kind (SPEC §13 `exportType: dynamic`): one per pulling session. It kicks
 * off the other server's export, polls it, and turns the finished manifest (with its `link`
 * pages) into the session's inputs, which the `import-input` kind then reads like any others.
 *
 * Never two kick-offs: `kicking-off` is committed before the request leaves, the status URL as
 * soon as it answered. A server killed while polling leaves `polling` + the status URL, and
 * whoever claims the job next polls the same export. A server killed between sending the kick-off
 * and recording its answer leaves `kicking-off`: the next claim cannot know whether an export
 * started there, and fails the session saying so instead of starting a second one.
 */
import { OperationOutcomeError } from '../fhir/outcome.ts';
import { readManifest } from '../operations/import-manifest.ts';
import { inputSizes } from '../operations/import-sizes.ts';
import { insertInputs, lockSession, readSession, writeSession, type NewInput } from '../storage/import-sessions.ts';
import {
  IMPORT_PULL, lockPull, markKickingOff, markListed, markNotStarted, readPull, recordRemoteProgress, recordStatusUrl,
  type PullRow,
} from '../storage/import-pulls.ts';
import { readCredential, setCredentialForFiles } from '../storage/import-credentials.ts';
import { publish } from '../storage/notify.ts';
import { displayUrl } from '../streams/outbound.ts';
import { completeSession } from './import-finish.ts';
import { failPull, releaseRemote } from './pull-finish.ts';
import { kickOffRemote, pollRemote, scrub, sleep, type RemoteOptions } from './pull-remote.ts';
import type { Job, JobKind, KindDeps } from './job.ts';

/** Busy or failed polls in a row before the pull gives up (each waits its Retry-After). */
export const POLL_FAILURES_MAX = 10;

export function importPullKind(deps: KindDeps): JobKind<{ session: string }> {
  const { sql, config, log } = deps;
  return {
    name: IMPORT_PULL,
    groupLimit: config.importConcurrency,
    describe: (job) => `import ${job.payload.session} (pull)`,
    async run(job, signal) {
      const id = job.payload.session;
      const found = await readSession(sql, id);
      let pull = await readPull(sql, id);
      if (!found || !pull || pull.state === 'listed') return 'done';
      if (found.session.resource.status !== 'active') return 'stopped';
      const stored = await readCredential(sql, id);
      const options: RemoteOptions = { limits: config.sources, credential: stored && { origins: stored.origins, authorization: stored.authorization }, signal };
      const shown = displayUrl(new URL(pull.exportUrl));
      const fail = async (message: string) => {
        const safe = scrub(message, options.credential);
        if (await job.commit(async (tx) => ({ value: await failPull(tx, id, safe) }))) log(`import ${id}: active → error (${safe})`);
        return 'stopped' as const;
      };
      try {
        if (pull.state === 'kicking-off') {
          return await fail(`The kick-off of ${shown} was sent by a server that stopped before it recorded the answer; an export may have started there, so it is not sent again. Start a new pull.`);
        }
        if (pull.state === 'new') {
          const kicked = await kickOff(job, pull, options, log);
          if (typeof kicked === 'string') return await fail(kicked);
          if (kicked === undefined) return 'stopped';
          pull = kicked;
        }
        const manifest = await poll(job, pull, options, log);
        if (typeof manifest === 'string') return await fail(manifest);
        const listed = await list(job, pull, manifest, options);
        if (typeof listed === 'string') return await fail(listed);
        if (listed === undefined) return 'stopped';
        log(`import ${id}: ${shown} listed ${listed} file${listed === 1 ? '' : 's'}`);
        if (listed === 0 && (await completeSession(sql, id))) {
          log(`import ${id}: active → done (nothing changed)`);
          await releaseRemote({ statusUrl: pull.statusUrl!, credential: stored }, config, log, id);
        }
        return 'done';
      } catch (error) {
        if (signal.aborted) return 'stopped';
        throw error;
      }
    },
  };

  /**
   * `kicking-off` committed first, then the request (not cut by the signal: an answer cut off
   * would leave an export there we do not know of), then its answer. A string: why it failed.
   */
  async function kickOff(job: Job<{ session: string }>, pull: PullRow, options: RemoteOptions, log: (line: string) => void): Promise<PullRow | string | undefined> {
    const id = job.payload.session;
    const go = await job.commit(async (tx) => {
      const row = await lockPull(tx, id);
      const session = await lockSession(tx, id);
      if (!row || row.state !== 'new' || session?.resource.status !== 'active') return { value: false };
      await markKickingOff(tx, id);
      return { value: true };
    });
    if (!go) return undefined;
    log(`import ${id}: kicking off ${displayUrl(new URL(pull.exportUrl))}${pull.since ? ` (_since ${pull.since})` : ''}`);
    const answer = await kickOffRemote(pull.exportUrl, pull.kickoff, { ...options, signal: undefined });
    if (answer.kind === 'started') {
      await job.commit(async (tx) => ({ value: await recordStatusUrl(tx, id, answer.statusUrl) }));
      return { ...pull, state: 'polling', statusUrl: answer.statusUrl };
    }
    if (answer.kind === 'refused') await job.commit(async (tx) => ({ value: await markNotStarted(tx, id) }));
    return answer.message;
  }

  /** Polls until the manifest (returned), a failure (its message), or the signal (throws). */
  async function poll(job: Job<{ session: string }>, pull: PullRow, options: RemoteOptions, log: (line: string) => void): Promise<Record<string, unknown> | string> {
    const id = job.payload.session;
    let progress = pull.remoteProgress;
    let failures = 0;
    for (;;) {
      const answer = await pollRemote(pull.statusUrl!, options);
      if (answer.kind === 'done') return answer.manifest;
      if (answer.kind === 'failed') return answer.message;
      if (answer.kind === 'transient') {
        failures++;
        if (failures >= POLL_FAILURES_MAX) return `The export's status URL failed ${failures} times in a row; the last: ${answer.message}`;
        log(`import ${id}: polling failed (${answer.message}); again in ${Math.round(answer.waitMs / 1000)} s`);
      } else {
        failures = 0;
        const now = answer.progress ?? null;
        if (now !== progress) {
          await job.commit(async (tx) => ({ value: await recordRemoteProgress(tx, id, now ?? '') }));
          progress = now;
        }
      }
      await sleep(answer.waitMs, options.signal);
    }
  }

  /**
   * The manifest's files (every `link` page read) as inputs: outputs, then `deleted` files, all in
   * ONE fenced transaction with the source's transactionTime. The number of files, a failure's
   * message, or undefined when the session is no longer active.
   */
  async function list(job: Job<{ session: string }>, pull: PullRow, first: Record<string, unknown>, options: RemoteOptions): Promise<number | string | undefined> {
    const id = job.payload.session;
    let files;
    try {
      files = await readManifest(pull.statusUrl!, { limits: config.sources, importRoot: config.importRoot, credential: options.credential, signal: options.signal, first });
    } catch (error) {
      if (error instanceof OperationOutcomeError) return error.message;
      throw error;
    }
    const inputs: NewInput[] = [
      ...files.inputs.map((f) => ({ type: f.type, url: f.url, storage: 'url', source: f.url })),
      ...files.deleted.map((f) => ({ type: f.type, url: f.url, storage: 'deleted', source: f.url })),
    ];
    const sizes = await inputSizes(inputs.map((i) => i.source), config.sources, files.requiresAccessToken ? options.credential : undefined);
    for (const [i, size] of sizes.entries()) if (size !== undefined) inputs[i]!.bytesTotal = size;
    return job.commit(async (tx) => {
      const row = await lockSession(tx, id);
      if (!row || row.resource.status !== 'active') return { value: undefined };
      await insertInputs(tx, id, inputs);
      await markListed(tx, id, { transactionTime: files.transactionTime, requiresAccessToken: files.requiresAccessToken });
      await setCredentialForFiles(tx, id, files.requiresAccessToken);
      await writeSession(tx, id, { ...row.resource, sized: inputs.length > 0 && sizes.every((s) => s !== undefined && s > 0) });
      await publish(tx, 'fhirhose_jobs', id);
      return { value: inputs.length };
    });
  }
}
