/**
 * `clusterrunner status [ID]`, `list` and `workers` (issue 16): what the master knows, for people (one line
 * per thing, build text neutralised) or, with --json, the API's own answer for scripts.
 */
import { BUILD_STATUSES, isTerminalStatus, type BuildView, type WorkerView } from './master-client.ts';
import { parseBuildId, runClientCommand, type ClientFlags } from './client-context.ts';
import type { CommandOutput } from './command-output.ts';
import { EXIT_SUCCESS, exitCodeForStatus, usageError } from './exit-codes.ts';
import { summaryLine } from './follow-build.ts';
import { neutraliseBlock, neutraliseLine } from './terminal-text.ts';

/** Failed atoms named by `status ID`; the rest are counted. */
const MAX_FAILED_SHOWN = 20;

function buildLine(build: BuildView): string {
  const job = build.job_name === null ? '' : `  job ${neutraliseLine(build.job_name)}`;
  const atoms = build.num_atoms === null ? '' : `  ${build.num_atoms} atoms`;
  const failed = build.failed_atoms !== null && build.failed_atoms.length > 0 ? `, ${build.failed_atoms.length} failed` : '';
  const details = build.details === null || isTerminalStatus(build.status) ? '' : `  ${build.details}`;
  return `build ${String(build.id).padStart(4)}  ${build.status.padEnd(9)}${job}${atoms}${failed}${details}`;
}

function workerLine(worker: WorkerView): string {
  const state = !worker.is_alive ? 'dead' : worker.is_in_shutdown_mode ? 'draining' : 'alive';
  const busy = `${worker.num_executors_in_use}/${worker.num_executors} executors busy`;
  const builds = worker.current_build_ids.length > 0 ? `, builds ${worker.current_build_ids.join(', ')}` : '';
  return `worker ${String(worker.id).padStart(3)}  ${neutraliseLine(worker.name)}  ${state}, ${busy}${builds}`;
}

function showBuild(out: CommandOutput, build: BuildView): void {
  out.result(summaryLine(build));
  if (build.job_name !== null) out.result(`  job: ${neutraliseLine(build.job_name)}`);
  if (build.details !== null) out.result(`  ${build.details}`);
  if (build.error_message !== null) out.result(`  error: ${neutraliseBlock(build.error_message)}`);
  const failed = build.failed_atoms ?? [];
  for (const atom of failed.slice(0, MAX_FAILED_SHOWN)) {
    out.result(`  failed atom ${atom.subjob_id}/${atom.id} (exit code ${atom.exit_code}): ${neutraliseLine(atom.command_string)}`);
  }
  if (failed.length > MAX_FAILED_SHOWN) out.result(`  … and ${failed.length - MAX_FAILED_SHOWN} more failed atoms`);
  if (failed.length > 0) out.info(`  output: clusterrunner logs ${build.id} --atom SUBJOB/ATOM`);
}

/** One build (exit code = its result once terminal, 0 while it runs), or the queue and the workers. */
export function runStatusCommand(id: string | undefined, flags: ClientFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    if (id !== undefined) {
      const build = await client.getBuild(parseBuildId(id));
      if (out.isJson) out.json({ build });
      else showBuild(out, build);
      return isTerminalStatus(build.status) ? exitCodeForStatus(build.status) : EXIT_SUCCESS;
    }
    const [queue, workers] = await Promise.all([client.getQueue(), client.listWorkers()]);
    if (out.isJson) {
      out.json({ master: client.url, queue, workers });
      return EXIT_SUCCESS;
    }
    out.result(`master ${client.url}: ${queue.length} ${queue.length === 1 ? 'build' : 'builds'} queued or running, ${workers.length} ${workers.length === 1 ? 'worker' : 'workers'}`);
    for (const build of queue) out.result(`  ${buildLine(build)}`);
    for (const worker of workers) out.result(`  ${workerLine(worker)}`);
    return EXIT_SUCCESS;
  });
}

