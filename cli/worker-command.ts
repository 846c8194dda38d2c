import { WorkerDaemon } from '../worker/daemon.ts';
import { commandLogger, loadCommandConf, onStopSignals, type CommonFlags } from './common.ts';

export interface WorkerFlags extends CommonFlags {
  readonly masterUrl?: string;
  readonly numExecutors?: string;
  readonly name?: string;
}

/**
 * `clusterrunner worker`: first SIGTERM/SIGINT drains (finish running atoms, tear down, exit 0); a second
 * one stops the atoms (the master runs them elsewhere) and exits within the kill grace.
 */
export async function runWorkerCommand(flags: WorkerFlags): Promise<number> {
  const conf = loadCommandConf('worker', flags, { master_url: flags.masterUrl, num_executors: flags.numExecutors });
  const log = commandLogger('worker', conf);
  const daemon = new WorkerDaemon({ ...conf, name: flags.name ?? `${conf.hostname}:${process.pid}`, log });
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
