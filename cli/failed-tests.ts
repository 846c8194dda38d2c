import { z } from 'zod';
import { signRequest } from '../shared/auth.ts';
import { errorMessage } from '../shared/errors.ts';
import type { CommandOutput } from './command-output.ts';
import type { BuildView, MasterClient } from './master-client.ts';
import { neutraliseBlock, neutraliseLine } from './terminal-text.ts';

/**
 * `clusterrunner build` names the failing tests and their messages (SPEC §15) before the failed atoms'
 * console tails: a test name and an assertion say more than the last lines of a runner's output.
 */

/** Tests shown with their message; the rest are counted. */
const MAX_TESTS_SHOWN = 20;
const MESSAGE_LINES = 8;
const REQUEST_TIMEOUT_MS = 10_000;

const summarySchema = z.looseObject({ passed: z.number(), failed: z.number(), errored: z.number(), skipped: z.number() });
const testListSchema = z.looseObject({
  tests: z.array(z.looseObject({
    name: z.string(), classname: z.string(), status: z.string(), subjob_id: z.number(), atom_id: z.number(), message: z.string().nullable(),
  })),
  total: z.number(),
});

export async function printFailedTests(options: { readonly client: MasterClient; readonly conf: { readonly secret: string }; readonly out: CommandOutput },
  build: BuildView): Promise<void> {
  const summary = summarySchema.safeParse((build as Record<string, unknown>)['tests']);
  // A master without test results (older, or a job without reports) says nothing about tests.
  if (!summary.success || summary.data.failed + summary.data.errored === 0) return;
  const { out } = options;
  const counts = summary.data;
  out.result('');
  out.result(`failed tests: ${counts.failed} failed, ${counts.errored} errored ` +
    `(of ${counts.passed + counts.failed + counts.errored + counts.skipped}; ${counts.skipped} skipped)`);
  let shown = 0;
  for (const status of ['failed', 'errored'] as const) {
    if (shown >= MAX_TESTS_SHOWN) break;
    const path = `/v2/builds/${build.id}/tests?status=${status}&limit=${MAX_TESTS_SHOWN - shown}`;
    let page: z.infer<typeof testListSchema>;
    try {
      const response = await fetch(`${options.client.url}${path}`, {
        headers: signRequest(options.conf.secret, 'GET', path), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), redirect: 'manual',
      });
      if (!response.ok) throw new Error(`the master answered ${response.status}`);
      page = testListSchema.parse(await response.json());
    } catch (error) {
      out.problem(`could not read the ${status} tests of build ${build.id}: ${errorMessage(error)}`);
      return;
    }
    for (const test of page.tests) {
      shown++;
      const name = test.classname === '' ? test.name : `${test.classname} > ${test.name}`;
      out.result(`  ${status.toUpperCase()} ${neutraliseLine(name)} (atom ${test.subjob_id}/${test.atom_id})`);
      const lines = neutraliseBlock(test.message ?? '').split('\n').filter((line) => line.trim() !== '');
      for (const line of lines.slice(0, MESSAGE_LINES)) out.result(`    | ${line}`);
      if (lines.length > MESSAGE_LINES) out.result(`    | … ${lines.length - MESSAGE_LINES} more lines`);
    }
  }
  const total = counts.failed + counts.errored;
  if (total > shown) out.result(`  … and ${total - shown} more: ${options.client.url}/v2/builds/${build.id}/tests?status=failed`);
}
