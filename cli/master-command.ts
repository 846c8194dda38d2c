import { startMaster } from '../master/server.ts';
import { commandLogger, loadCommandConf, onStopSignals, packageVersion, type CommonFlags } from './common.ts';

export interface MasterFlags extends CommonFlags {
  readonly port?: string;
}

/** `clusterrunner master`: runs until SIGTERM/SIGINT, then closes cleanly and exits 0. */
export async function runMasterCommand(flags: MasterFlags): Promise<number> {
  const conf = loadCommandConf('master', flags, { port: flags.port });
  const log = commandLogger('master', conf);
  const master = await startMaster({ conf, log, version: packageVersion() });
  process.stdout.write(`ClusterRunner master listening on port ${master.port} (session ${master.sessionId})\n`);
  await new Promise<void>((resolve) => {
    const removeHandlers = onStopSignals(
      (signal) => {
        log.info({ signal }, 'stopping the master');
        void master.close().finally(() => {
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
