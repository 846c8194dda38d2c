import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request } from 'express';

export const SESSION_COOKIE = 'clusterrunner_session';

/** A signed-in operator's session lasts this long, ms (12 h). */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/** Sessions kept at once; the oldest is dropped first, so sign-ins cannot grow the master without bound. */
export const MAX_SESSIONS = 1000;

interface Session {
  readonly csrfToken: string;
  readonly expiresAt: number;
}

/**
 * Operator sessions of the dashboard: a random id in an HttpOnly, SameSite=Strict cookie, and a CSRF token
 * the page sends back in a header with every change. The secret itself is checked once at sign-in and is
 * never stored in or sent to the browser.
 */
export class OperatorSessions {
  readonly #secretKey: Buffer;
  readonly #sessions = new Map<string, Session>();

  constructor(secret: string) {
    // Compare digests, not the texts: equal lengths for timingSafeEqual, and the length of the secret stays hidden.
    this.#secretKey = createHmac('sha256', 'clusterrunner-operator').update(secret).digest();
  }

  isSecret(candidate: string): boolean {
    const digest = createHmac('sha256', 'clusterrunner-operator').update(candidate).digest();
    return timingSafeEqual(digest, this.#secretKey);
  }

  create(): { id: string; csrfToken: string } {
    const id = randomBytes(32).toString('base64url');
    const csrfToken = randomBytes(32).toString('base64url');
    this.#sessions.set(id, { csrfToken, expiresAt: Date.now() + SESSION_TTL_MS });
    while (this.#sessions.size > MAX_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value!);
    return { id, csrfToken };
  }

  /** The session the request's cookie names, if it is known and not expired. */
  find(req: Request): { id: string; csrfToken: string } | null {
    const id = cookie(req, SESSION_COOKIE);
    if (id === null) return null;
    const session = this.#sessions.get(id);
    if (!session) return null;
    if (session.expiresAt <= Date.now()) {
      this.#sessions.delete(id);
      return null;
    }
    return { id, csrfToken: session.csrfToken };
  }

  /** True when the request carries a live session and its CSRF header matches that session's token. */
  isCsrfValid(req: Request): boolean {
    const session = this.find(req);
    const header = req.headers['x-csrf-token'];
    if (!session || typeof header !== 'string') return false;
    const given = Buffer.from(header);
    const expected = Buffer.from(session.csrfToken);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  end(req: Request): void {
    const id = cookie(req, SESSION_COOKIE);
    if (id !== null) this.#sessions.delete(id);
  }
}

function cookie(req: Request, name: string): string | null {
  const header = req.headers.cookie;
  if (typeof header !== 'string' || header.length > 8192) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return /^[A-Za-z0-9_-]{1,100}$/.test(value) ? value : null;
    }
  }
  return null;
}
