import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SaxesParser, type SaxesTagPlain } from 'saxes';

/** How a test ended, as the API names it (SPEC §15). */
export const TEST_STATUSES = ['passed', 'failed', 'errored', 'skipped'] as const;
export type TestStatus = (typeof TEST_STATUSES)[number];

export interface ParsedTest {
  readonly name: string;
  readonly classname: string;
  readonly file: string | null;
  readonly status: TestStatus;
  /** Seconds; null when the report gives none (or not a number). */
  readonly timeS: number | null;
  /** The failure, error or skip message and its text, cut to MAX_MESSAGE_CHARS; null for a pass. */
  readonly message: string | null;
}

export interface JunitLimits {
  /** A file larger than this is reported, not read. */
  readonly maxBytes: number;
  /** Elements nested deeper than this make the file malformed (a real report nests a few levels). */
  readonly maxDepth: number;
  /** Test cases past this make the file rejected: one report does not get to fill the database. */
  readonly maxTests: number;
}

export const DEFAULT_JUNIT_LIMITS: JunitLimits = Object.freeze({ maxBytes: 32 * 1024 * 1024, maxDepth: 32, maxTests: 100_000 });

export const MAX_MESSAGE_CHARS = 4096;
const MAX_NAME_CHARS = 1024;
/** Read in pieces this size, with a turn of the event loop between them, so requests are served meanwhile. */
const READ_CHUNK_BYTES = 64 * 1024;

/** The file is not a test report (its root is another element): skipped without a complaint. */
export class NotJunitError extends Error {}

/**
 * Reads one JUnit XML report as it streams: JUnit/Surefire, pytest, Vitest/Jest's junit reporters,
 * go-junit-report — `<testsuites>` (nested or not) or a bare `<testsuite>` root, `<testcase>` with
 * `<failure>`, `<error>` or `<skipped>`. `system-out`/`system-err` are read past, not kept.
 *
 * Bounded: the file size is checked first; depth and test count while reading. A DOCTYPE is refused
 * outright, so no entity is ever defined, let alone expanded (a "billion laughs" file stops at its
 * declaration); saxes itself knows only the five predefined entities and character references.
 * Throws with the line and column of what was wrong; a file that fails yields no test at all.
 */
export async function parseJunitFile(path: string, limits: JunitLimits = DEFAULT_JUNIT_LIMITS, signal?: AbortSignal): Promise<ParsedTest[]> {
  const info = await stat(path);
  if (info.size > limits.maxBytes) {
    throw new Error(`the file is ${info.size} bytes, over the limit of ${limits.maxBytes} bytes for a test report`);
  }
  const parser = new SaxesParser({ position: true, xmlns: false });
  const tests: ParsedTest[] = [];
  let failure: Error | null = null;
  let depth = 0;
  let isRootSeen = false;
  /** The `file` attribute of each open testsuite: a testcase without its own inherits the nearest. */
  const suiteFiles: (string | null)[] = [];
  let current: { name: string; classname: string; file: string | null; timeS: number | null } | null = null;
  let outcome: { status: TestStatus; message: string } | null = null;
  /** Collecting the text of a failure, error or skipped element (bounded). */
  let isInOutcome = false;

  const fail = (message: string) => {
    failure ??= new Error(`line ${parser.line}, column ${parser.column}: ${message}`);
  };
  parser.on('error', (error) => {
    // saxes says "6:0: unclosed tag"; the report says where the same way for every problem.
    failure ??= new Error(error.message.replace(/^(\d+):(\d+): /, 'line $1, column $2: '));
  });
  parser.on('doctype', () => fail('a DOCTYPE is not accepted in a test report (no DTD, no entity declarations)'));
  parser.on('opentag', (tag: SaxesTagPlain) => {
    depth++;
    if (depth > limits.maxDepth) return fail(`elements nest deeper than ${limits.maxDepth} levels`);
    if (!isRootSeen) {
      isRootSeen = true;
      if (tag.name !== 'testsuites' && tag.name !== 'testsuite') failure ??= new NotJunitError(`the root element is <${tag.name}>`);
    }
    const attributes = tag.attributes;
    switch (tag.name) {
      case 'testsuite':
        suiteFiles.push(attributes['file'] ?? suiteFiles.at(-1) ?? null);
        return;
      case 'testcase':
        if (tests.length >= limits.maxTests) return fail(`more than ${limits.maxTests} test cases`);
        current = {
          name: (attributes['name'] ?? '').slice(0, MAX_NAME_CHARS),
          classname: (attributes['classname'] ?? attributes['class'] ?? '').slice(0, MAX_NAME_CHARS),
          file: (attributes['file'] ?? suiteFiles.at(-1) ?? null)?.slice(0, MAX_NAME_CHARS) ?? null,
          timeS: parseSeconds(attributes['time']),
        };
        outcome = null;
        return;
      case 'failure':
      case 'error':
      case 'skipped': {
        if (current === null) return;
        const status: TestStatus = tag.name === 'failure' ? 'failed' : tag.name === 'error' ? 'errored' : 'skipped';
        // A failure outranks a skip in the same case (pytest writes both for an xfail that passed strictly).
        if (outcome !== null && rank(outcome.status) >= rank(status)) return;
        outcome = { status, message: attributes['message'] ?? '' };
        isInOutcome = !tag.isSelfClosing;
        return;
      }
      default:
        return;
    }
  });
  const addText = (text: string) => {
    if (!isInOutcome || outcome === null || outcome.message.length > MAX_MESSAGE_CHARS) return;
    outcome.message += (outcome.message === '' || outcome.message.endsWith('\n') ? '' : '\n') + text.trim();
  };
  parser.on('text', addText);
  parser.on('cdata', addText);
  parser.on('closetag', (tag: SaxesTagPlain) => {
    depth--;
    switch (tag.name) {
      case 'testsuite':
        suiteFiles.pop();
        return;
      case 'failure':
      case 'error':
      case 'skipped':
        isInOutcome = false;
        return;
      case 'testcase': {
        if (current === null) return;
        const message = outcome === null ? null : outcome.message.trim().slice(0, MAX_MESSAGE_CHARS);
        tests.push({ ...current, status: outcome?.status ?? 'passed', message: message === '' ? null : message });
        current = null;
        outcome = null;
        return;
      }
      default:
        return;
    }
  });

  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: READ_CHUNK_BYTES });
  try {
    for await (const chunk of stream) {
      if (signal?.aborted) throw new Error('reading the test report was stopped');
      parser.write(chunk as string);
      if (failure !== null) throw failure;
      await nextTurn();
    }
    parser.close();
  } finally {
    stream.destroy();
  }
  if (failure !== null) throw failure;
  if (!isRootSeen) throw new Error('the file holds no XML element');
  return tests;
}

function rank(status: TestStatus): number {
  return status === 'skipped' ? 0 : status === 'failed' ? 1 : 2;
}

function parseSeconds(raw: string | undefined): number | null {
  if (raw === undefined) return null;
  // Surefire writes thousands separators on long runs ("1,234.5").
  const seconds = Number(raw.replaceAll(',', ''));
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}
