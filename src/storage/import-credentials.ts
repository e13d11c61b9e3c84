/**
 * The HTTP credential of an import session's sources (SPEC §13): one `Authorization` header and
 * the origins it may be sent to. Never part of the session resource; deleted as soon as the
 * session is done or aborted (an `error` session may be force-resumed, so it keeps it).
 */
import type { AnySql } from './db.ts';

export interface SourceCredential {
  /** `scheme://host:port` of each input URL: the header goes to these origins only. */
  origins: string[];
  authorization: string;
  /**
   * Whether the inputs' files get it too (default). A pulled export whose manifest says
   * `requiresAccessToken: false` keeps it for the status and DELETE requests only (SPEC §13).
   */
  files?: boolean;
}

export async function saveCredential(sql: AnySql, sessionId: string, credential: SourceCredential): Promise<void> {
  await sql`insert into bulkimport_credential (session_id, origins, authorization_header)
    values (${sessionId}, ${sql.array(credential.origins)}, ${credential.authorization})
    on conflict (session_id) do update set origins = excluded.origins, authorization_header = excluded.authorization_header`;
}

export async function readCredential(sql: AnySql, sessionId: string): Promise<SourceCredential | undefined> {
  const [row] = await sql`select origins, authorization_header, files from bulkimport_credential where session_id = ${sessionId}`;
  return row ? { origins: row.origins as string[], authorization: row.authorization_header as string, files: row.files as boolean } : undefined;
}

/** Whether the session's files get the credential (a pulled manifest's `requiresAccessToken`). */
export async function setCredentialForFiles(sql: AnySql, sessionId: string, files: boolean): Promise<void> {
  await sql`update bulkimport_credential set files = ${files} where session_id = ${sessionId}`;
}

export async function dropCredential(sql: AnySql, sessionId: string): Promise<void> {
  await sql`delete from bulkimport_credential where session_id = ${sessionId}`;
}
