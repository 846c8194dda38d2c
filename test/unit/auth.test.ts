import { describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { NonceCache, SIGNATURE_WINDOW_MS, computeDigest, digestMatches, signRequest, verifyRequest } from '../../shared/auth.ts';

const SECRET = 'correct horse battery staple';
const body = Buffer.from('{"type":"directory"}');

function verify(headers: Record<string, string>, options: { acceptLegacyDigest?: boolean; nonces?: NonceCache; nowMs?: number; path?: string; method?: string } = {}) {
  return verifyRequest({
    secret: SECRET,
    method: options.method ?? 'POST',
    path: options.path ?? '/v1/build',
    body,
    headers,
    acceptLegacyDigest: options.acceptLegacyDigest ?? true,
    nonces: options.nonces ?? new NonceCache(),
    ...(options.nowMs === undefined ? {} : { nowMs: options.nowMs }),
  });
}

describe('digest', () => {
  it('is the lower-case hex HMAC-SHA512 of the exact bytes', () => {
    expect(computeDigest(SECRET, body)).toBe(createHmac('sha512', SECRET).update(body).digest('hex'));
    expect(computeDigest(SECRET, body)).toMatch(/^[0-9a-f]{128}$/);
  });

  it('compares case-insensitively and refuses malformed values without throwing', () => {
    const expected = computeDigest(SECRET, body);
    expect(digestMatches(expected, expected)).toBe(true);
    expect(digestMatches(expected, expected.toUpperCase())).toBe(true);
    for (const bad of [undefined, '', 'zz', expected.slice(0, 127), `${expected}00`, 'g'.repeat(128), computeDigest('other secret', body)]) {
      expect(digestMatches(expected, bad)).toBe(false);
    }
  });
});

describe('request verification', () => {
  const legacy = { 'clusterrunner-message-authentication-digest': computeDigest(SECRET, body) };

  it('accepts the original body-only digest unless turned off', () => {
    expect(verify(legacy)).toBe('ok');
    expect(verify(legacy, { acceptLegacyDigest: false })).toBe('mismatch');
  });

  it('reports a missing digest apart from a wrong one', () => {
    expect(verify({})).toBe('missing');
    expect(verify({ 'clusterrunner-message-authentication-digest': 'ab'.repeat(64) })).toBe('mismatch');
  });

  it('accepts a signed request once, and only for its method and path', () => {
    const headers = signRequest(SECRET, 'POST', '/v1/build', body);
    const nonces = new NonceCache();
    expect(verify(headers, { nonces, acceptLegacyDigest: false })).toBe('ok');
    expect(verify(headers, { nonces, acceptLegacyDigest: false })).toBe('replayed');
    expect(verify(signRequest(SECRET, 'POST', '/v1/build', body), { path: '/v1/build/1' })).toBe('mismatch');
    expect(verify(signRequest(SECRET, 'PUT', '/v1/build', body))).toBe('mismatch');
  });

  it('refuses a signed request outside the time window', () => {
    const headers = signRequest(SECRET, 'POST', '/v1/build', body);
    expect(verify(headers, { nowMs: Date.now() + SIGNATURE_WINDOW_MS + 60_000 })).toBe('expired');
  });

  it('refuses a signed request whose body was changed', () => {
    const headers = signRequest(SECRET, 'POST', '/v1/build', '{"type":"git"}');
    expect(verify(headers)).toBe('mismatch');
  });
});
