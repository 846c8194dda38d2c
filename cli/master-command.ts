import { startMaster } from '../master/server.ts';
import { startEventlogFile } from '../master/eventlog-file.ts';
import { logIgnoredSettings, serviceLogger } from './original-settings.ts';
import { loadCommandConf, onStopSignals, packageVersion, type CommonFlags } from './common.ts';

export interface MasterFlags extends CommonFlags {
  readonly port?: string;
  /** Address to listen on; default every interface (workers on other machines connect to it). */
  readonly host?: string;
  /** The original's --eventlog-file: the master's events appended there as JSON lines. */
  readonly eventlogFile?: string;
}

/** `clusterrunner master`: runs until SIGTERM/SIGINT, then closes cleanly and exits 0. */
export async function runMasterCommand(flags: MasterFlags): Promise<number> {
  const conf = loadCommandConf('master', flags, { port: flags.port, eventlog_filename: flags.eventlogFile });
  const log = serviceLogger('master', conf);
  logIgnoredSettings(log, conf);
  const master = await startMaster({ conf, log, version: packageVersion(), ...(flags.host !== undefined ? { host: flags.host } : {}) });
  const eventlog = conf.eventlogFile === null ? null : startEventlogFile({ events: master.store.events, file: conf.eventlogFile, log });
  process.stdout.write(`ClusterRunner master listening on ${flags.host ?? 'every interface'} port ${master.port} (session ${master.sessionId})\n`);
  await new Promise<void>((resolve) => {
    const removeHandlers = onStopSignals(
      (signal) => {
        log.info({ signal }, 'stopping the master');
        void (eventlog?.close() ?? Promise.resolve()).then(() => master.close()).finally(() => {
          removeHandlers();
          resolve();
        });
      },
      () => {
        log.warn('second signal: exiting now');
        process.exit(0);
      },
    );
  });
  return 0;
}
