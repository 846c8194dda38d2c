/**
 * Masks the secret and every configured credential in text that is shown or stored: console output, error
 * messages, output tails (issue 10 item 7), as CI systems mask secrets in logs. A build that prints a
 * credential (read from its parent's command line, a conf file, its environment) shows `***` instead.
 *
 * What it cannot promise: a value split across two chunks of streamed output, or transformed by the build
 * (base64, reversed) before it is printed, passes. The boundary is the secret itself; masking is a second line.
 */

export const MASK = '***';

/** Shorter values would mask ordinary words and numbers everywhere; a secret that short protects nothing. */
const MIN_MASKED_CHARS = 4;
/** Bounds the regular expression built below. */
const MAX_MASKED_VALUES = 1000;

/** Query keys whose values are credentials wherever a URL is printed (presigned URLs, tokens in links). */
const CREDENTIAL_QUERY_KEY = /(^|[-_.])(sig|signature|token|key|secret|password|passwd|pwd|credential|auth|session)/i;
const URL_IN_TEXT = /\bhttps?:\/\/[^\s"'<>`]+/g;

/**
 * The credentials an URL carries: its password (or a user name standing alone, a token), and its query
 * values. Not a URL: nothing.
 */
export function credentialValuesOf(url: string): string[] {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return [];
  }
  const values: string[] = [];
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  if (password !== '') values.push(password);
  else if (username !== '') values.push(username);
  for (const value of parsed.searchParams.values()) values.push(value);
  return values;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Query values under credential-like keys, in every http(s) URL of the text. */
function maskUrlQueries(text: string): string {
  return text.replace(URL_IN_TEXT, (url) => {
    const query = url.indexOf('?');
    if (query < 0) return url;
    const masked = url.slice(query + 1).replace(/([^&=#]+)=([^&#]*)/g, (pair, key: string, value: string) =>
      value !== '' && CREDENTIAL_QUERY_KEY.test(key) ? `${key}=${MASK}` : pair);
    return `${url.slice(0, query + 1)}${masked}`;
  });
}

export type Mask = (text: string) => string;

/**
 * A function that replaces every occurrence of the given values (also as they appear %-encoded in URLs) with
 * `***`, and credential-like query values of any URL. Values shorter than 4 characters are left alone.
 */
export function createMask(values: Iterable<string>): Mask {
  const wanted = new Set<string>();
  for (const value of values) {
    if (value.length < MIN_MASKED_CHARS) continue;
    wanted.add(value);
    wanted.add(encodeURIComponent(value));
    if (wanted.size >= MAX_MASKED_VALUES) break;
  }
  // Longest first, so a value containing another is masked whole.
  const alternatives = [...wanted].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const pattern = alternatives.length === 0 ? null : new RegExp(alternatives.join('|'), 'g');
  return (text) => {
    const exact = pattern === null ? text : text.replace(pattern, MASK);
    return exact.includes('://') ? maskUrlQueries(exact) : exact;
  };
}
