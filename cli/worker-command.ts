import { WorkerDaemon } from '../worker/daemon.ts';
import { CONF_ERROR } from '../shared/conf.ts';
import { ClusterRunnerError } from '../shared/errors.ts';
import { POOL_NAME } from '../shared/pool-conf.ts';
import { loadCommandConf, onStopSignals, type CommonFlags } from './common.ts';
import { logIgnoredSettings, serviceLogger } from './original-settings.ts';

export interface WorkerFlags extends CommonFlags {
  readonly masterUrl?: string;
  readonly numExecutors?: string;
  readonly name?: string;
  /** SPEC §13: the pool this worker belongs to (a master's [pool NAME]). */
  readonly pool?: string;
  /** --labels a,b (SPEC §13): overrides the conf key labels. */
  readonly labels?: string;
  /** The original slave's --port: accepted and ignored (our workers connect out and listen on nothing). */
  readonly port?: string;
  /** The original's --eventlog-file: accepted and ignored with a warning (workers keep no event log). */
  readonly eventlogFile?: string;
}

/**
 * `clusterrunner worker`: first SIGTERM/SIGINT drains (finish running atoms, tear down, exit 0); a second
 * one stops the atoms (the master runs them elsewhere) and exits within the kill grace.
 */
export async function runWorkerCommand(flags: WorkerFlags): Promise<number> {
  const conf = loadCommandConf('worker', flags, {
    master_url: flags.masterUrl, num_executors: flags.numExecutors, eventlog_filename: flags.eventlogFile, labels: flags.labels,
  });
  if (flags.pool !== undefined && !POOL_NAME.test(flags.pool)) {
    throw new ClusterRunnerError(CONF_ERROR, `--pool ${JSON.stringify(flags.pool)} must be 1 to 64 letters, digits, _ . or - (starting with a letter or digit)`, { status: 400 });
  }
  const log = serviceLogger('worker', conf);
  logIgnoredSettings(log, conf, flags.port === undefined ? [] : [
    `--port ${flags.port} is ignored: a worker listens on no port, it connects to the master (${conf.masterUrl}) itself.`,
  ]);
  const daemon = new WorkerDaemon({ ...conf, name: flags.name ?? `${conf.hostname}:${process.pid}`, pool: flags.pool ?? null, log });
  const removeHandlers = onStopSignals(
    (signal) => {
      log.info({ signal }, 'draining the worker');
      daemon.drain();
    },
    (signal) => {
      log.warn({ signal }, 'second signal: stopping running atoms');
      daemon.stopNow();
    },
  );
  await daemon.start();
  const code = await daemon.exited;
  removeHandlers();
  return code;
}
