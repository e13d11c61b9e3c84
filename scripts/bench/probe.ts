/**
 * The ordinary client of the limits bench (stall.ts), in a process of its own so that its
 * latencies are the server's, not the event loop of the bench process that also reads 50 dumps:
 * one `GET /Patient/<id>` after another for `ms` milliseconds (20 ms pause between), then prints
 * the latencies in ms as one JSON array.
 *
 *     bun scripts/bench/probe.ts <url> <authorization> <ms> <id>...
 */
const [url, auth, ms, ...ids] = process.argv.slice(2);
if (!url || !auth || !ms || ids.length === 0) throw new Error('usage: probe.ts <url> <authorization> <ms> <id>...');
const stop = Date.now() + Number(ms);
const latencies: number[] = [];
for (let i = 0; Date.now() < stop; i++) {
  const t0 = performance.now();
  const res = await fetch(`${url}/Patient/${ids[i % ids.length]}`, { headers: { authorization: auth } });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`GET /Patient/<id> answered ${res.status} during the limits bench`);
  latencies.push(performance.now() - t0);
  await Bun.sleep(20);
}
console.log(JSON.stringify(latencies));
export {};
