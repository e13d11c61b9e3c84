/**
 * `GET /console` (SPEC §14): one server-rendered page. Everything shown goes through JSX, which
 * escapes text and attributes by construction; the client script (console/script.ts) updates it
 * with textContent only.
 */
import type { SessionView } from '../../operations/import-view.ts';

const STYLE = `
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:12px;max-width:1200px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:16px 0 6px}
section{border:1px solid #ccc;border-radius:6px;padding:10px;margin:8px 0}
.bar{height:12px;background:#eee;border-radius:6px;overflow:hidden}.bar>div{height:100%;background:#2a7}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.inputs{width:100%;border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}.inputs td,.inputs th{border-bottom:1px solid #eee;padding:2px 6px;text-align:left}
textarea,input{font:inherit;max-width:100%}textarea{width:100%}
button{font:inherit;padding:4px 10px}button:focus,a:focus,input:focus,textarea:focus,select:focus{outline:2px solid #06c}
.msg{font-weight:600}.err{color:#a00}
#preview{overflow-x:auto;display:block}#preview td,#preview th{border:1px solid #ddd;padding:2px 6px}
`;

export function ConsolePage(props: { sessions: SessionView[] }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>fhirhose console</title>
        <link rel="icon" href="data:," />
        <style>{STYLE}</style>
        <script src="/console/app.js" defer></script>
      </head>
      <body>
        <h1>fhirhose console</h1>
        <p id="live" role="status">connecting…</p>
        <h2>Start an import</h2>
        <form id="start">
          <label for="start-id">Session id </label><input id="start-id" name="id" />
          <label for="start-urls"> URLs, one per line</label>
          <textarea id="start-urls" name="urls" rows={3}></textarea>
          <button type="submit">Start import</button> <span class="msg" id="start-msg" role="status"></span>
        </form>
        <h2>Import sessions</h2>
        <div class="row">
          <label for="filter">State </label>
          <select id="filter">
            {['all', 'active', 'paused', 'done', 'aborted', 'error'].map((s) => <option value={s}>{s}</option>)}
          </select>
        </div>
        <template id="session-template"><Session session={{ id: '', status: '', inputs: [] } as unknown as SessionView} /></template>
        <div id="sessions">{props.sessions.map((s) => <Session session={s} />)}</div>
        <h2>$dump-sql (read-only)</h2>
        <form id="sql">
          <label for="sql-query">Query</label>
          <textarea id="sql-query" name="query" rows={3}>{"select id, resource->>'gender' as gender from patient limit 20"}</textarea>
          <button type="submit">Preview</button> <span class="msg" id="sql-msg" role="status"></span>
        </form>
        <div class="row" id="downloads"></div>
        <table id="preview"></table>
      </body>
    </html>
  );
}

/** One session: the same markup the script builds for a session it has not seen yet. */
export function Session(props: { session: SessionView }) {
  const s = props.session as SessionView & Record<string, any>;
  return (
    <section class="session" data-id={s.id} data-status={s.status}>
      <div class="row">
        <strong class="sid">{s.id}</strong> <span class="status">{s.status}</span>
        <span class="stats">{stats(s)}</span>
      </div>
      <div class="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round((s.progress ?? 0) * 100)}>
        <div style={`width:${Math.round((s.progress ?? 0) * 100)}%`}></div>
      </div>
      <p class="message err">{s.message ?? ''}</p>
      <table class="inputs">
        <thead><tr><th>input</th><th>state</th><th>read</th><th>imported</th><th>owner / lease</th><th>first errors</th></tr></thead>
        <tbody>
          {(s.inputs ?? []).map((i: Record<string, any>) => (
            <tr>
              <td>{`${i.type ?? ''} ${i.url ?? ''}`}</td><td>{i.status}</td><td>{i.linesRead ?? 0}</td><td>{i.imported ?? 0}</td>
              <td>{i.owner ? `${i.owner} until ${i.leaseUntil}` : ''}</td>
              <td class="errors">{(i.errors ?? []).slice(0, 3).map((e: { line: number; message: string }) => `line ${e.line}: ${e.message}`).join('\n')}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="row actions">
        <label>Secret <input type="password" class="secret" autocomplete="off" /></label>
        {['pause', 'resume', 'abort', 'force-resume'].map((a) => <button type="button" data-action={a}>{a}</button>)}
        <span class="msg answer" role="status"></span>
      </div>
    </section>
  );
}

export function stats(s: Record<string, any>): string {
  const pct = Math.round((s.progress ?? 0) * 1000) / 10;
  const rate = s.rate ? `${Math.round(s.rate)} resources/s` : '';
  const eta = s.etaSeconds !== undefined && s.status === 'active' ? `ETA ${s.etaSeconds} s` : '';
  return [`${pct}%`, `${s.imported ?? 0} imported`, `${s.errorCount ?? 0} errors`, rate, eta].filter(Boolean).join(' · ');
}
