/**
 * npm `postinstall`: one fix to postgres.js 3.4.9, applied to the installed copy (every build of
 * it: src for Bun, cjs, cf). Idempotent; fails the install when the text it fixes is not there
 * (another version), so a dependency update cannot silently drop the fix.
 *
 * The bug (listed in the table of porsager/postgres PR #1215, open: "Any kill during a query: the
 * next query fails with the old backend's 57P01"; #1223 is its variant during connection start-up,
 * which this does not touch): when a backend dies during a query
 * (pg_terminate_backend, a restart), its FATAL ErrorResponse is kept in `errorResponse` and the
 * query in `query`; the socket closes, the query is rejected with CONNECTION_CLOSED, but neither
 * variable is cleared. When the pool later reconnects that connection, the startup's ReadyForQuery
 * finds them and rejects the first query on the fresh backend with the dead one's error: a 500
 * for a request that never ran. Seen in fhirhose's tests after a $dump whose COPY was killed.
 * The fix clears both once the socket is closed and the query has been rejected.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'postgres');
const BROKEN = "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n";
const FIXED = BROKEN + '    query = errorResponse = null // fhirhose patches/postgres.mjs: no stale error for the next connection\n';

if (!fs.existsSync(root)) process.exit(0); // not installed (e.g. a partial install): nothing to fix
for (const build of ['src', 'cjs/src', 'cf/src']) {
  const file = path.join(root, build, 'connection.js');
  if (!fs.existsSync(file)) continue;
  const text = fs.readFileSync(file, 'utf8');
  if (text.includes(FIXED)) continue;
  if (!text.includes(BROKEN)) {
    console.error(`patches/postgres.mjs: ${file} has changed; check whether the kill-during-a-query bug (porsager/postgres PR #1215) is fixed and update the patch`);
    process.exit(1);
  }
  fs.writeFileSync(file, text.replace(BROKEN, FIXED));
  console.log(`patches/postgres.mjs: fixed ${path.relative(process.cwd(), file)}`);
}
