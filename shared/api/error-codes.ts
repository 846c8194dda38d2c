/**
 * The stable codes of the API's error answers, `{"STATUS": "FAILURE", "error": "<words>", "code": "<CODE>"}`
 * (SPEC §1). `error` is for people and may be reworded; `code` is for programs and does not change. Each code
 * has one HTTP status. README.md, "Error codes", lists them for users: keep both in step.
 */
import { ClusterRunnerError } from '../errors.ts';

export const ERROR_CODES = {
  /** The request cannot be read: a body that is not UTF-8, not JSON or nested too deep; a bad %-escape in the path. */
  BAD_REQUEST: { status: 400 },
  /** The request was read, but a key, field, id or query value is wrong; `error` names it. */
  VALIDATION_FAILED: { status: 400 },
  /** The digest or signature is missing, wrong, expired or replayed (SPEC §1.1). */
  UNAUTHORIZED: { status: 401 },
  /** No such route, or no build, subjob, atom, worker or file with that id. */
  NOT_FOUND: { status: 404 },
  /** The path exists but not with that method; the `Allow` header lists the methods it takes. */
  METHOD_NOT_ALLOWED: { status: 405 },
  /** The build is not in a state that allows it: a retry of a build still running, or of one whose project is gone. */
  CONFLICT: { status: 409 },
  /** `Expected-Session-Id` names another master process: the master was restarted. */
  SESSION_EXPIRED: { status: 412 },
  /** The body is longer than `max_body_bytes`. */
  PAYLOAD_TOO_LARGE: { status: 413 },
  /** The master's database refused a write (a full or read-only disk, say); the request changed nothing. */
  STORE_WRITE_FAILED: { status: 503 },
  /** A fault of the master's; it logged the details. */
  INTERNAL: { status: 500 },
} as const satisfies Record<string, { readonly status: number }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export const ERROR_CODE_NAMES = Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]];

/** The code an error status gets when the error itself does not carry one of ours. */
export function errorCodeForStatus(status: number): ErrorCode {
  switch (status) {
    case 400: return 'VALIDATION_FAILED';
    case 401: return 'UNAUTHORIZED';
    case 404: return 'NOT_FOUND';
    case 405: return 'METHOD_NOT_ALLOWED';
    case 409: return 'CONFLICT';
    case 412: return 'SESSION_EXPIRED';
    case 413: return 'PAYLOAD_TOO_LARGE';
    default: return status >= 500 ? 'INTERNAL' : 'BAD_REQUEST';
  }
}

function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/**
 * The code an error answer carries. `BAD_REQUEST` is also the default code of shared/errors.ts's
 * badRequest(), which the rest of the code uses for a wrong field: only the HTTP layer's own unreadable
 * request keeps it (marked by UNREADABLE); every other 400 is a VALIDATION_FAILED.
 */
export function errorCodeOf(error: ClusterRunnerError): ErrorCode {
  if (error.code === UNREADABLE) return 'BAD_REQUEST';
  if (error.code !== 'BAD_REQUEST' && isErrorCode(error.code) && ERROR_CODES[error.code].status === error.status) return error.code;
  return errorCodeForStatus(error.status);
}

const UNREADABLE = 'UNREADABLE_REQUEST';

/** A 400 for a request that cannot be read at all (as opposed to one with a wrong value). */
export function unreadableRequest(message: string): ClusterRunnerError {
  return new ClusterRunnerError(UNREADABLE, message, { status: 400 });
}
