/**
 * npm `postinstall`: two fixes to postgres.js 3.4.9, applied to the installed copy (every build of
 * it: src for Bun, cjs, cf). Idempotent; fails the install when a text it fixes is not there
 * (another version), so a dependency update cannot silently drop a fix. Both are bugs of a
 * connection whose backend died (pg_terminate_backend, a database restart or failover):
 *
 * 1. The dead backend's error is handed to the next query. When a backend dies during a query, its
 *    FATAL ErrorResponse is kept in `errorResponse` and the query in `query`; the socket closes and
 *    the query is rejected with CONNECTION_CLOSED, but neither variable is cleared. When the pool
 *    later reconnects that connection, the start-up's ReadyForQuery finds them and rejects the
 *    first query on the fresh backend with the dead one's error: a 500 for a request that never
 *    ran. (Listed in the table of porsager/postgres PR #1215, open: "Any kill during a query: the
 *    next query fails with the old backend's 57P01". Its start-up variant, issue #1223, a kill
 *    while the connection fetches array types, is not touched.)
 *    Fix: clear both once the socket is closed and the query rejected.
 * 2. A query on a connection whose socket has closed crashes the process: `execute` writes to the
 *    null socket in a setImmediate, an uncaught TypeError ("null is not an object (evaluating
 *    'socket.write')") that no caller can catch. Two ways in: the next query on a reserved
 *    connection (copy-out.ts, sql-cursor.ts), and the ROLLBACK postgres.js's own `begin()` sends
 *    when a statement of a transaction whose backend died fails (an $import batch during a
 *    database restart: tests/jobs/import-database-loss.test.ts ended the server in 2 of 3 runs
 *    without this fix, its $import locks on a client of their own). Upstream:
 *    porsager/postgres#1208 (reserve) and #1133 (transactions), fix proposed in PR #1209, open.
 *    Fix: such a query is rejected with CONNECTION_CLOSED (and the connection left where the pool
 *    keeps closed ones).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'postgres');
const MARK = '// fhirhose patches/postgres.mjs';
const FIXES = [
  {
    broken: "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n",
    added: `    query = errorResponse = null ${MARK} (1): no stale error for the next connection\n`,
  },
  {
    broken: "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n",
    added: `    if (!socket) ${MARK} (2): a reserved connection whose socket closed\n      return (queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true)\n`,
  },
];

if (!fs.existsSync(root)) process.exit(0); // not installed (e.g. a partial install): nothing to fix
for (const build of ['src', 'cjs/src', 'cf/src']) {
  const file = path.join(root, build, 'connection.js');
  if (!fs.existsSync(file)) continue;
  let text = fs.readFileSync(file, 'utf8');
  let changed = false;
  for (const [i, { broken, added }] of FIXES.entries()) {
    if (text.includes(broken + added)) continue;
    if (!text.includes(broken)) {
      console.error(`patches/postgres.mjs: ${file} has changed (fix ${i + 1}); check whether postgres.js fixed it and update the patch`);
      process.exit(1);
    }
    text = text.replace(broken, broken + added);
    changed = true;
  }
  if (changed) {
    fs.writeFileSync(file, text);
    console.log(`patches/postgres.mjs: fixed ${path.relative(process.cwd(), file)}`);
  }
}
