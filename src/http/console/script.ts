/**
 * The console's one client script, served as `/console/app.js` (no build step, no CDN). It writes
 * data with textContent and createElement only, never innerHTML: ids, URLs, error messages and SQL
 * results come from users.
 */
export const CONSOLE_SCRIPT = `'use strict';
const $ = (sel, root) => (root || document).querySelector(sel);
const el = (tag, text) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); return e; };

function stats(s) {
  const pct = Math.round((s.progress || 0) * 1000) / 10;
  const parts = [pct + '%', (s.imported || 0) + ' imported', (s.errorCount || 0) + ' errors'];
  if (s.rate) parts.push(Math.round(s.rate) + ' resources/s');
  if (s.etaSeconds !== undefined && s.status === 'active') parts.push('ETA ' + s.etaSeconds + ' s');
  return parts.join(' · ');
}

function card(id) {
  for (const c of document.querySelectorAll('#sessions .session')) if (c.dataset.id === id) return c;
  const c = $('#session-template').content.firstElementChild.cloneNode(true);
  c.dataset.id = id;
  $('.sid', c).textContent = id;
  $('#sessions').prepend(c);
  return c;
}

function render(s) {
  const c = card(s.id);
  c.dataset.status = s.status;
  $('.status', c).textContent = s.status;
  $('.stats', c).textContent = stats(s);
  const pct = Math.round((s.progress || 0) * 100);
  $('.bar', c).setAttribute('aria-valuenow', String(pct));
  $('.bar > div', c).style.width = pct + '%';
  $('.message', c).textContent = s.message || '';
  const body = $('tbody', c);
  body.replaceChildren(...(s.inputs || []).map((i) => {
    const tr = el('tr');
    const errors = (i.errors || []).slice(0, 3).map((e) => 'line ' + e.line + ': ' + e.message).join('\\n');
    const cells = [(i.type || '') + ' ' + (i.url || ''), i.status, i.linesRead || 0, i.imported || 0, i.owner ? i.owner + ' until ' + i.leaseUntil : '', errors];
    cells.forEach((v, n) => { const td = el('td', v); if (n === 5) td.className = 'errors'; tr.append(td); });
    return tr;
  }));
  filter();
}

function filter() {
  const want = $('#filter').value;
  for (const c of document.querySelectorAll('#sessions .session')) c.hidden = want !== 'all' && c.dataset.status !== want;
}

async function answer(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body.resourceType === 'OperationOutcome') return res.status + ': ' + (body.message || (body.issue && body.issue[0] && body.issue[0].diagnostics) || '');
    if (body.resourceType === 'BulkImportStatus') { render(body); return res.status + ': session ' + body.id + ' is ' + body.status; }
  } catch (e) { /* not JSON */ }
  return res.status + ': ' + text.slice(0, 200);
}

async function post(path, body) {
  return fetch(path, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(body) });
}

document.addEventListener('click', async (ev) => {
  const button = ev.target.closest('button[data-action]');
  if (!button) return;
  const c = button.closest('.session');
  const out = $('.answer', c);
  const action = button.dataset.action;
  // confirmed in the page (no native dialog): the first press arms, the second acts
  if (button.dataset.armed !== 'yes') {
    for (const b of c.querySelectorAll('button[data-action]')) delete b.dataset.armed;
    button.dataset.armed = 'yes';
    out.textContent = 'Press ' + action + ' again to confirm';
    return;
  }
  delete button.dataset.armed;
  const body = { id: c.dataset.id, action };
  const secret = $('.secret', c).value;
  if (secret) body.secret = secret;
  out.textContent = await answer(await post('/$import', body));
});

$('#filter').addEventListener('change', filter);

$('#start').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const urls = $('#start-urls').value.split(/\\s+/).filter(Boolean);
  const body = { inputs: urls.map((url) => ({ url })) };
  const id = $('#start-id').value.trim();
  if (id) body.id = id;
  $('#start-msg').textContent = await answer(await post('/$import', body));
});

const FORMATS = [['TSV', { format: 'csv', delimiter: '\\t', header: true }, 'tsv'], ['CSV', { format: 'csv', delimiter: ',', header: true }, 'csv'], ['ndjson', { format: 'ndjson' }, 'ndjson']];

$('#sql').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const query = $('#sql-query').value;
  const res = await post('/$dump-sql', { query, format: 'ndjson' });
  const table = $('#preview');
  const links = $('#downloads');
  table.replaceChildren();
  links.replaceChildren();
  if (!res.ok) { $('#sql-msg').textContent = await answer(res); return; }
  const rows = (await res.text()).split('\\n').filter(Boolean).slice(0, 50).map((l) => JSON.parse(l));
  $('#sql-msg').textContent = rows.length + ' rows in the preview';
  const columns = rows.length ? Object.keys(rows[0]) : [];
  const head = el('tr');
  for (const col of columns) head.append(el('th', col));
  table.append(head);
  for (const r of rows) {
    const tr = el('tr');
    for (const col of columns) tr.append(el('td', typeof r[col] === 'object' && r[col] !== null ? JSON.stringify(r[col]) : r[col]));
    table.append(tr);
  }
  for (const [label, options, ext] of FORMATS) {
    const res = await post('/$dump-sql', { query, ...options });
    if (!res.ok) continue;
    const a = el('a', 'Download ' + label);
    a.href = URL.createObjectURL(await res.blob());
    a.download = 'dump.' + ext;
    links.append(a);
  }
});

const live = new EventSource('/console/events');
live.addEventListener('open', () => { $('#live').textContent = 'live'; });
live.addEventListener('error', () => { $('#live').textContent = 'reconnecting…'; });
live.addEventListener('session', (ev) => render(JSON.parse(ev.data)));
filter();
`;