export function runWorkersCommand(flags: ClientFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    const workers = await client.listWorkers();
    if (out.isJson) {
      out.json({ workers });
      return EXIT_SUCCESS;
    }
    if (workers.length === 0) out.result(`${client.url} has no workers`);
    for (const worker of workers) out.result(workerLine(worker));
    return EXIT_SUCCESS;
  });
}

export interface ListFlags extends ClientFlags {
  readonly status?: string;
  readonly job?: string;
  readonly branch?: string;
  readonly repository?: string;
  readonly createdAfter?: string;
  readonly createdBefore?: string;
  readonly search?: string;
  readonly order?: string;
  readonly limit?: string;
  readonly offset?: string;
}

const MAX_FILTER_CHARS = 1024;

/** The GET /v2/builds query of SPEC §11 from list's flags, each checked and named when wrong. */
export function listQuery(flags: ListFlags): { query: Record<string, string>; hasFilters: boolean } {
  const query: Record<string, string> = {};
  const text = (flag: string, key: string, value: string | undefined) => {
    if (value === undefined) return;
    if (value.length > MAX_FILTER_CHARS) throw usageError(`${flag} is longer than ${MAX_FILTER_CHARS} characters`);
    query[key] = value;
  };
  const whole = (flag: string, key: string, value: string | undefined, min: number, max: number) => {
    if (value === undefined) return;
    if (!/^\d{1,15}$/.test(value.trim()) || Number(value) < min || Number(value) > max) throw usageError(`${flag} takes a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
    query[key] = String(Number(value));
  };
  if (flags.status !== undefined) {
    const statuses = flags.status.split(',').map((status) => status.trim().toUpperCase()).filter((status) => status !== '');
    const unknown = statuses.filter((status) => !(BUILD_STATUSES as readonly string[]).includes(status));
    if (statuses.length === 0 || unknown.length > 0) throw usageError(`--status takes a comma list of ${BUILD_STATUSES.join(', ')} (got ${JSON.stringify(flags.status)})`);
    query['status'] = statuses.join(',');
  }
  text('--job', 'job_name', flags.job);
  text('--branch', 'branch', flags.branch);
  text('--repository', 'repository', flags.repository);
  whole('--created-after', 'created_after', flags.createdAfter, 0, Number.MAX_SAFE_INTEGER);
  whole('--created-before', 'created_before', flags.createdBefore, 0, Number.MAX_SAFE_INTEGER);
  text('--search', 'q', flags.search);
  if (flags.order !== undefined) {
    if (flags.order !== 'asc' && flags.order !== 'desc') throw usageError(`--order takes asc or desc (got ${JSON.stringify(flags.order)})`);
    query['order'] = flags.order;
  }
  const hasFilters = Object.keys(query).length > 0;
  whole('--limit', 'limit', flags.limit, 1, 200);
  whole('--offset', 'offset', flags.offset, 0, Number.MAX_SAFE_INTEGER);
  return { query, hasFilters };
}

export function runListCommand(flags: ListFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    const { query, hasFilters } = listQuery(flags);
    const page = await client.listBuilds(query);
    // A master from before SPEC §11 ignores the filters and lists everything; saying so beats a wrong list.
    if (hasFilters && page.total === undefined) {
      throw usageError(`${client.url} does not filter builds yet (SPEC §11): only --limit and --offset work with it`);
    }
    if (out.isJson) {
      out.json(page);
      return EXIT_SUCCESS;
    }
    if (page.builds.length === 0) out.result('no builds');
    for (const build of page.builds) out.result(buildLine(build));
    const shownTo = Number(query['offset'] ?? 0) + page.builds.length;
    if (page.total !== undefined && page.total > shownTo) out.info(`${page.total - shownTo} more: --offset ${shownTo}`);
    else if (page.total === undefined && page.builds.length === Number(query['limit'] ?? 20)) out.info(`more may follow: --offset ${shownTo}`);
    return EXIT_SUCCESS;
  });
}
