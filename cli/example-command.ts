import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { startMaster } from '../master/server.ts';
import { WorkerDaemon } from '../worker/daemon.ts';
import { createLogger } from '../shared/log.ts';
import { signRequest } from '../shared/auth.ts';
import { errorMessage } from '../shared/errors.ts';
import { localConf, packageVersion } from './common.ts';
import { downloadResults } from './build-results.ts';
import { MasterClient } from './master-client.ts';

const EXAMPLE_PROJECT = fileURLToPath(new URL('../conf/example-project', import.meta.url));

interface BuildView {
  status: string;
  num_atoms: number | null;
  details: string | null;
  error_message: string | null;
  failed_atoms: { command_string: string }[] | null;
}

/**
 * `clusterrunner example`: a real build on this machine. Starts a master (with its SQLite file) and a worker
 * with one executor per CPU on loopback, runs conf/example-project's job, prints what happened, and stops.
 */
export async function runExampleCommand(options: { keep?: boolean }): Promise<number> {
  const base = await mkdtemp(join(tmpdir(), 'clusterrunner-example-'));
  const secret = randomBytes(32).toString('hex');
  const log = createLogger({ name: 'example', level: 'warn' });
  const conf = localConf(base, secret);
  const master = await startMaster({
    host: '127.0.0.1',
    log,
    version: packageVersion(),
    conf: { ...conf, port: 0, heartbeatIntervalMs: 1000, killGraceMs: 1000, noWorkerTimeoutMs: 60_000 },
  });
  const executors = Math.max(1, cpus().length);
  const worker = new WorkerDaemon({ ...conf, masterUrl: master.url, numExecutors: executors, heartbeatIntervalMs: 1000, name: `${hostname()}:${process.pid}`, log });
  await worker.start();
  process.stdout.write(`master ${master.url}, worker with ${executors} executors, results in ${base}\n`);
  try {
    const body = JSON.stringify({ type: 'directory', project_directory: EXAMPLE_PROJECT });
    const created = await fetch(`${master.url}/v1/build`, {
      method: 'POST', body, headers: { 'Content-Type': 'application/json', ...signRequest(secret, 'POST', '/v1/build', body) },
    });
    const { build_id: buildId } = (await created.json()) as { build_id: number };
    process.stdout.write(`build ${buildId} queued: ${EXAMPLE_PROJECT}\n`);
    let build: BuildView;
    let lastLine = '';
    for (;;) {
      build = ((await (await fetch(`${master.url}/v1/build/${buildId}`)).json()) as { build: BuildView }).build;
      const line = `${build.status}${build.details ? `: ${build.details}` : ''}`;
      if (line !== lastLine) process.stdout.write(`  ${line}\n`);
      lastLine = line;
      if (['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED'].includes(build.status)) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const subjobs = ((await (await fetch(`${master.url}/v1/build/${buildId}/subjob`)).json()) as {
      subjobs: { id: number; atoms: { id: number; command_string: string; exit_code: number | null; actual_time: number | null }[] }[];
    }).subjobs;
    for (const subjob of subjobs) {
      for (const atom of subjob.atoms) {
        const console = (await (await fetch(`${master.url}/v1/build/${buildId}/subjob/${subjob.id}/atom/${atom.id}/console?max_lines=1`)).json()) as { content: string };
        process.stdout.write(`  ${atom.command_string.padEnd(40)} exit ${atom.exit_code}  ${console.content.trim()}\n`);
      }
    }
    if (build.error_message) process.stdout.write(`error: ${build.error_message}\n`);
    process.stdout.write(`build ${buildId}: ${build.status}, ${build.num_atoms ?? 0} atoms\n`);
    // The master stops when this command ends, so its artifacts URL would lead nowhere: with --keep the
    // artifacts are downloaded next to the rest of the results, which stay.
    if (options.keep && build.status !== 'ERROR') {
      try {
        const results = await downloadResults(new MasterClient({ url: master.url, secret }), buildId, { resultsRoot: join(base, 'build_results') });
        process.stdout.write(`artifacts: ${results.folder} (${results.files} files)\n`);
      } catch (error) {
        process.stdout.write(`could not download the artifacts: ${errorMessage(error)}\n`);
      }
    } else if (!options.keep) {
      process.stdout.write('(run `clusterrunner example --keep` to keep the artifacts and the master\'s files)\n');
    }
    return build.status === 'SUCCESS' ? 0 : build.status === 'FAILURE' ? 1 : 2;
  } finally {
    worker.drain();
    await worker.exited;
    await master.close();
    if (!options.keep) await rm(base, { recursive: true, force: true });
  }
}
