/**
 * What the console (SPEC §14) shows: one page of import sessions and export jobs, newest first,
 * filtered by state, each read through the same views the JSON routes answer with
 * (BulkImportStatus, the export's status). Paging: `?page=` from 1, 20 jobs a page; `?state=` one
 * of JOB_STATES. Bad values are a 400 naming the parameter and the value.
 */
import type { OperationContext } from './context.ts';
import { ROOT_CLIENT } from '../auth/auth.ts';
import { OperationOutcomeError, invalid } from '../fhir/outcome.ts';
import { JOB_STATES, listJobHeads, type ListState } from '../storage/console-list.ts';
import { readImportSession } from './import.ts';
import { readExportView, type ExportView } from './export-view.ts';
import type { SessionView } from './import-view.ts';

export const PAGE_SIZE = 20;
/** Far enough for any real history; a bigger number is a typo or a probe. */
const MAX_PAGE = 100_000;

export type ConsoleItem = { kind: 'import'; view: SessionView } | { kind: 'export'; view: ExportView };

export interface ConsoleQuery {
  page: number;
  state?: ListState;
}

export interface ConsoleList extends ConsoleQuery {
  items: ConsoleItem[];
  total: number;
  pages: number;
  pageSize: number;
}

export function parseConsoleQuery(query: URLSearchParams): ConsoleQuery {
  for (const name of query.keys()) {
    if (name !== 'page' && name !== 'state') throw invalid(`Console: unknown parameter "${name}" (known: page, state)`);
  }
  const pageText = query.get('page') ?? '1';
  const page = Number(pageText);
  if (!/^[1-9]\d{0,5}$/.test(pageText) || page > MAX_PAGE) throw invalid(`Console: page "${pageText}" must be a whole number from 1 to ${MAX_PAGE}`);
  const state = query.get('state') ?? '';
  if (state === '' || state === 'all') return { page };
  if (!(JOB_STATES as readonly string[]).includes(state)) throw invalid(`Console: state "${state}" is not one of all, ${JOB_STATES.join(', ')}`);
  return { page, state: state as ListState };
}

export async function consoleList(ctx: OperationContext, query: ConsoleQuery): Promise<ConsoleList> {
  const caller = ctx.caller?.clientId;
  const { heads, total } = await listJobHeads(ctx.sql, {
    state: query.state,
    limit: PAGE_SIZE,
    offset: (query.page - 1) * PAGE_SIZE,
    ...(caller !== undefined && caller !== ROOT_CLIENT && { clientId: caller }),
  });
  const items = await Promise.all(heads.map((h) => consoleItem(ctx, `${h.kind}:${h.id}`)));
  return {
    ...query,
    items: items.filter((i): i is ConsoleItem => i !== undefined),
    total,
    pages: Math.max(1, Math.ceil(total / PAGE_SIZE)),
    pageSize: PAGE_SIZE,
  };
}

/**
 * One job by its console key: `import:<session id>` or `export:<id>`. Undefined when it is gone,
 * or is another client's export; a failed read (the database busy or away) throws, so a live view
 * tries again rather than taking the job for gone.
 */
export async function consoleItem(ctx: OperationContext, key: string): Promise<ConsoleItem | undefined> {
  const colon = key.indexOf(':');
  const kind = key.slice(0, colon);
  const id = key.slice(colon + 1);
  if (kind === 'export') {
    const view = await readExportView(ctx, id);
    return view && { kind, view };
  }
  if (kind !== 'import' || !/^[A-Za-z0-9\-.]{1,64}$/.test(id)) return undefined;
  try {
    return { kind, view: await readImportSession(ctx, id) };
  } catch (err) {
    if (err instanceof OperationOutcomeError && err.code === 'not-found') return undefined;
    throw err;
  }
}

/** The console's state of an item, for the filter. */
export function stateOf(item: ConsoleItem): string {
  return item.view.status;
}
