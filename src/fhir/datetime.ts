/**
 * The one parser of FHIR date, dateTime and instant text (https://hl7.org/fhir/R4/datatypes.html)
 * in query parameters: `_lastUpdated` of search and `_since` of `$dump`. A value may stop at any
 * precision (`2024`, `2024-03`, `2024-03-05T10:00`); its fields are checked against the calendar
 * (`2024-02-30`, `2024-13-01` and a zone past ±14:00 are refused).
 */
export interface FhirDateTime {
  year: string;
  month?: string;
  day?: string;
  hour?: string;
  minute?: string;
  second?: string;
  /** The digits after the decimal point, 1 to 9 of them. */
  fraction?: string;
  /** `Z` or `±hh:mm`. */
  zone?: string;
}

const PATTERN = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * The fields of `raw`, or undefined when it is not a FHIR date/dateTime/instant (or names a day
 * that does not exist). An unencoded `+` of a zone arrives as a space (form encoding): it is put back.
 */
export function parseDateTime(raw: string): FhirDateTime | undefined {
  const m = PATTERN.exec(raw.trim().replace(/ (\d{2}:\d{2})$/, '+$1'));
  if (!m) return undefined;
  const [, year, month, day, hour, minute, second, fraction, zone] = m;
  const value: FhirDateTime = { year: year!, month, day, hour, minute, second, fraction, zone };
  const n = (v: string | undefined, missing: number) => (v === undefined ? missing : Number(v));
  const daysInMonth = new Date(Date.UTC(Number(year), n(month, 1), 0)).getUTCDate();
  const valid = n(month, 1) >= 1 && n(month, 1) <= 12 && n(day, 1) >= 1 && n(day, 1) <= daysInMonth
    && n(hour, 0) <= 23 && n(minute, 0) <= 59 && n(second, 0) <= 59
    && (zone === undefined || zone === 'Z' || (Number(zone.slice(1, 3)) <= 14 && Number(zone.slice(4)) <= 59));
  return valid ? value : undefined;
}

/**
 * The first instant a value covers, as `YYYY-MM-DDThh:mm:ss[.f]±zone` (missing fields at their
 * start, UTC when no zone is given). Only digits and `- : . T Z +`: safe to inline in SQL.
 */
export function startInstant(value: FhirDateTime): string {
  const { year, month = '01', day = '01', hour = '00', minute = '00', second = '00', fraction, zone = 'Z' } = value;
  return `${year}-${month}-${day}T${hour}:${minute}:${second}${fraction === undefined ? '' : `.${fraction}`}${zone}`;
}

/** True for text that `startInstant` could have produced: a complete instant with a zone. */
export function isInstantText(text: string): boolean {
  const value = parseDateTime(text);
  return value !== undefined && startInstant(value) === text;
}
