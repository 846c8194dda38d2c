/**
 * What the tests of the daily commands (test/cli/commands-*.test.ts, issue 16) share: a real master and worker
 * with a client conf, finished builds, and runners with time limits a loaded machine does not reach.
 */
import { spawn } from 'node:child_process';
import type { Server } from 'node:http';
import { cleanupAll, postBuild, startTestMaster, startTestWorker, waitForBuild, type TestMaster } from '../support/cluster.ts';
import { runCli } from '../support/build-results.ts';
import { clientSetup, projectWith, type ClientSetup } from './helpers.ts';

export const servers: Server[] = [];
/** Generous: on a loaded machine one CLI start alone has taken 14 s. */
export const BUILD_TIMEOUT_MS = 120_000;
export const TEST_TIMEOUT_MS = 600_000;

/**
 * Runs a program without blocking this process: the masters of these tests live in it, and spawnSync
 * would keep them from answering the very command it waits for.
 */
export function runProgram(file: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), BUILD_TIMEOUT_MS);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** runCli with a time limit that a busy machine does not reach. */
export function runCliSlowly(args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return runCli(args, { timeoutMs: BUILD_TIMEOUT_MS, ...options });
}

export const FAILING_JOB = `
Checks:
  commands:
    - echo "output of atom $N"
    - test "$N" != 2
  atomizers:
    - N: seq 1 3
`;

export async function clusterWithClient(executors = 2): Promise<{ master: TestMaster; client: ClientSetup; cli: (args: readonly string[], cwd?: string) => ReturnType<typeof runCli> }> {
  const master = await startTestMaster();
  await startTestWorker(master, { executors });
  const client = clientSetup(master.secret, { master_url: master.url });
  const cli = (args: readonly string[], cwd?: string) => runCliSlowly([...args, '-c', client.conf], { env: client.env, ...(cwd ? { cwd } : {}) });
  return { master, client, cli };
}

export async function finishedBuild(master: TestMaster, yaml: string): Promise<any> {
  const id = await postBuild(master, { type: 'directory', project_directory: projectWith(yaml) });
  return waitForBuild(master, id, undefined, BUILD_TIMEOUT_MS);
}


/** Closes the fake masters a file started and stops its clusters: once, after the file. */
export async function closeAll(): Promise<void> {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  await cleanupAll();
}
