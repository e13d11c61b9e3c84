/**
 * What keeping numbers as written costs `$load`/`$import`'s per-line work (src/fhir/json-numbers.ts),
 * on the distinct resources of the mix with their numbers as the files write them (`"value": 0.0`):
 * the line parse of before (JSON.parse + JSON.stringify), the cheap test on every line, the exact
 * parse of the lines it finds, and parseLine as it is. Milliseconds, best of `rounds`.
 *
 *   bun scripts/bench/probe-numbers.ts [rounds=5] [--data-dir DIR]...
 */
import { mixFolders, readResources } from './data.ts';
import { mayChangeNumbers, parseExact, swapNumbers } from '../../src/fhir/json-numbers.ts';
import { parseLine } from '../../src/operations/ingest.ts';

const args = process.argv.slice(2);
const dirs = args.flatMap((a, i) => (args[i - 1] === '--data-dir' ? [a] : []));
const rounds = Number(args.find((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--data-dir') ?? 5);
const { resources } = await readResources(mixFolders(dirs));
const lines = resources.map((r) => JSON.stringify(r));
const flagged = lines.filter(mayChangeNumbers);
const mb = (list: string[]) => (list.reduce((n, l) => n + Buffer.byteLength(l), 0) / 1e6).toFixed(1);
console.log(`${lines.length} lines, ${mb(lines)} MB; ${flagged.length} (${((100 * flagged.length) / lines.length).toFixed(1)} %, ${mb(flagged)} MB) hold a number a double would change`);

function best(run: () => void): string {
  let ms = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    run();
    ms = Math.min(ms, performance.now() - t0);
  }
  return `${ms.toFixed(0)} ms`.padStart(8);
}
console.log(`JSON.parse + JSON.stringify, every line (the line's work before)    ${best(() => { for (const l of lines) JSON.stringify(JSON.parse(l)); })}`);
console.log(`mayChangeNumbers, every line                                         ${best(() => { for (const l of lines) mayChangeNumbers(l); })}`);
console.log(`JSON.parse + JSON.stringify of the lines it finds                    ${best(() => { for (const l of flagged) JSON.stringify(JSON.parse(l)); })}`);
console.log(`parseExact + JSON.stringify of the lines it finds                    ${best(() => { for (const l of flagged) JSON.stringify(parseExact(l)); })}`);
console.log(`swapNumbers + JSON.parse + JSON.stringify + restore, the lines it finds  ${best(() => { for (const l of flagged) { const s = swapNumbers(l)!; s.restore(JSON.stringify(JSON.parse(s.text))); } })}`);
console.log(`parseLine, every line (as $load runs it, no options)                 ${best(() => { lines.forEach((text, i) => parseLine({ no: i + 1, text } as never, {})); })}`);
