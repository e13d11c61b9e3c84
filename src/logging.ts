/**
 * Log lines (SPEC §14): FHIRHOSE_LOG=info writes `<ISO time> <text>`, json writes one JSON object
 * per line (`time`, `level`, then `msg` or an event's fields), quiet writes nothing. Events
 * (a request ended, a job changed state) are structured; callers pass only what may be shown —
 * route patterns, ids and states, never headers, URLs' query strings or secrets.
 */
import type { Config } from './config.ts';

export type EventFields = Record<string, unknown>;

export interface Logger {
  (line: string): void;
  event(fields: EventFields): void;
}

export function createLogger(config: Pick<Config, 'log'>, write: (line: string) => void = (line) => console.log(line)): Logger {
  if (config.log === 'quiet') return Object.assign(() => {}, { event: () => {} });
  if (config.log === 'json') {
    const log = (line: string) => write(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: line }));
    return Object.assign(log, { event: (fields: EventFields) => write(JSON.stringify({ time: new Date().toISOString(), level: 'info', ...fields })) });
  }
  const log = (line: string) => write(`${new Date().toISOString()} ${line}`);
  return Object.assign(log, { event: (fields: EventFields) => log(eventText(fields)) });
}

/** The event writer of any line logger: its own when it has one, else the text form. */
export function eventsOf(log: (line: string) => void): (fields: EventFields) => void {
  const own = (log as Partial<Logger>).event;
  return own ?? ((fields) => log(eventText(fields)));
}

/** `request GET /:type/:id status=200 ms=3.1 client=root`: the event name, then key=value. */
function eventText(fields: EventFields): string {
  const { event, ...rest } = fields;
  const parts = Object.entries(rest).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => `${k}=${typeof v === 'string' && /\s/.test(v) ? JSON.stringify(v) : String(v)}`);
  return [String(event ?? 'event'), ...parts].join(' ');
}
