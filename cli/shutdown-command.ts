/**
 * `clusterrunner shutdown` (SPEC §6.5, §8): asks the master to drain some or all of its workers. A draining
 * worker takes no new subjobs, finishes what it runs, tears down and exits.
 */
import { errorMessage } from '../shared/errors.ts';
import { loadCommandConf, type CommonFlags } from './common.ts';
import { isAuthenticationRefusal, isUnreachable, MasterClient, type ShutdownRequest } from './master-client.ts';

export interface ShutdownFlags extends CommonFlags {
  readonly masterUrl?: string;
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

export async function runShutdownCommand(flags: ShutdownFlags): Promise<number> {
  const problem = (line: string): number => {
    process.stderr.write(`clusterrunner: ${line}\n`);
    return 1;
  };
  const request = shutdownRequestBody(flags);
  if (typeof request === 'string') return problem(request);
  let client: MasterClient;
  let confFile: string;
  try {
    const conf = loadCommandConf('client', flags, { master_url: flags.masterUrl });
    client = new MasterClient({ url: conf.masterUrl, secret: conf.secret });
    confFile = conf.confFile;
  } catch (error) {
    return problem(errorMessage(error));
  }
  try {
    const ids = await client.shutdownWorkers(request);
    if (ids.length === 0) {
      process.stdout.write(`${client.url} has no workers to shut down\n`);
    } else {
      process.stdout.write(`shutting down ${ids.length === 1 ? 'worker' : 'workers'} ${ids.join(', ')} on ${client.url}: ` +
        'each finishes the atoms it runs, tears down and exits\n');
    }
    return 0;
  } catch (error) {
    let hint = '';
    if (isAuthenticationRefusal(error)) hint = `\nThe secret in ${confFile} is not the master's: copy the master's \`secret\` into it.`;
    else if (isUnreachable(error)) hint = '\nIs the master running? Pass its address with -m/--master-url.';
    else if ('workers' in request) hint = `\nList the workers with GET ${client.url}/v1/worker.`;
    return problem(`${errorMessage(error)}${hint}`);
  }
}
