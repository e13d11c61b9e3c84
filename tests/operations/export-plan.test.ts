/** operations/export-plan.ts: the order a run takes its parts in. */
import { expect, test } from 'bun:test';
import { biggestFirst, type Part } from '../../src/operations/export-plan.ts';

const out = (type: string): Part => ({ kind: 'output', type });

test('a run takes the biggest tables first, and never moves a part across the refs part or the others', () => {
  const parts: Part[] = [out('Condition'), out('Observation'), out('Encounter'), { kind: 'refs' }, out('Practitioner'), out('Organization'), { kind: 'deleted', type: 'Condition' }, { kind: 'error' }];
  const bytes = new Map([['Condition', 5e6], ['Observation', 70e6], ['Encounter', 20e6], ['Practitioner', 1e6], ['Organization', 3e6]]);
  const order = biggestFirst([...parts.entries()], bytes).map(([i]) => i);
  expect(order).toEqual([1, 2, 0, 3, 5, 4, 6, 7]);
  // the indexes stay those of the plan (they are the checkpoints), and every part is there once
  expect([...order].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  // a resumed run: the parts done are left out, the rest ordered the same way
  expect(biggestFirst([...parts.entries()].filter(([i]) => i !== 1 && i !== 4), bytes).map(([i]) => i)).toEqual([2, 0, 3, 5, 6, 7]);
  // unknown sizes (a type with no table size) keep the plan's order, after the known ones
  expect(biggestFirst([[0, out('A')], [1, out('B')], [2, out('C')]], new Map([['C', 1]])).map(([i]) => i)).toEqual([2, 0, 1]);
});
