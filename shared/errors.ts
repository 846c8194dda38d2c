/**
 * Errors with a stable code and an HTTP status. They become JSON in exactly one place (the master's error
 * middleware) and `{ code, message }` over the WebSocket; everywhere else they are just thrown.
 */
export class ClusterRunnerError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ClusterRunnerError';
    this.code = code;
    this.status = options.status ?? 500;
  }
}

/** Bad input from a user: the message names the field and what was expected. */
export function badRequest(message: string, code = 'BAD_REQUEST'): ClusterRunnerError {
  return new ClusterRunnerError(code, message, { status: 400 });
}

export function notFound(message: string): ClusterRunnerError {
  return new ClusterRunnerError('NOT_FOUND', message, { status: 404 });
}

export function conflict(message: string): ClusterRunnerError {
  return new ClusterRunnerError('CONFLICT', message, { status: 409 });
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
