/** JUnit XML reports as the real tools write them (test/fixtures/junit/), and the files that must be refused. */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NotJunitError, parseJunitFile } from '../../master/tests/junit-parser.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/junit/', import.meta.url));
const fixture = (name: string) => join(FIXTURES, name);

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tempFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cr-junit-'));
  dirs.push(dir);
  writeFileSync(join(dir, name), text);
  return join(dir, name);
}

describe('parseJunitFile', () => {
  it('reads pytest (xunit2): failure with its message and traceback, setup error, skip', async () => {
    const tests = await parseJunitFile(fixture('pytest.xml'));
    expect(tests.map((test) => [test.classname, test.name, test.status])).toEqual([
      ['test_sample', 'test_passes', 'passed'],
      ['test_sample', 'test_fails', 'failed'],
      ['test_sample', 'test_errors', 'errored'],
      ['test_sample', 'test_skipped', 'skipped'],
    ]);
    expect(tests[1]!.message).toMatch(/^AssertionError: lists differ\nassert \[1, 2\] == \[1, 3\]/);
    expect(tests[1]!.message).toContain('test_sample.py:8: AssertionError');
    expect(tests[2]!.message).toContain('fixture exploded');
    expect(tests[0]!.message).toBeNull();
    expect(tests[1]!.timeS).toBe(0.005);
  });

  it('reads Vitest\'s junit reporter: the suite file as classname, a multi-line failure, a skip', async () => {
    const tests = await parseJunitFile(fixture('vitest.xml'));
    expect(tests.map((test) => [test.name, test.status])).toEqual([
      ['arithmetic > adds', 'passed'], ['arithmetic > subtracts wrongly', 'failed'], ['arithmetic > is skipped', 'skipped'],
    ]);
    expect(tests[1]!.classname).toBe('sample.test.ts');
    expect(tests[1]!.message).toMatch(/^expected 2 to be 1 \/\/ Object\.is equality\nAssertionError: expected 2 to be 1/);
    expect(tests[2]!.message).toBeNull();
  });

  it('reads go-junit-report: CDATA failure text after the generic message; system-out is not a message', async () => {
    const tests = await parseJunitFile(fixture('go-junit-report.xml'));
    expect(tests.map((test) => [test.name, test.status, test.message])).toEqual([
      ['TestAdd', 'passed', null],
      ['TestDivide', 'failed', 'Failed\ncalc_test.go:21: Divide(1, 0) = 0, want an error'],
      ['TestNetwork', 'skipped', 'Skipped\ncalc_test.go:30: no network in CI'],
    ]);
  });

  it('reads Surefire: a bare testsuite root, entities, an error, thousands separators in time', async () => {
    const tests = await parseJunitFile(fixture('surefire.xml'));
    expect(tests.map((test) => [test.name, test.status])).toEqual([
      ['depositsMoney', 'passed'], ['refusesOverdraft', 'failed'], ['talksToTheBank', 'errored'], ['closesAccount', 'skipped'],
    ]);
    expect(tests[1]!.message).toMatch(/^expected: <100> but was: <-20>\norg\.opentest4j/);
    expect(tests[2]!.timeS).toBe(1230);
    expect(tests[3]!.message).toBe('not on Fridays');
  });

  it('reads nested testsuites: a case inherits the nearest suite\'s file; a bad time reads as null', async () => {
    const tests = await parseJunitFile(fixture('nested-testsuites.xml'));
    expect(tests).toEqual([
      { name: 'inherits the file', classname: 'Outer::Inner', file: 'spec/outer_spec.rb', status: 'passed', timeS: 0.5, message: null },
      { name: 'has its own file', classname: 'Outer::Inner', file: 'spec/own_spec.rb', status: 'errored', timeS: 0.25,
        message: 'NoMethodError\nundefined method `x\' for nil' },
      { name: 'outer case', classname: 'Outer', file: 'spec/outer_spec.rb', status: 'passed', timeS: null, message: null },
    ]);
  });

  it('refuses a billion-laughs file at its DOCTYPE, without expanding anything', async () => {
    await expect(parseJunitFile(fixture('billion-laughs.xml'))).rejects.toThrow(/line \d+, column \d+: a DOCTYPE is not accepted/);
  });

  it('reports a malformed (cut short) file with where it broke', async () => {
    await expect(parseJunitFile(fixture('malformed.xml'))).rejects.toThrow(/unclosed|unexpected end|line/i);
  });

  it('refuses a file over the size limit before reading it, and too deep or too many cases while reading', async () => {
    const big = tempFile('big.xml', `<testsuite>${'<testcase name="a"/>'.repeat(1000)}</testsuite>`);
    await expect(parseJunitFile(big, { maxBytes: 1000, maxDepth: 32, maxTests: 10_000 })).rejects.toThrow(/over the limit of 1000 bytes/);
    await expect(parseJunitFile(big, { maxBytes: 1e6, maxDepth: 32, maxTests: 999 })).rejects.toThrow(/more than 999 test cases/);
    const deep = tempFile('deep.xml', `<testsuites>${'<testsuite>'.repeat(40)}${'</testsuite>'.repeat(40)}</testsuites>`);
    await expect(parseJunitFile(deep)).rejects.toThrow(/nest deeper than 32 levels/);
  });

  it('tells an XML file that is not a test report (another root) apart from a broken one', async () => {
    const coverage = tempFile('coverage.xml', '<?xml version="1.0"?><coverage line-rate="0.9"><packages/></coverage>');
    await expect(parseJunitFile(coverage)).rejects.toBeInstanceOf(NotJunitError);
    await expect(parseJunitFile(tempFile('empty.xml', ''))).rejects.toThrow(/root element/);
  });
});
