/**
 * The Hono app: middleware order, the route table, the one error handler (STYLE §1–3).
 * Every route exists at `/` and under `/fhir` (SPEC §1). Handlers parse, authorize (middleware),
 * call an operation and render its result.
 */
import { Hono, type Context } from 'hono';
import type { Caller, OperationContext } from './operations/context.ts';
import type { Auth } from './auth/auth.ts';
import { readBody } from './http/body.ts';
import { renderError, respond } from './http/respond.ts';
import { batchUpsert } from './operations/batch-upsert.ts';
import { capabilityStatement } from './operations/metadata.ts';
import {
  createResource, history, readOne, readOneVersion, removeResource, updateResource,
} from './operations/crud.ts';
import { search } from './operations/search.ts';
import { load } from './operations/load.ts';
import { isUpload, loadUpload } from './operations/upload.ts';
import { OperationOutcomeError, notFound } from './fhir/outcome.ts';
import { dump } from './operations/dump.ts';
import { dumpSql, dumpSqlRequest } from './operations/dump-sql.ts';
import { bulkGate, bulkSlots, downloadLimits } from './http/bulk-gate.ts';
import { priority } from './http/priority.ts';
import { renderMetrics } from './operations/metrics.ts';
import { observeRequests } from './http/observe.ts';
import { consoleRoutes } from './http/console/routes.tsx';
import { eventsOf } from './logging.ts';
import { importAction, listImportSessions, readImportSession, type ImportNotifier } from './operations/import.ts';
import { isParameters } from './operations/import-parameters.ts';
import { importFromParameters } from './operations/import-pull.ts';
import { abortImport, importStatus } from './operations/import-status.ts';
import { deleteExportJob, exportDownload, exportStatus, kickOff, type ExportCaller } from './operations/export.ts';
import type { ExportLevel } from './operations/export-request.ts';

export interface AppDeps {
  ctx: OperationContext;
  auth: Auth;
  version: string;
  /** The job runner: nudged when an operation created work. */
  imports: ImportNotifier;
  /** The $export runner, woken by a kick-off. */
  exports: { wake(): void };
}

/** What the auth middleware hands the routes. */
type Env = { Variables: { caller: Caller } };

/** Status and file URLs of $export: any authenticated client may call them; the operation checks ownership. */
const EXPORT_OWNED = /^(\/fhir)?\/\$export-(status|file)\//;

