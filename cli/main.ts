import { Command, CommanderError } from 'commander';
import { ClusterRunnerError } from '../shared/errors.ts';
import { packageVersion } from './common.ts';
import { runMasterCommand } from './master-command.ts';
import { runWorkerCommand } from './worker-command.ts';
import { runExampleCommand } from './example-command.ts';

function withCommonFlags(command: Command): Command {
  return command
    .option('-c, --config-file <path>', 'configuration file (default ~/.clusterrunner/clusterrunner.conf)')
    .option('-v, --verbose', 'log debug messages')
    .option('-q, --quiet', 'log warnings and errors only');
}

/** The `clusterrunner` command line (SPEC §8). Returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('clusterrunner')
    .description('ClusterRunner: a distributed build and test runner')
    .version(packageVersion())
    .exitOverride()
    .showHelpAfterError();

  withCommonFlags(program.command('master').description('run the master service'))
    .option('-p, --port <port>', 'port to listen on (default 43000)')
    .action((flags) => {
      result = runMasterCommand(flags);
    });

  withCommonFlags(program.command('worker').alias('slave').description('run a worker daemon that executes atoms for a master'))
    .option('-m, --master-url <url>', 'the master, e.g. http://build-master:43000')
    .option('-e, --num-executors <n>', 'executors (atoms run at once) on this machine (default 1)')
    .option('-n, --name <name>', 'worker name (default host:pid)')
    .action((flags) => {
      result = runWorkerCommand(flags);
    });

  withCommonFlags(program.command('example').description('run the example job on a local master and worker, then stop them'))
    .option('--keep', 'keep the temporary results folder')
    .action((flags) => {
      result = runExampleCommand(flags);
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return await result;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof ClusterRunnerError) {
      process.stderr.write(`clusterrunner: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`clusterrunner: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    return 1;
  }
}
