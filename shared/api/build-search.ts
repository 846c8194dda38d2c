/**
 * The build search language of SPEC §11 (LayerCI's): space-separated terms, all of which must match.
 *
 *   query  := space* ( term ( space+ term )* )? space* END
 *   term   := "-"? ( phrase | keyed | word )
 *   keyed  := KEY ":" ( phrase | word )          KEY is one of repo, branch, job, id, status
 *   phrase := '"' ( any character but '"' and '\' | '\' any character )* '"'
 *   word   := one or more characters that are neither space nor '"'
 *
 * The bare words `running`, `done` and `failed` match by state. A tokenizer turns the text into tokens with
 * their positions; a recursive-descent parser turns the tokens into terms, and every refusal names the
 * 0-based position and what was expected there.
 */
import { ClusterRunnerError } from '../errors.ts';

export const SEARCH_FIELDS = ['repo', 'branch', 'job', 'id', 'status'] as const;
export type SearchField = (typeof SEARCH_FIELDS)[number];

export const SEARCH_STATES = ['running', 'done', 'failed'] as const;
export type SearchState = (typeof SEARCH_STATES)[number];

/** Longer queries than this are refused: a search box, not a program. */
export const MAX_SEARCH_CHARS = 1024;
export const MAX_SEARCH_TERMS = 32;

export type SearchTerm =
  | { readonly kind: 'text'; readonly text: string; readonly isNegated: boolean; readonly position: number }
  | { readonly kind: 'field'; readonly field: SearchField; readonly value: string; readonly isNegated: boolean; readonly position: number }
  | { readonly kind: 'state'; readonly state: SearchState; readonly isNegated: boolean; readonly position: number };

/** A 400 that says where the query went wrong and what would have been accepted there. */
export class SearchSyntaxError extends ClusterRunnerError {
  readonly position: number;
  readonly expected: string;

  constructor(position: number, expected: string, detail = '') {
    super('VALIDATION_FAILED', `Query parameter q: at position ${position}, expected ${expected}${detail === '' ? '' : ` (${detail})`}.`, { status: 400 });
    this.name = 'SearchSyntaxError';
    this.position = position;
    this.expected = expected;
  }
}

// ---- tokens ----------------------------------------------------------------------------------------------

type Token =
  | { readonly type: 'space'; readonly position: number }
  | { readonly type: 'minus'; readonly position: number }
  | { readonly type: 'key'; readonly name: string; readonly position: number }
  | { readonly type: 'word'; readonly text: string; readonly position: number }
  | { readonly type: 'phrase'; readonly text: string; readonly position: number }
  | { readonly type: 'end'; readonly position: number };

const isSpace = (char: string) => char === ' ' || char === '\t' || char === '\n' || char === '\r';
const KEY_AT = /^([A-Za-z_]+):/;

/**
 * Splits the text into tokens. A minus is a token only where a term starts; a key is a token only where
 * a term (after an optional minus) starts with letters and a colon, so `a-b` and `x:y` inside a value stay
 * part of their word.
 */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let at = 0;
  let isTermStart = true;
  while (at < text.length) {
    const char = text[at]!;
    if (isSpace(char)) {
      const start = at;
      while (at < text.length && isSpace(text[at]!)) at++;
      tokens.push({ type: 'space', position: start });
      isTermStart = true;
      continue;
    }
    if (char === '"') {
      const start = at;
      let value = '';
      at++;
      for (;;) {
        if (at >= text.length) throw new SearchSyntaxError(text.length, 'a closing \'"\'', `the quote opened at position ${start} is not closed`);
        const inner = text[at]!;
        if (inner === '"') break;
        if (inner === '\\') {
          if (at + 1 >= text.length) throw new SearchSyntaxError(text.length, 'a character after \'\\\' and a closing \'"\'', `the quote opened at position ${start} is not closed`);
          value += text[at + 1]!;
          at += 2;
          continue;
        }
        value += inner;
        at++;
      }
      at++;
      tokens.push({ type: 'phrase', text: value, position: start });
      isTermStart = false;
      continue;
    }
    if (isTermStart && char === '-') {
      tokens.push({ type: 'minus', position: at });
      at++;
      continue;
    }
    if (isTermStart) {
      const key = KEY_AT.exec(text.slice(at, at + 64));
      if (key) {
        tokens.push({ type: 'key', name: key[1]!, position: at });
        at += key[0].length;
        isTermStart = false;
        continue;
      }
    }
    const start = at;
    while (at < text.length && !isSpace(text[at]!) && text[at] !== '"') at++;
    tokens.push({ type: 'word', text: text.slice(start, at), position: start });
    isTermStart = false;
  }
  tokens.push({ type: 'end', position: text.length });
  return tokens;
}

