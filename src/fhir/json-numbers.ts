/**
 * Numbers as they were written. JSON.parse turns every number into a double and JSON.stringify
 * writes the shortest text of that double, so a parse and a stringify change `0.0` into `0`, `1.50`
 * into `1.5` and `12345678901234567890` into `12345678901234567000`. FHIR gives a decimal's
 * precision meaning (R4 datatypes: "0.010 is regarded as different to 0.01, and the original
 * precision should be preserved"), and PostgreSQL's jsonb keeps a number as a `numeric`, exactly as
 * written; a raw `COPY` of the same lines keeps them. In Synthea's data one resource in twenty holds
 * such a number (`"value": 0.0` in most ExplanationOfBenefits), so keeping them matters.
 *
 * `mayChangeNumbers` is a cheap test on the text (false positives allowed); only when it says so
 * is the text parsed by `parseExact`, whose numbers that a double would write differently are
 * `JSON.rawJSON` values: JSON.stringify writes them as they came. Each regular expression is a pass
 * over the line (~0.4 ms per MB); one form is left to the double, as not worth a third pass: an
 * integer mantissa ending in 0 with a negative exponent (`10e-3` is stored as `0.01`, not `0.010`).
 * An exponent is otherwise normalised by PostgreSQL as by the double (`1e2` is stored as `100`).
 *
 * The reviver of `parseExact` makes JSON.parse about six times slower, and JSON.stringify of its
 * kept numbers three times, on the lines that need it (ExplanationOfBenefits are big), so a line
 * read only to be stored takes `swapNumbers` instead: its numbers to keep are swapped, in the
 * text, for integers a double keeps, and swapped back in the stringified text.
 */

/**
 * A fraction ending in 0 (`0.0`, `1.50`, `1.50e-3`) before `,`, `]` or `}`. Starting at a `.`, not
 * at the `:` before the number, it runs in a third of the time on Synthea's lines (30 against 66 ms
 * for 73 MB), with the same lines found.
 */
const TRAILING_ZERO = /\.\d*0(?:[eE][+-]?\d+)?\s*[,\]}]/;
/** 16 digits (or points) in a row: what a number past 15 significant digits has, and few lines do. */
const MANY_DIGITS = /[\d.]{16}/;
/** Such a number, to check whether a double keeps it. */
const LONG_NUMBER = /[:,[]\s*(?=-?[\d.]{16})(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*[,\]}]/g;
/**
 * A number PostgreSQL's numeric stores as written: its exponent under numeric's bound of 1000.
 * Longer texts are left to the double, as before (numeric holds at most 131,072 digits before the
 * point and 16,383 after); a number past a double's range is refused as a bad line anyway.
 */
const KEEPABLE = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d{1,3})?$/;
const MAX_KEPT_LENGTH = 1000;

/** False when every number of the JSON text `text` comes back the same from JSON.parse + JSON.stringify. */
export function mayChangeNumbers(text: string): boolean {
  if (TRAILING_ZERO.test(text)) return true;
  if (!MANY_DIGITS.test(text)) return false;
  LONG_NUMBER.lastIndex = 0;
  for (let m = LONG_NUMBER.exec(text); m !== null; m = LONG_NUMBER.exec(text)) {
    if (String(Number(m[1])) !== m[1]) return true;
  }
  return false;
}

/** JSON.parse of `text`, keeping its numbers as written: the cheap JSON.parse unless mayChangeNumbers. */
export function parseKeepingNumbers(text: string): unknown {
  return mayChangeNumbers(text) ? parseExact(text) : JSON.parse(text);
}

/** JSON.parse of `text` (which must be valid JSON), keeping the text of numbers a double would change. */
export function parseExact(text: string): unknown {
  return JSON.parse(text, keepSource as Reviver);
}

type Reviver = (this: unknown, key: string, value: unknown) => unknown;

function keepSource(_key: string, value: unknown, context?: { source?: string }): unknown {
  return typeof value === 'number' && context?.source !== undefined ? keptNumber(value, context.source) : value;
}

/** `value` parsed from `source`: the source kept (a `JSON.rawJSON`) when a double would write it differently. */
export function keptNumber(value: number, source: string): unknown {
  return toKeep(value, source) ? (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON(source) : value;
}

/** True when `source` (parsed as `value`) is written otherwise by a double and numeric stores it as it is. */
function toKeep(value: number, source: string): boolean {
  return Number.isFinite(value) && source.length <= MAX_KEPT_LENGTH && String(value) !== source && KEEPABLE.test(source);
}

/** True for a number `parseExact` kept as written (an object to JSON.parse's callers, not a number). */
export function isKeptNumber(value: unknown): boolean {
  return (JSON as unknown as { isRawJSON(value: unknown): boolean }).isRawJSON(value);
}

/** Every number, where a number can stand: after `:`, `,` or `[`, before `,`, `]` or `}`. */
const NUMBER_TOKEN = /([:,[]\s*)(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?=\s*[,\]}])/g;
/** The swapped-in integers: these ten digits (no 0: an exponent expanded by JSON.stringify adds zeros only), then four of their own. */
const SWAP_PREFIX = '7193385114';
const SWAP_INDEX_DIGITS = 4;
const SWAPPED = new RegExp(`${SWAP_PREFIX}\\d{${SWAP_INDEX_DIGITS}}`, 'g');

export interface SwappedNumbers {
  /** The JSON text with each number to keep replaced by an integer. */
  text: string;
  /**
   * The stringified value of `text` (after edits that remove or add no number) with the kept
   * numbers back; undefined when the integers did not come back exactly once each, in which case
   * the caller takes parseExact.
   */
  restore(json: string): string | undefined;
}

/**
 * The numbers of `text` a double would change, swapped for integers it keeps; undefined when there
 * are none, too many (10,000), or the text holds the integers' digits or `\u` escapes (which
 * could spell them). A match inside a string is swapped and swapped back alike, so it stays as it was.
 */
export function swapNumbers(text: string): SwappedNumbers | undefined {
  if (text.includes(SWAP_PREFIX) || text.includes('\\u')) return undefined;
  const kept: string[] = [];
  const swapped = text.replace(NUMBER_TOKEN, (match, before: string, number: string) => {
    if (!toKeep(Number(number), number)) return match;
    return before + SWAP_PREFIX + String(kept.push(number) - 1).padStart(SWAP_INDEX_DIGITS, '0');
  });
  if (kept.length === 0 || kept.length >= 10 ** SWAP_INDEX_DIGITS) return undefined;
  return {
    text: swapped,
    restore(json) {
      const seen = new Uint8Array(kept.length);
      let count = 0;
      const out = json.replace(SWAPPED, (digits) => {
        const index = Number(digits.slice(SWAP_PREFIX.length));
        if (index < kept.length) seen[index]!++;
        count++;
        return kept[index] ?? digits;
      });
      return count === kept.length && seen.every((n) => n === 1) ? out : undefined;
    },
  };
}
