import { Command, CommanderError } from 'commander';
import { ClusterRunnerError } from '../shared/errors.ts';
import { packageVersion } from './common.ts';
import { runMasterCommand } from './master-command.ts';
import { runWorkerCommand } from './worker-command.ts';
import { runExampleCommand } from './example-command.ts';
import { collectRemoteFile, joinRemoteFileArguments, runBuildCommand, type BuildFlags } from './build-command.ts';
import { collectWorkerId, runShutdownCommand } from './shutdown-command.ts';
import { runStopCommand } from './stop-command.ts';

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
    .option('--eventlog-file <path>', 'also append the event log (GET /v1/eventlog) to this file as JSON lines, or STDOUT')
    .action((flags) => {
      result = runMasterCommand(flags);
    });

  withCommonFlags(program.command('worker').alias('slave').description('run a worker daemon that executes atoms for a master'))
    .option('-m, --master-url <url>', 'the master, e.g. http://build-master:43000')
    .option('-e, --num-executors <n>', 'executors (atoms run at once) on this machine (default 1)')
    .option('-n, --name <name>', 'worker name (default host:pid)')
    .option('-p, --port <port>', "the original slave's port: ignored with a warning (a worker listens on no port)")
    .option('--eventlog-file <path>', 'the original\'s event log file: ignored with a warning (workers keep no event log)')
    .action((flags) => {
      result = runWorkerCommand(flags);
    });

  withCommonFlags(program.command('example').description('run the example job on a local master and worker, then stop them'))
    .option('--keep', 'keep the temporary results folder')
    .action((flags) => {
      result = runExampleCommand(flags);
    });

  const build = withCommonFlags(program.command('build').description('run a job of a project on a master and wait for it (without --master-url: on this machine)'))
    .usage('[options] [git --url URL [--branch B] [--hash H] [--project-directory P] | directory [--project-directory P]]')
    .option('--master-url <url>', 'the master to use; without it, a master and a worker on this machine are used (started when none answers)')
    .option('-j, --job-name <name>', 'the job of clusterrunner.yaml to run (needed when it defines several)')
    .option('-f, --remote-file <name> <url>', 'download URL into the project folder as NAME before setup (repeatable)', collectRemoteFile)
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', '\nExit codes: 0 SUCCESS, 1 FAILURE, 2 ERROR, CANCELED or no build. Artifacts go to ./build_results/.');
  build.command('git').description('build a git repository (fetched by the master and workers)')
    .requiredOption('--url <url>', 'repository URL')
    .option('--branch <branch>', 'branch or ref to fetch (default master)')
    .option('--hash <hash>', 'exact commit to build')
    .option('--project-directory <path>', 'folder inside the repository holding clusterrunner.yaml')
    .action((flags: { url: string; branch?: string; hash?: string; projectDirectory?: string }) => {
      result = runBuildCommand(build.opts<BuildFlags>(), { type: 'git', ...flags });
    });
  build.command('directory', { isDefault: true }).description('build a folder of this machine (the default; default folder: the current one)')
    .option('--project-directory <path>', 'the folder holding clusterrunner.yaml (default: the current folder)')
    .action((flags: { projectDirectory?: string }) => {
      result = runBuildCommand(build.opts<BuildFlags>(), { type: 'directory', ...flags });
    });

  withCommonFlags(program.command('shutdown').description('drain workers: they finish their running atoms, tear down and exit'))
    .option('-m, --master-url <url>', 'the master (default: master_url of the conf file)')
    .option('-a, --all-workers', 'every worker of the master')
    .option('-w, --worker-id <id>', 'one worker, by id (repeatable)', collectWorkerId)
    .action((flags) => {
      result = runShutdownCommand(flags);
    });

  withCommonFlags(program.command('stop').description('stop the master and worker that local builds started on this machine'))
    .action((flags) => {
      result = runStopCommand(flags);
    });

  try {
    await program.parseAsync(joinRemoteFileArguments(argv), { from: 'user' });
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
