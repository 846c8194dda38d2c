/** The search language of SPEC §11: every form it takes and every refusal, with its position. */
import { describe, expect, it } from 'vitest';
import { MAX_SEARCH_CHARS, MAX_SEARCH_TERMS, SearchSyntaxError, parseBuildSearch } from '../../shared/api/build-search.ts';

function refusal(q: string): SearchSyntaxError {
  try {
    parseBuildSearch(q);
  } catch (error) {
    expect(error).toBeInstanceOf(SearchSyntaxError);
    return error as SearchSyntaxError;
  }
  throw new Error(`expected ${JSON.stringify(q)} to be refused`);
}

describe('parseBuildSearch: the forms', () => {
  it('has no terms for an empty or blank query', () => {
    expect(parseBuildSearch('')).toEqual([]);
    expect(parseBuildSearch('   \t ')).toEqual([]);
  });

  it('reads bare words as text, with their positions', () => {
    expect(parseBuildSearch('  flaky  deploy ')).toEqual([
      { kind: 'text', text: 'flaky', isNegated: false, position: 2 },
      { kind: 'text', text: 'deploy', isNegated: false, position: 9 },
    ]);
  });

  it('reads a quoted phrase as one text, with \\" and \\\\ escapes', () => {
    expect(parseBuildSearch('"disk full" "say \\"hi\\" \\\\ ok"')).toEqual([
      { kind: 'text', text: 'disk full', isNegated: false, position: 0 },
      { kind: 'text', text: 'say "hi" \\ ok', isNegated: false, position: 12 },
    ]);
  });

  it('reads -word, -"phrase" and -key:value as exclusions', () => {
    expect(parseBuildSearch('-flaky -"a b" -branch:main')).toEqual([
      { kind: 'text', text: 'flaky', isNegated: true, position: 0 },
      { kind: 'text', text: 'a b', isNegated: true, position: 7 },
      { kind: 'field', field: 'branch', value: 'main', isNegated: true, position: 14 },
    ]);
  });

  it('reads every key, in any case, with a word or a quoted value', () => {
    expect(parseBuildSearch('repo:app Branch:feature/x job:"Unit tests" id:42 STATUS:failure,error')).toEqual([
      { kind: 'field', field: 'repo', value: 'app', isNegated: false, position: 0 },
      { kind: 'field', field: 'branch', value: 'feature/x', isNegated: false, position: 9 },
      { kind: 'field', field: 'job', value: 'Unit tests', isNegated: false, position: 26 },
      { kind: 'field', field: 'id', value: '42', isNegated: false, position: 43 },
      { kind: 'field', field: 'status', value: 'failure,error', isNegated: false, position: 49 },
    ]);
  });

  it('keeps colons and minus signs inside a value', () => {
    expect(parseBuildSearch('repo:https://example.com/org/app.git a-b')).toEqual([
      { kind: 'field', field: 'repo', value: 'https://example.com/org/app.git', isNegated: false, position: 0 },
      { kind: 'text', text: 'a-b', isNegated: false, position: 37 },
    ]);
  });

  it('reads running, done and failed as states, and their quoted forms as text', () => {
    expect(parseBuildSearch('running -DONE failed "failed"')).toEqual([
      { kind: 'state', state: 'running', isNegated: false, position: 0 },
      { kind: 'state', state: 'done', isNegated: true, position: 8 },
      { kind: 'state', state: 'failed', isNegated: false, position: 14 },
      { kind: 'text', text: 'failed', isNegated: false, position: 21 },
    ]);
  });

  it('searches a word with a colon as text when it is quoted', () => {
    expect(parseBuildSearch('"https://example.com"')).toEqual([{ kind: 'text', text: 'https://example.com', isNegated: false, position: 0 }]);
  });
});

describe('parseBuildSearch: the refusals name the position and what was expected', () => {
  const cases: [string, string, number, RegExp][] = [
    ['an unterminated quote', 'ok "disk full', 13, /expected a closing '"' \(the quote opened at position 3 is not closed\)/],
    ['a quote ending in a backslash', '"abc\\', 5, /expected a character after '\\' and a closing '"'/],
    ['an unknown key', 'ok owner:bob', 3, /expected one of the keys repo:, branch:, job:, id:, status: \(unknown key 'owner:'/],
    ['an unknown key in a URL', 'https://example.com', 0, /unknown key 'https:'; put the word in quotes/],
    ['a key with no value', 'branch:', 7, /expected a value after 'branch:' \(found the end of the query\)/],
    ['a key followed by a space', 'branch: main', 7, /expected a value after 'branch:' \(found a space\)/],
    ['a key with an empty quoted value', 'job:""', 4, /expected a value for 'job:' \(the quotes are empty\)/],
    ['an empty phrase', 'a ""', 2, /expected text between the quotes/],
    ['a lone minus', 'a - b', 3, /expected a term after '-' \(found a space\)/],
    ['a minus at the end', 'a -', 3, /expected a term after '-' \(found the end of the query\)/],
    ['a double minus', '--a', 1, /expected a term after '-' \(found '-'\)/],
    ['a phrase glued to a word', 'abc"def"', 3, /expected a space or the end of the query \(found a quoted phrase\)/],
    ['a word glued to a phrase', '"abc"def', 5, /expected a space or the end of the query \(found "def"\)/],
  ];
  for (const [what, q, position, message] of cases) {
    it(`refuses ${what}: ${JSON.stringify(q)}`, () => {
      const error = refusal(q);
      expect(error.position).toBe(position);
      expect(error.status).toBe(400);
      expect(error.code).toBe('VALIDATION_FAILED');
      expect(error.message).toMatch(new RegExp(`^Query parameter q: at position ${position}, `));
      expect(error.message).toMatch(message);
    });
  }

  it(`refuses more than ${MAX_SEARCH_CHARS} characters`, () => {
    expect(refusal('a'.repeat(MAX_SEARCH_CHARS + 1)).message).toMatch(/at most 1024 characters/);
    expect(parseBuildSearch('a'.repeat(MAX_SEARCH_CHARS))).toHaveLength(1);
  });

  it(`refuses more than ${MAX_SEARCH_TERMS} terms`, () => {
    const words = Array.from({ length: MAX_SEARCH_TERMS + 1 }, (_, i) => `w${i}`);
    expect(refusal(words.join(' ')).message).toMatch(/at most 32 terms/);
    expect(parseBuildSearch(words.slice(1).join(' '))).toHaveLength(MAX_SEARCH_TERMS);
  });
});
