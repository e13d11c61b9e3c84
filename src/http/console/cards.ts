/**
 * One job of the console as plain strings: the server renders it with JSX (page.tsx) and sends the
 * same object over SSE for the script to apply with textContent (script.ts), so the wording lives
 * here once and both paths escape by construction.
 */
import type { ConsoleItem } from '../../operations/console.ts';
import type { ExportView } from '../../operations/export-view.ts';
import type { SessionView } from '../../operations/import-view.ts';

export type Cell = string | { links: { text: string; href: string }[] };

export interface Card {
  /** `import:<id>` or `export:<id>`: unique across kinds. */
  key: string;
  kind: 'import' | 'export';
  id: string;
  /** The filter state (active, paused, done, aborted, error). */
  status: string;
  /** The state in the kind's own words (an export: running, done, failed). */
  label: string;
  percent: number;
  stats: string;
  detail: string;
  message: string;
  head: string[];
  rows: Cell[][];
  actions: string[];
}

export const IMPORT_ACTIONS = ['pause', 'resume', 'abort', 'force-resume'];
export const EXPORT_ACTIONS = ['cancel'];

export function cardOf(item: ConsoleItem): Card {
  return item.kind === 'import' ? importCard(item.view) : exportCard(item.view);
}

function importCard(s: SessionView): Card {
  const bytes = s.inputs.reduce((n, i) => n + i.bytesRead, 0);
  const stats = [
    `${percentText(s.progress)}`, `${s.imported} imported`, `${s.errorCount} errors`, bytesText(bytes),
    s.rate ? `${Math.round(s.rate)} resources/s` : '', s.etaSeconds !== undefined && s.status === 'active' ? `ETA ${s.etaSeconds} s` : '',
  ];
  return {
    key: `import:${s.id}`,
    kind: 'import',
    id: s.id,
    status: s.status,
    label: s.status,
    percent: Math.round(s.progress * 100),
    stats: stats.filter(Boolean).join(' · '),
    detail: `import · ${s.inputs.length} input${s.inputs.length === 1 ? '' : 's'} · started ${s.startedAt}${s.finishedAt ? ` · finished ${s.finishedAt}` : ''}`,
    message: s.message ?? '',
    head: ['input', 'state', 'lines', 'bytes', 'imported', 'owner / lease', 'first errors'],
    rows: s.inputs.map((i) => [
      `${i.type ?? ''} ${i.url}`.trim(), i.status, String(i.linesRead),
      i.bytesTotal ? `${bytesText(i.bytesRead)} of ${bytesText(i.bytesTotal)}` : bytesText(i.bytesRead),
      String(i.imported), i.owner ? `${i.owner} until ${i.leaseUntil}` : '',
      i.errors.slice(0, 3).map((e) => `line ${e.line}: ${e.message}`).join('\n'),
    ]),
    actions: IMPORT_ACTIONS,
  };
}

function exportCard(e: ExportView): Card {
  const stats = [
    percentText(e.progress), `${e.exported} of ${e.total} resources`, bytesText(e.bytes),
    e.rate ? `${Math.round(e.rate)} resources/s` : '', e.etaSeconds !== undefined ? `ETA ${e.etaSeconds} s` : '',
  ];
  const detail = [
    `export · ${e.level} level`, e.types.length ? `_type ${e.types.join(',')}` : 'all types', e.since ? `_since ${e.since}` : '',
    `client ${e.clientId}`, e.owner ? `run by ${e.owner} until ${e.leaseUntil}` : '', `started ${e.createdAt}`,
    e.finishedAt ? `finished ${e.finishedAt}` : '', e.expiresAt ? `files until ${e.expiresAt}` : '',
  ];
  const rows: Cell[][] = e.output.map((o) => [o.type, String(o.count), { links: o.files.map((f) => ({ text: `${f.name} (${bytesText(f.bytes)})`, href: f.url })) }]);
  if (e.deleted) rows.push(['deleted', String(e.deleted), '']);
  if (e.errorFiles.length) rows.push(['OperationOutcome', '', { links: e.errorFiles.map((f) => ({ text: f.name, href: f.url })) }]);
  return {
    key: `export:${e.id}`,
    kind: 'export',
    id: e.id,
    status: e.status,
    label: e.state,
    percent: Math.round(e.progress * 100),
    stats: stats.filter(Boolean).join(' · '),
    detail: detail.filter(Boolean).join(' · '),
    message: [e.error ?? '', ...e.issues.map((i) => `ignored: ${i}`)].filter(Boolean).join('\n'),
    head: ['type', 'resources', 'files (download)'],
    rows,
    actions: EXPORT_ACTIONS,
  };
}

function percentText(progress: number): string {
  return `${Math.floor(progress * 1000) / 10}%`;
}

export function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(1)} ${units[u]}`;
}
