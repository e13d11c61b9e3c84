/**
 * `GET /console` (SPEC §14): one server-rendered page. Everything shown goes through JSX, which
 * escapes text and attributes by construction; the client script (console/script.ts) updates it
 * with textContent only. The forms are in forms.tsx, the jobs' markup here (JobCard), the same
 * markup the script clones from the <template> for a job it has not seen yet.
 */
import type { ConsoleList } from '../../operations/console.ts';
import { JOB_STATES } from '../../storage/console-list.ts';
import { IMPORT_ACTIONS, type Card, type Cell } from './cards.ts';
import { ExportForm, ImportForm, SqlForm } from './forms.tsx';

// no ">" or quotes here: JSX escapes the text of <style> like any text
const STYLE = `
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:12px;max-width:1280px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:16px 0 6px}h3{font-size:15px;margin:0 0 6px}
section,form.box{border:1px solid #ccc;border-radius:6px;padding:10px;margin:8px 0;min-width:0}
.forms{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:8px}
.bar{height:12px;background:#ddd;border-radius:6px;overflow:hidden}.bar div{height:100%;background:#2a7}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.items{width:100%;border-collapse:collapse;font-size:12px;display:block;overflow-x:auto}.items td,.items th{border-bottom:1px solid #eee;padding:2px 6px;text-align:left;vertical-align:top}
.items td{white-space:pre-wrap;overflow-wrap:anywhere;min-width:8ch}.items td:first-child{min-width:22ch}.items td:last-child{min-width:26ch}.items a{display:block}
label{display:block;margin:4px 0 2px}label.inline{display:inline}
textarea,input,select{font:inherit;max-width:100%}textarea,input:not([type]),input[type=url],input[type=password]:not(.secret){width:100%}
button{font:inherit;padding:4px 10px}
a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible,select:focus-visible{outline:3px solid #06c;outline-offset:2px}
nav a{display:inline-block;padding:4px 8px;margin:2px;border:1px solid #ccc;border-radius:4px;text-decoration:none}nav a[aria-current=page]{background:#06c;color:#fff}
.msg{font-weight:600;word-break:break-word}.err{color:#a00;white-space:pre-wrap;word-break:break-word}.detail{color:#555;font-size:12px;margin:4px 0;word-break:break-word}
.sid{word-break:break-all}
#preview{overflow-x:auto;display:block}#preview td,#preview th{border:1px solid #ddd;padding:2px 6px}
`;

export function ConsolePage(props: { list: ConsoleList; cards: Card[] }) {
  const { list } = props;
  const link = (page: number, state = list.state) => `/console?page=${page}${state ? `&state=${state}` : ''}`;
  const empty: Card = { key: '', kind: 'import', id: '', status: '', label: '', percent: 0, stats: '', detail: '', message: '', head: [], rows: [], actions: IMPORT_ACTIONS };
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
        <div class="forms">
          <ImportForm />
          <ExportForm />
        </div>
        <h2 id="jobs-title">Imports and exports</h2>
        <nav id="states" aria-label="Filter by state">
          {['all', ...JOB_STATES].map((s) => (
            <a href={link(1, s === 'all' ? undefined : (s as ConsoleList['state']))} aria-current={(list.state ?? 'all') === s ? 'page' : undefined}>{s}</a>
          ))}
        </nav>
        <p id="summary" data-total={String(list.total)}>{`${list.total} job${list.total === 1 ? '' : 's'}${list.state ? ` ${list.state}` : ''} · page ${list.page} of ${list.pages}`}</p>
        <template id="job-template"><JobCard card={empty} /></template>
        <div id="jobs" aria-labelledby="jobs-title" data-page={String(list.page)} data-state={list.state ?? ''} data-size={String(list.pageSize)}>
          {props.cards.map((c) => <JobCard card={c} />)}
        </div>
        <nav id="pager" aria-label="Pages">
          {list.page > 1 ? <a href={link(list.page - 1)} rel="prev">← newer</a> : ''}
          {list.page < list.pages ? <a href={link(list.page + 1)} rel="next">older →</a> : ''}
        </nav>
        <SqlForm />
      </body>
    </html>
  );
}

/** One job: an import session or an export (cards.ts says what each shows). */
export function JobCard(props: { card: Card }) {
  const c = props.card;
  return (
    <section class={`job ${c.kind}`} data-key={c.key} data-id={c.id} data-kind={c.kind} data-status={c.status} aria-label={`${c.kind} ${c.id}`}>
      <div class="row">
        <strong class="kind">{c.kind}</strong> <strong class="sid">{c.id}</strong> <span class="status">{c.label}</span>
        <span class="stats">{c.stats}</span>
      </div>
      <div class="bar" role="progressbar" aria-label={`progress of ${c.kind} ${c.id}`} aria-valuemin={0} aria-valuemax={100} aria-valuenow={c.percent}>
        <div style={`width:${c.percent}%`}></div>
      </div>
      <p class="detail">{c.detail}</p>
      <p class="message err">{c.message}</p>
      <table class="items">
        <thead><tr>{c.head.map((h) => <th>{h}</th>)}</tr></thead>
        <tbody>{c.rows.map((r) => <tr>{r.map((cell) => <td>{CellContent(cell)}</td>)}</tr>)}</tbody>
      </table>
      <div class="row actions">
        {c.kind === 'import' ? <label class="inline">Secret <input type="password" class="secret" autocomplete="off" /></label> : ''}
        {c.actions.map((a) => <button type="button" data-action={a}>{a}</button>)}
        <span class="msg answer" role="status"></span>
      </div>
    </section>
  );
}

function CellContent(cell: Cell) {
  if (typeof cell === 'string') return cell;
  return cell.links.map((l) => <a href={l.href} download>{l.text}</a>);
}
