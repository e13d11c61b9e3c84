/**
 * The console's one client script, served as `/console/app.js` (no build step, no CDN). It writes
 * data with textContent and createElement only, never innerHTML: ids, URLs, error messages and SQL
 * results come from users. A job arrives over SSE as the server's card (http/console/cards.ts):
 * the wording is the server's, the script only places it.
 */
export const CONSOLE_SCRIPT = `'use strict';
const $ = (sel, root) => (root || document).querySelector(sel);
const el = (tag, text) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); return e; };
const jobs = $('#jobs');
const PAGE = Number(jobs.dataset.page);
const STATE = jobs.dataset.state;
const SIZE = Number(jobs.dataset.size);

function cardEl(key) {
  for (const c of jobs.querySelectorAll('.job')) if (c.dataset.key === key) return c;
  return undefined;
}

/** A job not on the page yet (page 1 only: the server sends nothing else): on top, the page keeps its size. */
function build(card) {
  const c = $('#job-template').content.firstElementChild.cloneNode(true);
  const actions = $('.actions', c);
  const answer = $('.answer', c);
  for (const n of actions.querySelectorAll('button, label')) n.remove();
  if (card.kind === 'import') {
    const label = el('label', 'Secret ');
    label.className = 'inline';
    const input = el('input');
    input.type = 'password';
    input.className = 'secret';
    input.autocomplete = 'off';
    label.append(input);
    actions.insertBefore(label, answer);
  }
  for (const a of card.actions) {
    const b = el('button', a);
    b.type = 'button';
    b.dataset.action = a;
    actions.insertBefore(b, answer);
  }
  c.className = 'job ' + card.kind;
  c.dataset.key = card.key;
  c.dataset.id = card.id;
  c.dataset.kind = card.kind;
  c.setAttribute('aria-label', card.kind + ' ' + card.id);
  $('.bar', c).setAttribute('aria-label', 'progress of ' + card.kind + ' ' + card.id);
  $('.kind', c).textContent = card.kind;
  $('.sid', c).textContent = card.id;
  jobs.prepend(c);
  count(1);
  const all = jobs.querySelectorAll('.job');
  for (let i = SIZE; i < all.length; i++) all[i].remove();
  return c;
}

/** The summary line, as the server wrote it, after jobs came or went live. */
function count(by) {
  const summary = $('#summary');
  const total = Number(summary.dataset.total) + by;
  summary.dataset.total = String(total);
  const pages = Math.max(1, Math.ceil(total / SIZE));
  summary.textContent = total + ' job' + (total === 1 ? '' : 's') + (STATE ? ' ' + STATE : '') + ' · page ' + PAGE + ' of ' + pages;
}

function cell(value) {
  const td = el('td');
  if (typeof value === 'string') td.textContent = value;
  else for (const l of value.links) { const a = el('a', l.text); a.href = l.href; a.download = ''; td.append(a); }
  return td;
}

function render(card) {
  const c = cardEl(card.key) || build(card);
  c.dataset.status = card.status;
  $('.status', c).textContent = card.label;
  $('.stats', c).textContent = card.stats;
  $('.bar', c).setAttribute('aria-valuenow', String(card.percent));
  $('.bar > div', c).style.width = card.percent + '%';
  $('.detail', c).textContent = card.detail;
  $('.message', c).textContent = card.message;
  // rebuilt only when it changed: a link being focused stays focused while the job runs
  const table = JSON.stringify([card.head, card.rows]);
  if (c.dataset.table !== table) {
    c.dataset.table = table;
    const head = $('thead tr', c);
    head.replaceChildren(...card.head.map((h) => el('th', h)));
    $('tbody', c).replaceChildren(...card.rows.map((r) => { const tr = el('tr'); tr.append(...r.map(cell)); return tr; }));
  }
}

function gone(key) {
  const c = cardEl(key);
  if (!c) return;
  c.dataset.status = 'gone';
  $('.status', c).textContent = 'deleted';
  for (const b of c.querySelectorAll('button[data-action]')) b.disabled = true;
  for (const a of c.querySelectorAll('tbody a')) a.removeAttribute('href');
}

/** The API's own answer, as one line: status, then its message. */
async function answer(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body.resourceType === 'OperationOutcome') return res.status + ': ' + (body.message || (body.issue && body.issue[0] && body.issue[0].diagnostics) || '');
    if (body.resourceType === 'BulkImportStatus') return res.status + ': session ' + body.id + ' is ' + body.status;
  } catch (e) { /* not JSON */ }
  return res.status + ': ' + text.slice(0, 200);
}

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json' };
async function post(path, body) {
  return fetch(path, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) });
}

function request(card, action) {
  const id = card.dataset.id;
  if (card.dataset.kind === 'export') return fetch('/$export-status/' + encodeURIComponent(id), { method: 'DELETE', headers: { accept: 'application/json' } });
  const body = { id, action };
  const secret = $('.secret', card).value;
  if (secret) body.secret = secret;
  return post('/$import', body);
}

document.addEventListener('click', async (ev) => {
  const button = ev.target.closest('button[data-action]');
  if (!button) return;
  const c = button.closest('.job');
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
  out.textContent = await answer(await request(c, action));
});

$('#start').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const exportUrl = $('#start-export-url').value.trim();
  let body;
  if (exportUrl) {
    const parameter = [{ name: 'exportUrl', valueUrl: exportUrl }, { name: 'exportType', valueCode: $('#start-export-type').value }];
    const auth = $('#start-export-auth').value;
    if (auth) parameter.push({ name: 'fileRequestHeader', part: [{ name: 'headerName', valueString: 'Authorization' }, { name: 'headerValue', valueString: auth }] });
    body = { resourceType: 'Parameters', parameter };
  } else {
    body = { inputs: $('#start-urls').value.split(/\\s+/).filter(Boolean).map((url) => ({ url })) };
    const id = $('#start-id').value.trim();
    if (id) body.id = id;
  }
  $('#start-msg').textContent = 'starting…';
  $('#start-msg').textContent = await answer(await post('/$import', body));
});

$('#export').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const level = $('#export-level').value;
  const group = $('#export-group').value.trim();
  if (level === 'group' && !group) { $('#export-msg').textContent = 'A Group-level export needs the Group id'; return; }
  const path = level === 'system' ? '/$export' : level === 'patient' ? '/Patient/$export' : '/Group/' + encodeURIComponent(group) + '/$export';
  const query = new URLSearchParams();
  const type = $('#export-type').value.trim();
  const since = $('#export-since').value.trim();
  if (type) query.set('_type', type);
  if (since) query.set('_since', since);
  for (const f of $('#export-type-filter').value.split('\\n').map((l) => l.trim()).filter(Boolean)) query.append('_typeFilter', f);
  const url = path + (query.size ? '?' + query : '');
  $('#export-msg').textContent = 'starting…';
  const prefer = 'respond-async' + ($('#export-lenient').checked ? ', handling=lenient' : '');
  $('#export-msg').textContent = await answer(await fetch(url, { headers: { accept: 'application/fhir+json', prefer } }));
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

/**
 * The page's one stream. It names the rows on the page; after an error it is closed and opened
 * again with the rows shown then (new ones included), and the server re-sends each of them once:
 * what changed while it was away is caught up.
 */
function connect() {
  const keys = [...jobs.querySelectorAll('.job')].map((c) => c.dataset.key);
  const live = new EventSource('/console/events?page=' + PAGE + (STATE ? '&state=' + encodeURIComponent(STATE) : '') + '&keys=' + encodeURIComponent(keys.join(',')));
  live.addEventListener('open', () => { $('#live').textContent = 'live'; });
  live.addEventListener('error', () => {
    $('#live').textContent = 'reconnecting…';
    live.close();
    setTimeout(connect, 2000);
  });
  live.addEventListener('job', (ev) => render(JSON.parse(ev.data)));
  live.addEventListener('gone', (ev) => gone(JSON.parse(ev.data).key));
}
connect();
`;
