import { describe, expect, test } from 'bun:test';
import { isInstantText, parseDateTime, startInstant } from '../../src/fhir/datetime.ts';

describe('parseDateTime', () => {
  test('every precision from a year to nanoseconds, with and without a zone', () => {
    expect(parseDateTime('2024')).toEqual({ year: '2024' });
    expect(parseDateTime('2024-03')).toMatchObject({ year: '2024', month: '03' });
    expect(parseDateTime('2024-03-05T10:07')).toMatchObject({ day: '05', hour: '10', minute: '07', second: undefined });
    expect(parseDateTime('2024-03-05T10:07:09.123456789-05:30'))
      .toMatchObject({ second: '09', fraction: '123456789', zone: '-05:30' });
  });

  test('a form-encoded "+" of the zone (a space) is put back; surrounding blanks are ignored', () => {
    expect(parseDateTime(' 2024-03-05T10:07:09 02:00 ')?.zone).toBe('+02:00');
  });

  test('days, months, times and zones that do not exist are refused', () => {
    for (const bad of ['2024-02-30', '2023-02-29', '2024-13-01', '2024-00-10', '2024-04-31', '2024-03-05T24:00',
      '2024-03-05T10:60', '2024-03-05T10:07:60', '2024-03-05T10:07:09+15:00', '2024-03-05T10:07:09+02:60']) {
      expect({ bad, parsed: parseDateTime(bad) }).toEqual({ bad, parsed: undefined });
    }
    expect(parseDateTime('2024-02-29')).toBeDefined();
  });

  test('text that is not a FHIR date at all is refused', () => {
    for (const bad of ['', 'yesterday', '24-03-05', '2024-3-5', '2024-03-05T10', '2024-03-05T10:07:09.', "2024'; drop table x"]) {
      expect({ bad, parsed: parseDateTime(bad) }).toEqual({ bad, parsed: undefined });
    }
  });
});

describe('startInstant and isInstantText', () => {
  test('missing fields start at their beginning, UTC when no zone is given', () => {
    expect(startInstant(parseDateTime('2024')!)).toBe('2024-01-01T00:00:00Z');
    expect(startInstant(parseDateTime('2024-03-05T10:07')!)).toBe('2024-03-05T10:07:00Z');
    expect(startInstant(parseDateTime('2024-03-05T10:07:09.5+02:00')!)).toBe('2024-03-05T10:07:09.5+02:00');
  });

  test('only a complete instant as startInstant writes it passes', () => {
    expect(isInstantText('2024-03-05T10:07:09.5+02:00')).toBe(true);
    expect(isInstantText('2024-03-05')).toBe(false);
    expect(isInstantText(' 2024-03-05T10:07:09Z')).toBe(false);
    expect(isInstantText("2024-03-05T10:07:09Z' or true --")).toBe(false);
  });
});
