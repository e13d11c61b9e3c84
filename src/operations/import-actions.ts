/**
 * The action × state table of SPEC §8, as data. Users never set a state; an action moves it, or is
 * refused with 406 and the session is left unchanged. `start` is not here: it creates a session
 * (201) or conflicts with an existing id (409), whatever that session's state.
 */
import type { ImportAction } from './import-request.ts';
import type { SessionResource } from '../storage/import-sessions.ts';
import type { JobState } from '../storage/jobs.ts';

export const SESSION_STATES = ['active', 'paused', 'aborted', 'error', 'done'] as const;
export type SessionState = (typeof SESSION_STATES)[number];

type StateAction = Exclude<ImportAction, 'start'>;

/** For each action: the states it may leave, and the state it leads to. */
const TABLE: Record<StateAction, { from: readonly SessionState[]; to: SessionState }> = {
  pause: { from: ['active'], to: 'paused' },
  resume: { from: ['paused'], to: 'active' },
  // Aborting a paused session works (the Aidbox beta refused it): nothing runs, nothing to stop.
  abort: { from: ['active', 'paused'], to: 'aborted' },
  // force-resume on an active session restarts its workers from the checkpoints: the way out of a
  // session that looks stuck, and harmless otherwise because a replayed batch is an upsert.
  'force-resume': { from: ['active', 'paused', 'error'], to: 'active' },
};

export type Transition = { ok: true; to: SessionState } | { ok: false; message: string };

export function transition(action: StateAction, from: SessionState): Transition {
  const rule = TABLE[action];
  if (rule.from.includes(from)) return { ok: true, to: rule.to };
  return {
    ok: false,
    message: `Cannot ${action} an import session that is ${from}; ${action} applies to ${orList(rule.from)} sessions`,
  };
}

/**
 * What the session's unfinished inputs become with the session's new state. An input that is
 * `done` stays done; one in `error`, or `stopped` because a sibling failed, stays so until a
 * force-resume runs it on.
 */
export function inputStatesFor(action: StateAction): { from: string[]; to: string } {
  switch (action) {
    case 'pause': return { from: ['pending', 'active'], to: 'paused' };
    case 'abort': return { from: ['pending', 'active', 'paused'], to: 'aborted' };
    case 'resume': return { from: ['paused'], to: 'pending' };
    case 'force-resume': return { from: ['active', 'paused', 'error', 'stopped'], to: 'pending' };
  }
}

/**
 * What the session's input jobs become (SPEC §11): only `ready` jobs are claimed. force-resume
 * also ends the current claims, so a worker still running an input commits nothing more and the
 * input is claimable at once, from its checkpoint.
 */
export function jobStatesFor(action: StateAction): { from: JobState[]; to: JobState; handOver?: boolean } {
  switch (action) {
    case 'pause': return { from: ['ready'], to: 'held' };
    case 'abort': return { from: ['ready', 'held'], to: 'cancelled' };
    case 'resume': return { from: ['held'], to: 'ready' };
    case 'force-resume': return { from: ['ready', 'held', 'failed'], to: 'ready', handOver: true };
  }
}

function orList(items: readonly string[]): string {
  return items.length === 1 ? items[0]! : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

/**
 * The session's resource after a move to `to`: active time is accumulated when it leaves
 * `active` (so the rate ignores paused time), and a finish time is set when it ends.
 */
export function moved(resource: SessionResource, to: SessionState, message?: string): SessionResource {
  const now = new Date();
  const next: SessionResource = { ...resource, status: to };
  if (resource.activeSince !== undefined) {
    next.activeMs = (resource.activeMs ?? 0) + Math.max(0, now.getTime() - Date.parse(resource.activeSince));
    delete next.activeSince;
  }
  delete next.message;
  delete next.finishedAt;
  if (to === 'active') next.activeSince = now.toISOString();
  if (to === 'done' || to === 'aborted' || to === 'error') next.finishedAt = now.toISOString();
  if (message !== undefined) next.message = message;
  return next;
}