export function createApp(deps: AppDeps): Hono {
  const { auth } = deps;
  const server = deps.ctx;
  const body = (c: Context) => readBody(c, server.config.bodyLimit);
  const resourceBody = (c: Context) => readBody(c, server.config.bodyLimit, { keepNumbers: true });
  // SPEC §10: bulk routes use the bulk pools and take a slot of the bulk cap (http/bulk-gate.ts)
  const bulkServer: OperationContext = { ...server, sql: server.pools?.bulk ?? server.sql };
  const { config } = server;
  const turns = priority(); // interactive requests before bulk streams (http/priority.ts)
  const streaming = {
    slowReader: { bytesPerSec: config.slowReaderBytesPerSec, windowMs: config.slowReaderWindowMs },
    log: server.log,
    priority: turns,
  };
  const gate = bulkGate(bulkSlots({ concurrency: config.bulkConcurrency, queue: config.bulkQueue, queueWaitMs: config.bulkQueueWaitMs }), streaming);
  // $export files: slots of their own (a file, no connection) and the same slow-reader cut (SPEC §10)
  const downloadGate = bulkGate(bulkSlots(downloadLimits(config.downloadConcurrency)), streaming);
  // The operations' context of one request: the server's (or the bulk pools'), with the authenticated caller.
  const ctx = (c: Context<Env>): OperationContext => ({ ...server, caller: c.get('caller') });
  const bulk = (c: Context<Env>): OperationContext => ({ ...bulkServer, caller: c.get('caller') });
  const api = new Hono<Env>({ strict: false });

  api.get('/health', (c) => c.json({ status: 'ok' }));
  api.use('*', turns.track);

  api.use('*', async (c, next) => {
    const open = c.req.path.replace(/^\/fhir(?=\/)/, '');
    // GET /metadata without credentials, as FHIR clients (the Bulk Data client) fetch it (SPEC §3)
    if (open === '/health' || open === '/fhir/health' || (open === '/metadata' && c.req.method === 'GET')) return next();
    // Bun passes its server as the env: the peer address, for the failed-login limiter
    const address = (c.env as { requestIP?(r: Request): { address: string } | null } | undefined)?.requestIP?.(c.req.raw)?.address;
    const clientId = await auth.authenticate(c.req.header('authorization'), address);
    c.set('caller', { clientId });
    if (EXPORT_OWNED.test(c.req.path)) return next();
    const url = new URL(c.req.url);
    await auth.authorize({
      // the path as routed (Hono decodes it), without the /fhir prefix: one policy covers both mounts
      uri: c.req.path.replace(/^\/fhir(?=\/|$)/, '') || '/',
      'request-method': c.req.method.toLowerCase(),
      params: Object.fromEntries(url.searchParams),
      client: { id: clientId },
    });
    return next();
  });

  /** The caller of an export: its id, and which types its policies let it read. */
  const exportCaller = (c: Context<Env>): ExportCaller => {
    const clientId = c.get('caller').clientId;
    return {
      clientId,
      canRead: (type) => auth.authorize({ uri: `/${type}`, 'request-method': 'get', params: {}, client: { id: clientId } }).then(() => true, () => false),
    };
  };
  /** Where status and file URLs point: FHIRHOSE_BASE_URL, else this request's origin and mount. */
  const baseOf = (c: Context) => server.config.baseUrl ?? new URL(c.req.url).origin + (c.req.path.startsWith('/fhir/') ? '/fhir' : '');
  const exportKickOff = (level: ExportLevel) => async (c: Context<Env>) => {
    const url = new URL(c.req.url);
    const base = baseOf(c);
    const post = c.req.method === 'POST';
    const hasBody = post && (c.req.header('content-type') !== undefined || Number(c.req.header('content-length') ?? 0) > 0);
    const input = {
      level,
      groupId: level === 'group' ? c.req.param('id') : undefined,
      method: c.req.method,
      query: url.searchParams,
      body: hasBody ? await body(c) : undefined,
      prefer: c.req.header('prefer'),
      base,
      // the IG: the kick-off URL, without the parameters of a POST
      requestUrl: base + c.req.path.replace(/^\/fhir(?=\/)/, '') + (post ? '' : url.search),
    };
    const { statusUrl, preferenceApplied } = await kickOff(ctx(c), exportCaller(c), input, () => deps.exports.wake());
    return respond(c, 202, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: `Export started; poll ${statusUrl}` }] },
      { 'Content-Location': statusUrl, 'Preference-Applied': preferenceApplied });
  };

  // ---- route table ----------------------------------------------------------------------------
  api.get('/metrics', async (c) => c.text(await renderMetrics(ctx(c)), 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Cache-Control': 'no-store' }));
  consoleRoutes(api, ctx);
  api.get('/metadata', (c) => respond(c, 200, capabilityStatement(new URL(c.req.url).origin, deps.version)));
  api.put('/', async (c) => respond(c, 200, await batchUpsert(ctx(c), await resourceBody(c))));
  api.post('/$import', async (c) => {
    const request = await body(c);
    if (isParameters(request)) {
      // SPEC §13: the Bulk Data async pattern, on a status URL of its own
      const answer = await importFromParameters(ctx(c), deps.imports, request);
      const statusUrl = `${baseOf(c)}/$import-status/${answer.session.id}`;
      return respond(c, 202, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: `Import started; poll ${statusUrl}` }] },
        { 'Content-Location': statusUrl });
    }
    const answer = await importAction(ctx(c), deps.imports, request);
    return respond(c, answer.status, answer.session, answer.headers);
  });
  api.get('/$import-status/:id', async (c) => {
    const answer = await importStatus(ctx(c), c.req.param('id'));
    if (answer.body === undefined) return new Response(null, { status: answer.status, headers: answer.headers });
    return respond(c, 200, answer.body, answer.headers);
  });
  api.delete('/$import-status/:id', async (c) => {
    await abortImport(ctx(c), deps.imports, c.req.param('id'));
    return respond(c, 202, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: 'Import aborted' }] });
  });
  // SPEC §13: an ndjson body is the data itself (operations/upload.ts); JSON/YAML names a source.
  const loadRoute = async (c: Context<Env>) => {
    const type = c.req.param('type');
    const signal = c.req.raw.signal;
    if (!isUpload(c.req.header('content-type'))) {
      if (c.req.method === 'PUT') throw new OperationOutcomeError('unsupported-media', `PUT ${c.req.path} takes an ndjson body (Content-Type application/fhir+ndjson); a JSON or YAML request is sent with POST`);
      return respond(c, 200, await load(bulk(c), await body(c), { type, signal }));
    }
    const upload = { body: c.req.raw.body, query: new URL(c.req.url).searchParams, contentEncoding: c.req.header('content-encoding'), signal };
    return respond(c, 200, await loadUpload(bulk(c), upload, { type }));
  };
  // PUT too: `curl -T file` uploads with PUT unless told -X POST (SPEC §13's example)
  api.on(['POST', 'PUT'], '/$load', gate, loadRoute);
  api.on(['POST', 'PUT'], '/:type/$load', gate, loadRoute);
  api.post('/$dump-sql', gate, async (c) => {
    const request = dumpSqlRequest(await body(c), new URL(c.req.url).searchParams.get('_format'));
    const { body: stream, headers } = await dumpSql(bulk(c), request);
    return new Response(stream, { status: 200, headers });
  });
  // before /:type/:id, which would take "$dump" for an id
  api.get('/:type/$dump', gate, async (c) => {
    const request = { query: new URL(c.req.url).searchParams, acceptEncoding: c.req.header('accept-encoding') };
    const { body: stream, headers } = await dump(bulk(c), c.req.param('type'), request);
    return new Response(stream, { status: 200, headers });
  });
  api.on(['GET', 'POST'], '/$export', exportKickOff('system'));
  api.on(['GET', 'POST'], '/Patient/$export', exportKickOff('patient'));
  api.on(['GET', 'POST'], '/Group/:id/$export', exportKickOff('group'));
  api.get('/$export-status/:id', async (c) => {
    const answer = await exportStatus(ctx(c), exportCaller(c), c.req.param('id'), baseOf(c));
    if (answer.body === undefined) return new Response(null, { status: answer.status, headers: answer.headers });
    return respond(c, 200, answer.body, answer.headers);
  });
  api.delete('/$export-status/:id', async (c) => {
    await deleteExportJob(ctx(c), exportCaller(c), c.req.param('id'));
    return respond(c, 202, { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: 'Export deleted; its files are gone' }] });
  });
  api.get('/$export-file/:id/:name', downloadGate, async (c) => {
    const served = await exportDownload(ctx(c), exportCaller(c), c.req.param('id'), c.req.param('name'), {
      acceptEncoding: c.req.header('accept-encoding'), range: c.req.header('range'), ifRange: c.req.header('if-range'), ifNoneMatch: c.req.header('if-none-match'),
    });
    return new Response(served.body, { status: served.status, headers: served.headers });
  });
  api.get('/BulkImportStatus', async (c) => {
    const sessions = await listImportSessions(ctx(c));
    return respond(c, 200, { resourceType: 'Bundle', type: 'searchset', total: sessions.length, entry: sessions.map((resource) => ({ resource })) });
  });
  api.get('/BulkImportStatus/:id', async (c) => respond(c, 200, await readImportSession(ctx(c), c.req.param('id'))));

  api.get('/:type', async (c) => respond(c, 200, await search(ctx(c), c.req.param('type'), new URL(c.req.url).searchParams, c.req.url)));
  api.post('/:type', async (c) => {
    const created = await createResource(ctx(c), c.req.param('type'), await resourceBody(c));
    return respond(c, 201, created, { Location: `/${created.resourceType}/${created.id}/_history/${created.meta?.versionId}` });
  });
  api.get('/:type/:id', async (c) => respond(c, 200, await readOne(ctx(c), c.req.param('type'), c.req.param('id'))));
  api.put('/:type/:id', async (c) => {
    const { resource, created } = await updateResource(ctx(c), c.req.param('type'), c.req.param('id'), await resourceBody(c));
    return respond(c, created ? 201 : 200, resource);
  });
  api.delete('/:type/:id', async (c) => {
    await removeResource(ctx(c), c.req.param('type'), c.req.param('id'));
    return new Response(null, { status: 204 });
  });
  api.get('/:type/:id/_history', async (c) => respond(c, 200, await history(ctx(c), c.req.param('type'), c.req.param('id'))));
  api.get('/:type/:id/_history/:vid', async (c) =>
    respond(c, 200, await readOneVersion(ctx(c), c.req.param('type'), c.req.param('id'), c.req.param('vid'))));
  // ---------------------------------------------------------------------------------------------

  const app = new Hono({ strict: false });
  app.use('*', observeRequests(eventsOf(deps.ctx.log)));
  app.route('/fhir', api);
  app.route('/', api);
  app.notFound((c) => renderError(c, notFound(`No route for ${c.req.method} ${new URL(c.req.url).pathname}`), deps.ctx.log));
  app.onError((err, c) => renderError(c, err, deps.ctx.log));
  return app;
}
