/**
 * The console's forms (SPEC §14). None submits by itself (the CSP's form-action is 'none'): the
 * script sends each as the API request a client would, and shows the API's own answer.
 * - Start an import: a list of URLs (the Aidbox body), or the URL of another server's Bulk Data
 *   export (a Parameters body with exportUrl and exportType, SPEC §13), with an optional
 *   Authorization header for that server (sent as fileRequestHeader, never shown again).
 * - Start an export: the kick-off of SPEC §12 at system, Patient or Group level.
 * - $dump-sql: a read-only preview and downloads.
 */

export function ImportForm() {
  return (
    <form id="start" class="box" aria-labelledby="start-title">
      <h3 id="start-title">Start an import</h3>
      <label for="start-id">Session id (optional)</label><input id="start-id" name="id" autocomplete="off" />
      <label for="start-urls">URLs of ndjson files, one per line</label>
      <textarea id="start-urls" name="urls" rows={3}></textarea>
      <label for="start-export-url">…or another server's Bulk Data export: its kick-off URL, or a finished export's status URL</label>
      <input id="start-export-url" name="exportUrl" type="url" autocomplete="off" />
      <label for="start-export-type">Export type</label>
      <select id="start-export-type" name="exportType">
        <option value="dynamic">dynamic (kick the export off there, then pull it)</option>
        <option value="static">static (the URL is a finished manifest)</option>
      </select>
      <label for="start-export-auth">Authorization header for that server (optional)</label>
      <input id="start-export-auth" name="authorization" type="password" autocomplete="off" />
      <p><button type="submit">Start import</button> <span class="msg" id="start-msg" role="status"></span></p>
    </form>
  );
}

export function ExportForm() {
  return (
    <form id="export" class="box" aria-labelledby="export-title">
      <h3 id="export-title">Start an export</h3>
      <label for="export-level">Level</label>
      <select id="export-level" name="level">
        <option value="system">system: /$export</option>
        <option value="patient">Patient: /Patient/$export</option>
        <option value="group">Group: /Group/&lt;id&gt;/$export</option>
      </select>
      <label for="export-group">Group id (Group level)</label><input id="export-group" name="group" autocomplete="off" />
      <label for="export-type">_type (comma list, optional)</label><input id="export-type" name="_type" autocomplete="off" />
      <label for="export-since">_since (instant, optional)</label><input id="export-since" name="_since" autocomplete="off" placeholder="2026-01-01T00:00:00Z" />
      <label for="export-type-filter">_typeFilter (one per line, optional)</label>
      <textarea id="export-type-filter" name="_typeFilter" rows={2} placeholder="Patient?gender=female"></textarea>
      <label class="inline"><input id="export-lenient" type="checkbox" /> lenient: ignore unsupported parameters (Prefer: handling=lenient)</label>
      <p><button type="submit">Start export</button> <span class="msg" id="export-msg" role="status"></span></p>
    </form>
  );
}

export function SqlForm() {
  return (
    <>
      <h2>$dump-sql (read-only)</h2>
      <form id="sql" class="box">
        <label for="sql-query">Query</label>
        <textarea id="sql-query" name="query" rows={3}>{"select id, resource->>'gender' as gender from patient limit 20"}</textarea>
        <p><button type="submit">Preview</button> <span class="msg" id="sql-msg" role="status"></span></p>
      </form>
      <div class="row" id="downloads"></div>
      <table id="preview"></table>
    </>
  );
}
