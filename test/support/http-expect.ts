/**
 * Assertions shared by the HTTP API tests (test/integration/http-*.test.ts): the error shape and headers of
 * SPEC §1, and small waits on a real master.
 */
import { expect } from 'vitest';
import { api, eventually, type ApiResponse } from './cluster.ts';
import { ERROR_CODES, type ErrorCode } from '../../shared/api/error-codes.ts';

/** SPEC §1.1, word for word. */
export const NOT_AUTHENTICATED = 'Message digest does not match header, message not authenticated.';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * SPEC §1: every error is JSON `{"STATUS": "FAILURE", "error": "<words>", "code": "<CODE>"}` with the right
 * status, and the code is the catalogue's for that status (shared/api/error-codes.ts).
 */
export function expectFailure(response: ApiResponse, status: number, error?: string | RegExp): void {
  expect(response.status, `${response.status} ${response.text.slice(0, 300)}`).toBe(status);
  expect(response.headers.get('content-type') ?? '').toMatch(/^application\/json/);
  expect(response.body).toEqual({ STATUS: 'FAILURE', error: expect.any(String), code: expect.any(String) });
  expect(ERROR_CODES[response.body.code as ErrorCode]?.status, `code ${response.body.code} for a ${status}`).toBe(status);
  expect(response.body.error.length).toBeGreaterThan(0);
  if (typeof error === 'string') expect(response.body.error).toBe(error);
  else if (error !== undefined) expect(response.body.error).toMatch(error);
}

/** SPEC §1: `Api-Version` and the master process's `Session-Id` on every response. */
export function expectSessionHeaders(response: ApiResponse, sessionId: string): void {
  expect(response.headers.get('api-version'), `Api-Version on a ${response.status}`).toMatch(/^\S+$/);
  expect(response.headers.get('session-id'), `Session-Id on a ${response.status}`).toBe(sessionId);
}

/** Waits until GET /v1/worker lists `count` workers; returns them. */
export async function waitForWorkers(master: { url: string; secret: string }, count: number): Promise<any[]> {
  return eventually(`${count} workers listed`, async () => {
    const workers = (await api(master, 'GET', '/v1/worker')).body?.workers as any[] | undefined;
    return workers?.length === count ? workers : null;
  });
}

/** Resolves with the promise's value, or fails after ms: a bound on waits the test cannot poll. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
