import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

/** The header of SPEC §1.1; HTTP header names are case-insensitive, Node gives them lower-cased. */
export const DIGEST_HEADER = 'clusterrunner-message-authentication-digest';
export const TIMESTAMP_HEADER = 'clusterrunner-timestamp';
export const NONCE_HEADER = 'clusterrunner-nonce';

/** A signed request older or newer than this is refused, so a captured one cannot be replayed later. */
export const SIGNATURE_WINDOW_MS = 5 * 60_000;

const HEX_DIGEST = /^[0-9a-f]{128}$/;

/** Lower-case hex HMAC-SHA512 of the exact bytes. */
export function computeDigest(secret: string, data: string | Buffer): string {
  return createHmac('sha512', secret).update(data).digest('hex');
}

/** Constant-time comparison of a received digest with the expected one; malformed input is just "no". */
export function digestMatches(expected: string, received: string | undefined): boolean {
  if (received === undefined) return false;
  const candidate = received.trim().toLowerCase();
  if (!HEX_DIGEST.test(candidate)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(candidate, 'hex'));
}

function signedPayload(method: string, path: string, timestampMs: number, nonce: string, body: string | Buffer): Buffer {
  const head = Buffer.from(`${method.toUpperCase()}\n${path}\n${timestampMs}\n${nonce}\n`, 'utf8');
  return Buffer.concat([head, typeof body === 'string' ? Buffer.from(body, 'utf8') : body]);
}

/**
 * Headers for a request our own clients send: the digest covers method, path, a timestamp and a nonce as
 * well as the body, so a captured request cannot be replayed at another path or time.
 */
export function signRequest(secret: string, method: string, path: string, body: string | Buffer = ''): Record<string, string> {
  const timestampMs = Date.now();
  const nonce = randomUUID();
  return {
    [DIGEST_HEADER]: computeDigest(secret, signedPayload(method, path, timestampMs, nonce, body)),
    [TIMESTAMP_HEADER]: String(timestampMs),
    [NONCE_HEADER]: nonce,
  };
}

export type VerifyResult = 'ok' | 'missing' | 'mismatch' | 'expired' | 'replayed';

/** Where the nonces of accepted signed requests are kept for their window; remember() is true when new. */
export interface NonceBook {
  remember(nonce: string, nowMs: number): boolean;
}

/** How long a nonce must be remembered: a request is accepted while its timestamp is within the window either way. */
export const NONCE_KEEP_MS = 2 * SIGNATURE_WINDOW_MS;

/**
 * Remembers recent nonces in memory so each signed request is accepted once. Entries leave by age; when
 * full, the oldest leave first, so sustained traffic never locks anyone out and memory stays bounded. The
 * master keeps its nonces in SQLite as well (master/store/nonce-store.ts), so a flood cannot push a
 * nonce out of its window there, and a restart forgets none.
 */
export class NonceCache implements NonceBook {
  readonly #seen = new Map<string, number>();
  readonly #maxEntries: number;

  constructor(maxEntries = 100_000) {
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#seen.size;
  }

  /** True when the nonce is new; records it. */
  remember(nonce: string, nowMs: number): boolean {
    this.#evict(nowMs);
    if (this.#seen.has(nonce)) return false;
    if (this.#seen.size >= this.#maxEntries) {
      const oldest = this.#seen.keys().next();
      if (oldest.done !== true) this.#seen.delete(oldest.value);
    }
    this.#seen.set(nonce, nowMs);
    return true;
  }

  #evict(nowMs: number): void {
    // Map iteration is insertion order, which is time order here.
    for (const [nonce, seenAt] of this.#seen) {
      if (nowMs - seenAt <= NONCE_KEEP_MS) break;
      this.#seen.delete(nonce);
    }
  }
}

export interface VerifyOptions {
  readonly secret: string;
  readonly method: string;
  readonly path: string;
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly acceptLegacyDigest: boolean;
  readonly nonces: NonceBook;
  readonly nowMs?: number;
}

function header(headers: VerifyOptions['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function isBodilessMethod(method: string): boolean {
  const upper = method.toUpperCase();
  return upper === 'GET' || upper === 'HEAD';
}

/**
 * Accepts our signed form (timestamp + nonce headers present) or, when allowed, the original's digest of
 * the body alone, which old clients send.
 */
export function verifyRequest(options: VerifyOptions): VerifyResult {
  const digest = header(options.headers, DIGEST_HEADER);
  if (digest === undefined || digest === '') return 'missing';
  const timestamp = header(options.headers, TIMESTAMP_HEADER);
  const nonce = header(options.headers, NONCE_HEADER);
  if (timestamp !== undefined && nonce !== undefined) {
    const timestampMs = Number(timestamp);
    const expected = computeDigest(options.secret, signedPayload(options.method, options.path, timestampMs, nonce, options.body));
    if (!/^\d{1,16}$/.test(timestamp) || nonce.length > 128 || !digestMatches(expected, digest)) return 'mismatch';
    const nowMs = options.nowMs ?? Date.now();
    if (Math.abs(nowMs - timestampMs) > SIGNATURE_WINDOW_MS) return 'expired';
    return options.nonces.remember(nonce, nowMs) ? 'ok' : 'replayed';
  }
  if (!options.acceptLegacyDigest) return 'mismatch';
  // The original's digest covers the body only, so every GET (empty body) carries the same one: one captured
  // read would open every read for ever. Reads need the signed form; writes keep the original's trade-off.
  if (isBodilessMethod(options.method)) return 'mismatch';
  return digestMatches(computeDigest(options.secret, options.body), digest) ? 'ok' : 'mismatch';
}

/**
 * What a master holding secret answers to a client's identity challenge (GET /v1/identity); the domain
 * prefix keeps it apart from request digests.
 */
export function identityResponse(secret: string, challenge: string): string {
  return computeDigest(secret, `clusterrunner-identity\n${challenge}`);
}
