/**
 * The one error type of fhirhose. Throw it anywhere; `app.onError` renders it as an
 * OperationOutcome with `message` (SPEC §1) and the status from `statusOf`.
 */
export type OutcomeCode =
  | 'invalid' // 400: malformed body, bad parameter, bad query
  | 'login' // 401: no or wrong credentials
  | 'forbidden' // 403: authenticated but not allowed, or a source outside the import root
  | 'not-found' // 404
  | 'not-allowed' // 405: the method does not apply to this resource
  | 'not-acceptable' // 406: an action the current state does not allow
  | 'conflict' // 409
  | 'too-large' // 413
  | 'unsupported-media' // 415
  | 'unprocessable' // 422: readable request, unusable content (corrupt gzip, binary source)
  | 'throttled' // 429: too many failed logins (auth/login-limiter.ts)
  | 'busy' // 503: the bulk cap is reached (http/bulk-gate.ts), or the server is shutting down
  | 'bad-gateway' // 502: a source that cannot be fetched
  | 'unavailable' // 503: a database fhirhose depends on (the read replica) cannot serve now
  | 'timeout' // 504
  | 'exception'; // 500

export function statusOf(code: OutcomeCode): number {
  switch (code) {
    case 'invalid': return 400;
    case 'login': return 401;
    case 'forbidden': return 403;
    case 'not-found': return 404;
    case 'not-allowed': return 405;
    case 'not-acceptable': return 406;
    case 'conflict': return 409;
    case 'too-large': return 413;
    case 'unsupported-media': return 415;
    case 'unprocessable': return 422;
    case 'throttled': return 429;
    case 'busy': return 503;
    case 'bad-gateway': return 502;
    case 'unavailable': return 503;
    case 'timeout': return 504;
    case 'exception': return 500;
  }
}

/** FHIR IssueType for each code (http://hl7.org/fhir/valueset-issue-type.html). */
function issueTypeOf(code: OutcomeCode): string {
  switch (code) {
    case 'invalid': case 'unprocessable': case 'unsupported-media': return 'invalid';
    case 'login': return 'login';
    case 'forbidden': return 'forbidden';
    case 'not-found': return 'not-found';
    case 'not-acceptable': case 'not-allowed': return 'business-rule';
    case 'conflict': return 'conflict';
    case 'too-large': return 'too-costly';
    case 'bad-gateway': case 'unavailable': case 'busy': return 'transient';
    case 'throttled': return 'throttled';
    case 'timeout': return 'timeout';
    case 'exception': return 'exception';
  }
}

export class OperationOutcomeError extends Error {
  readonly code: OutcomeCode;
  readonly headers: Record<string, string>;
  constructor(code: OutcomeCode, message: string, options: { headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'OperationOutcomeError';
    this.code = code;
    this.headers = options.headers ?? {};
  }
  get status(): number {
    return statusOf(this.code);
  }
}

export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  id?: string;
  message: string;
  issue: { severity: 'error' | 'information'; code: string; diagnostics: string }[];
}

export function outcome(code: OutcomeCode, message: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    message,
    issue: [{ severity: 'error', code: issueTypeOf(code), diagnostics: message }],
  };
}

/** Shorthands used across operations. */
export const invalid = (message: string) => new OperationOutcomeError('invalid', message);
export const notFound = (message: string) => new OperationOutcomeError('not-found', message);
export const forbidden = (message: string) => new OperationOutcomeError('forbidden', message);
