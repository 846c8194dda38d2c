/**
 * `clusterrunner shutdown` (SPEC §6.5, §8): asks the master to drain some or all of its workers. A draining
 * worker takes no new subjobs, finishes what it runs, tears down and exits.
 */
import { ClusterRunnerError, errorMessage } from '../shared/errors.ts';
import { runClientCommand, type ClientFlags } from './client-context.ts';
import { EXIT_SUCCESS, EXIT_USAGE } from './exit-codes.ts';
import { isAuthenticationRefusal, isUnreachable, type ShutdownRequest } from './master-client.ts';

export interface ShutdownFlags extends ClientFlags {
  readonly allWorkers?: boolean;
  readonly workerId?: readonly string[];
}

export function collectWorkerId(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The POST /v1/worker/shutdown body, or the usage problem. */
export function shutdownRequestBody(flags: ShutdownFlags): ShutdownRequest | string {
  const ids = flags.workerId ?? [];
  if (flags.allWorkers === true && ids.length > 0) return 'give either -a/--all-workers or -w/--worker-id, not both';
  if (flags.allWorkers === true) return { shutdown_all: true };
  if (ids.length === 0) return 'say which workers to shut down: -a/--all-workers, or -w/--worker-id ID (repeatable; ids are in GET /v1/worker)';
  const bad = ids.filter((id) => !/^\d+$/.test(id.trim()));
  if (bad.length > 0) return `worker ids are whole numbers (got ${bad.map((id) => JSON.stringify(id)).join(', ')})`;
  return { workers: ids.map((id) => Number(id.trim())) };
}

export function runShutdownCommand(flags: ShutdownFlags): Promise<number> {
  const request = shutdownRequestBody(flags);
  if (typeof request === 'string') {
    process.stderr.write(`clusterrunner: ${request}\n`);
    return Promise.resolve(EXIT_USAGE);
  }
  return runClientCommand(flags, async ({ client }, out) => {
    let ids: readonly number[];
    try {
      ids = await client.shutdownWorkers(request);
    } catch (error) {
      if ('workers' in request && !isAuthenticationRefusal(error) && !isUnreachable(error)) {
        throw new ClusterRunnerError(error instanceof ClusterRunnerError ? error.code : 'MASTER_REFUSED',
          `${errorMessage(error)}\nList the workers with \`clusterrunner workers\`.`, { status: error instanceof ClusterRunnerError ? error.status : 500 });
      }
      throw error;
    }
    if (out.isJson) out.json({ workers: ids });
    else if (ids.length === 0) out.result(`${client.url} has no workers to shut down`);
    else {
      out.result(`shutting down ${ids.length === 1 ? 'worker' : 'workers'} ${ids.join(', ')} on ${client.url}: ` +
        'each finishes the atoms it runs, tears down and exits');
    }
    return EXIT_SUCCESS;
  });
}
