/**
 * npm `postinstall`: five changes to postgres.js 3.4.9, applied to the installed copy (every build of
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
 * 3. Not a bug, a missing limit: postgres.js buffers a whole message before it parses it, so one
 *    row of `select repeat('x', 1000000000)` took the server to 4.4 GB. A connection made with
 *    `max_message_bytes` (a new option) ends when the server announces a larger message (its
 *    5-byte header is enough): the query fails with MESSAGE_TOO_LARGE and nothing more is read.
 *    Used by $dump-sql connections (src/storage/pools.ts, FHIRHOSE_SQL_MAX_VALUE_BYTES). A pooled
 *    connection ended so never came back (the next start-up on it timed out), so each $dump-sql
 *    opens a connection of its own and ends it afterwards.
 * 4. Not a bug, a cost: a `COPY … TO STDOUT` stream gets one push per CopyData message, i.e. per
 *    row, through a Node Readable (a subarray, a push, a read per row: the biggest share of the
 *    server's CPU in a `$dump` of small resources). A query marked `fhirhoseFrames = true` before
 *    it runs gets instead every run of complete CopyData messages of a socket chunk in one push,
 *    framed as they came (`d`, int32 length, payload); src/storage/copy-out.ts unframes them.
 *    And a message split over two socket chunks is joined alone, not with all of the next chunk
 *    (Buffer.concat was a tenth of that CPU profile). Unmarked queries are unchanged; $dump-sql's
 *    connections (3) never carry the mark.
 * 5. A `COPY … FROM STDIN` that PostgreSQL fails after the writable was ended never settles: `final`
 *    drops the stream (`stream = null`) and waits for CommandComplete, but a failed COPY answers
 *    ErrorResponse + ReadyForQuery, and `errored` only reaches the stream. So a COPY straight into
 *    a resource table that meets an existing id (23505, src/storage/resource-copy.ts) hung its
 *    transaction when its last rows were already sent. Fix: `errored` also fails a pending
 *    `final`, so the writable errs with PostgreSQL's error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'postgres');
const MARK = '// fhirhose patches/postgres.mjs';
const FIXES = [
  {
    file: 'connection.js',
    broken: "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n",
    added: `    query = errorResponse = null ${MARK} (1): no stale error for the next connection\n`,
  },
  {
    file: 'connection.js',
    broken: "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n",
    added: `    if (!socket) ${MARK} (2): a reserved connection whose socket closed\n      return (queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true)\n`,
  },
  {
    file: 'connection.js',
    broken: "      length = incoming.readUInt32BE(1)\n",
    added: `      if (options.max_message_bytes && length > options.max_message_bytes) { ${MARK} (3): a message over the limit ends the connection
        incoming = Buffer.alloc(0), incomings = null, remaining = 0
        error(Object.assign(Errors.generic('MESSAGE_TOO_LARGE', 'The database sent a message of ' + length + ' bytes, over the limit of ' + options.max_message_bytes), { bytes: length, limit: options.max_message_bytes }))
        return socket.destroy()
      }
`,
  },
  {
    file: 'index.js',
    broken: "    onnotice        : o.onnotice,\n",
    added: `    max_message_bytes: o.max_message_bytes, ${MARK} (3)\n`,
  },
  {
    file: 'connection.js',
    broken: '  function data(x) {\n    if (incomings) {\n      incomings.push(x)\n      remaining -= x.length\n      if (remaining > 0)\n        return\n',
    added: `      if (remaining < 0 && stream && stream.fhirhoseFrames) { ${MARK} (4): join only the message, not all of x
        const rest = x.subarray(x.length + remaining + 1)
        incomings[incomings.length - 1] = x.subarray(0, x.length + remaining + 1)
        const message = Buffer.concat(incomings, length + 1)
        incomings = null
        remaining = 0
        try {
          handle(message)
        } catch (e) {
          query && (query.cursorFn || query.describeFirst) && write(Sync)
          errored(e)
        }
        x = rest
        incoming = Buffer.alloc(0)
      }
`,
  },
  {
    file: 'connection.js',
    broken: '    while (incoming.length > 4) {\n',
    added: `      if (stream && stream.fhirhoseFrames && incoming[0] === 100) { ${MARK} (4): CopyData runs in one push
        let end = 0
        while (end + 5 <= incoming.length && incoming[end] === 100 && end + 1 + incoming.readUInt32BE(end + 1) <= incoming.length)
          end += 1 + incoming.readUInt32BE(end + 1)
        if (end > 0) {
          stream.push(incoming.subarray(0, end)) || socket.pause()
          incoming = incoming.subarray(end)
          remaining = 0
          incomings = null
          continue
        }
      }
`,
  },
  {
    file: 'connection.js',
    broken: '  function CopyOutResponse() {\n    stream = new Stream.Readable({\n      read() { socket.resume() }\n    })\n',
    added: `    stream.fhirhoseFrames = !!(query && query.fhirhoseFrames) ${MARK} (4)\n`,
  },
  {
    file: 'connection.js',
    broken: '  function errored(err) {\n    stream && (stream.destroy(err), stream = null)\n',
    added: `    final && (final(err), final = null) ${MARK} (5): a COPY FROM STDIN failed after its end\n`,
  },
  {
    file: 'connection.js',
    broken: '  function CopyData(x) {\n',
    added: `    if (stream && stream.fhirhoseFrames) return stream.push(x) || socket.pause() ${MARK} (4): framed\n`,
  },
];

if (!fs.existsSync(root)) process.exit(0); // not installed (e.g. a partial install): nothing to fix
for (const [build, name] of ['src', 'cjs/src', 'cf/src'].flatMap((b) => [[b, 'connection.js'], [b, 'index.js']])) {
  const file = path.join(root, build, name);
  if (!fs.existsSync(file)) continue;
  let text = fs.readFileSync(file, 'utf8');
  let changed = false;
  for (const [i, { file: target, broken, added }] of FIXES.entries()) {
    if (target !== name) continue;
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
