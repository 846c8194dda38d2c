import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ClusterRunnerError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/log.ts';
import { errorCodeForStatus, errorCodeOf, type ErrorCode } from '../../shared/api/error-codes.ts';
import type { ErrorAnswer } from '../../shared/api/views.ts';

/**
 * The one place errors become JSON: `{"STATUS": "FAILURE", "error": "...", "code": "..."}` with the right
 * HTTP status (SPEC §1) and a stable code from shared/api/error-codes.ts.
 */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    let status = 500;
    let code: ErrorCode = 'INTERNAL';
    let message = 'Internal error; the master logged the details.';
    if (error instanceof ClusterRunnerError) {
      status = error.status;
      code = errorCodeOf(error);
      message = error.message;
    } else if (error instanceof URIError && isHttpError(error)) {
      // The router could not decode a %-escape of the path: the path is at fault, not the body.
      status = 400;
      code = 'BAD_REQUEST';
      message = `The request path ${JSON.stringify(req.originalUrl.split('?')[0])} holds a malformed %-escape.`;
    } else if (isHttpError(error)) {
      // Errors raised by express's body parser: too large, aborted, bad encoding.
      status = error.status;
      code = status === 413 || status >= 500 ? errorCodeForStatus(status) : 'BAD_REQUEST';
      message = error.type === 'entity.too.large'
        ? `The request body is larger than the limit of ${error.limit ?? 'max_body_bytes'} bytes.`
        : error.expose ? error.message : 'The request body could not be read.';
    } else if (isStoreWriteFailure(error)) {
      // The database refused a write (disk full, read-only file): the request failed, the master did not.
      status = 503;
      code = 'STORE_WRITE_FAILED';
      message = `The master could not save this request: its database refused the write (${error.code}).`;
    }
    if (status >= 500) log.error({ err: error, method: req.method, url: req.originalUrl }, 'request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const answer: ErrorAnswer = { STATUS: 'FAILURE', error: message, code };
    res.status(status).json(answer);
  };
}

function isHttpError(error: unknown): error is { status: number; type?: string; limit?: number; expose?: boolean; message: string } {
  return typeof error === 'object' && error !== null && typeof (error as { status?: unknown }).status === 'number' &&
    (error as { status: number }).status >= 400 && (error as { status: number }).status < 600;
}

/** better-sqlite3's SqliteError for a write the disk or the file refused. */
function isStoreWriteFailure(error: unknown): error is Error & { code: string } {
  return error instanceof Error && error.name === 'SqliteError' &&
    /^SQLITE_(FULL|READONLY|IOERR|CANTOPEN|PERM)/.test(String((error as { code?: unknown }).code));
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new ClusterRunnerError('NOT_FOUND', `No such route: ${req.method} ${req.path}`, { status: 404 }));
};

/** 405 with the Allow header RFC 9110 asks for, naming the path as the client sent it. */
export function methodNotAllowed(allowed: readonly string[]): RequestHandler {
  const allow = allowed.map((method) => method.toUpperCase()).join(', ');
  return (req, res, next) => {
    res.set('Allow', allow);
    const path = req.originalUrl.split('?')[0];
    next(new ClusterRunnerError('METHOD_NOT_ALLOWED', `Method ${req.method} is not allowed on ${path}; use ${allow}.`, { status: 405 }));
  };
}
