/**
 * The worker thread of operations/struct-check.ts: compiles the FHIR R4 schema on its first
 * request and answers each request with parsed lines or validation messages, in order.
 */
import { parentPort } from 'node:worker_threads';
import { validateStruct } from '../fhir/validate.ts';
import { parseLine } from './ingest.ts';
import type { StructReply, StructRequest } from './struct-check.ts';

const port = parentPort;
if (!port) throw new Error('operations/struct-worker.ts runs only as a worker thread');

port.on('message', (request: StructRequest) => {
  let reply: StructReply;
  try {
    reply = request.kind === 'lines'
      ? { id: request.id, parsed: request.lines.map((line) => parseLine(line, request.options)) }
      : { id: request.id, problems: request.resources.map((resource) => validateStruct(resource)) };
  } catch (error) {
    reply = { id: request.id, error: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage(reply);
});