// ---- parser ----------------------------------------------------------------------------------------------

function describe(token: Token): string {
  switch (token.type) {
    case 'space': return 'a space';
    case 'minus': return "'-'";
    case 'key': return `'${token.name}:'`;
    case 'word': return JSON.stringify(token.text);
    case 'phrase': return 'a quoted phrase';
    case 'end': return 'the end of the query';
    default: {
      const never: never = token;
      return String(never);
    }
  }
}

/** Parses `q`; an empty or blank query has no terms and matches every build. */
export function parseBuildSearch(text: string): SearchTerm[] {
  if (text.length > MAX_SEARCH_CHARS) {
    throw new SearchSyntaxError(MAX_SEARCH_CHARS, 'the end of the query', `a query holds at most ${MAX_SEARCH_CHARS} characters`);
  }
  const tokens = tokenize(text);
  let index = 0;
  const peek = () => tokens[index]!;
  const take = () => tokens[index++]!;

  const parseValue = (key: Extract<Token, { type: 'key' }>): string => {
    const token = peek();
    if (token.type === 'word' || token.type === 'phrase') {
      take();
      if (token.text === '') throw new SearchSyntaxError(token.position, `a value for '${key.name}:'`, 'the quotes are empty');
      return token.text;
    }
    throw new SearchSyntaxError(token.position, `a value after '${key.name}:'`, `found ${describe(token)}`);
  };

  const parseTerm = (): SearchTerm => {
    const first = peek();
    let isNegated = false;
    if (first.type === 'minus') {
      take();
      isNegated = true;
    }
    const token = take();
    switch (token.type) {
      case 'phrase':
        if (token.text === '') throw new SearchSyntaxError(token.position, 'text between the quotes', 'the quotes are empty');
        return { kind: 'text', text: token.text, isNegated, position: first.position };
      case 'word': {
        const lower = token.text.toLowerCase();
        if ((SEARCH_STATES as readonly string[]).includes(lower)) {
          return { kind: 'state', state: lower as SearchState, isNegated, position: first.position };
        }
        return { kind: 'text', text: token.text, isNegated, position: first.position };
      }
      case 'key': {
        const field = token.name.toLowerCase();
        if (!(SEARCH_FIELDS as readonly string[]).includes(field)) {
          throw new SearchSyntaxError(token.position, `one of the keys ${SEARCH_FIELDS.map((f) => `${f}:`).join(', ')}`,
            `unknown key '${token.name}:'; put the word in quotes to search for it as text`);
        }
        const value = parseValue(token);
        return { kind: 'field', field: field as SearchField, value, isNegated, position: first.position };
      }
      case 'minus':
      case 'space':
      case 'end':
        throw new SearchSyntaxError(token.position, isNegated ? "a term after '-'" : 'a term', `found ${describe(token)}`);
      default: {
        const never: never = token;
        throw new Error(`unknown token ${String(never)}`);
      }
    }
  };

  const terms: SearchTerm[] = [];
  if (peek().type === 'space') take();
  while (peek().type !== 'end') {
    terms.push(parseTerm());
    if (terms.length > MAX_SEARCH_TERMS) {
      throw new SearchSyntaxError(terms.at(-1)!.position, 'the end of the query', `a query holds at most ${MAX_SEARCH_TERMS} terms`);
    }
    const after = peek();
    if (after.type === 'space') take();
    else if (after.type !== 'end') throw new SearchSyntaxError(after.position, 'a space or the end of the query', `found ${describe(after)}`);
  }
  return terms;
}
