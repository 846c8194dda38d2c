import { Command, CommanderError } from 'commander';
import { ClusterRunnerError } from '../shared/errors.ts';
import { packageVersion } from './common.ts';
import { collectRemoteFile, collectVariable, joinRemoteFileArguments, runBuildCommand, type BuildFlags } from './build-command.ts';
import { collectWorkerId, runShutdownCommand } from './shutdown-command.ts';
import { runStopCommand } from './stop-command.ts';
import { runListCommand, runStatusCommand, runWorkersCommand } from './status-commands.ts';
import { runLogsCommand } from './logs-command.ts';
import { collectAtom, runArtifactsCommand, runAttachCommand, runCancelCommand, runRetryCommand } from './build-actions.ts';
import { COMPLETION_SHELLS, runCompletionCommand } from './completion-command.ts';
import { endQuietlyOnClosedOutput } from './command-output.ts';
import { EXIT_CODES_HELP, EXIT_SUCCESS, EXIT_USAGE, exitCodeForError } from './exit-codes.ts';

function withCommonFlags(command: Command): Command {
  return command
    .option('-c, --config-file <path>', 'configuration file (default ~/.clusterrunner/clusterrunner.conf; another path must exist)')
    .option('-v, --verbose', 'log debug messages')
    .option('-q, --quiet', 'log warnings and errors only');
}

/** -m, -c, --json: every command that talks to a master. */
function withClientFlags(command: Command): Command {
  return withCommonFlags(command)
    .option('-m, --master-url <url>', 'the master (default: master_url of the conf, else the local master on its [master] port)')
    .option('--json', 'print the answer as JSON on stdout (messages for people go to stderr)')
    .addHelpText('after', `\n${EXIT_CODES_HELP}`);
}

function withResultsFlags(command: Command): Command {
  return command
    .option('--results <dir>', 'where the artifacts go: DIR/<build id>/ and DIR/latest (default ./build_results)')
    .option('--no-results', 'download no artifacts');
}

/**
 * The `clusterrunner` command line (SPEC §8, issue 16). Returns the exit code (cli/exit-codes.ts). The
 * commands that run a master or a worker load them only when asked: a client command starts without them.
 */
export async function main(argv: readonly string[]): Promise<number> {
  endQuietlyOnClosedOutput();
  let result: Promise<number> = Promise.resolve(EXIT_SUCCESS);
  const program = new Command('clusterrunner')
    .description('ClusterRunner: a distributed build and test runner')
    .version(packageVersion())
    .exitOverride()
    .showHelpAfterError()
    .addHelpText('after', `\n${EXIT_CODES_HELP}`);

  withCommonFlags(program.command('master').description('run the master service'))
    .option('-p, --port <port>', 'port to listen on (default 43000)')
    .option('--host <address>', 'address to listen on (default: every interface; 127.0.0.1 keeps other machines out)')
    .option('--eventlog-file <path>', 'also append the event log (GET /v1/eventlog) to this file as JSON lines, or STDOUT')
    .action((flags) => {
      result = import('./master-command.ts').then((command) => command.runMasterCommand(flags));
    });

  withCommonFlags(program.command('worker').alias('slave').description('run a worker daemon that executes atoms for a master'))
    .option('-m, --master-url <url>', 'the master, e.g. http://build-master:43000')
    .option('-e, --num-executors <n>', 'executors (atoms run at once) on this machine (default 1)')
    .option('-n, --name <name>', 'worker name (default host:pid)')
    .option('--pool <name>', "the pool this worker belongs to (a master's [pool NAME])")
    .option('--labels <a,b>', 'labels this worker carries, for jobs that say requires: [a, b] (conf key labels)')
    .option('-p, --port <port>', "the original slave's port: ignored with a warning (a worker listens on no port)")
    .option('--eventlog-file <path>', 'the original\'s event log file: ignored with a warning (workers keep no event log)')
    .action((flags) => {
      result = import('./worker-command.ts').then((command) => command.runWorkerCommand(flags));
    });

  withCommonFlags(program.command('example').description('run the example job on a local master and worker, then stop them'))
    .option('--keep', 'keep the temporary results folder')
    .action((flags) => {
      result = import('./example-command.ts').then((command) => command.runExampleCommand(flags));
    });

  const build = withResultsFlags(withClientFlags(program.command('build').description('run a job of a project on a master and wait for it (without -m: on this machine)')))
    .usage('[options] [git --url URL [--branch B] [--hash H] [--project-directory P] | directory [--project-directory P]]')
    .option('-j, --job-name <name>', 'the job of clusterrunner.yaml to run (needed when it defines several)')
    .option('-f, --remote-file <name> <url>', 'download URL into the project folder as NAME before setup (repeatable)', collectRemoteFile)
    .option('-e, --env <KEY=VALUE>', 'a variable for every atom, setup and teardown of the build (repeatable)', collectVariable)
    .option('--priority <n>', 'higher runs first (default 0)')
    .configureHelp({ showGlobalOptions: true });
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

  withClientFlags(program.command('status').argument('[id]', 'a build id').description('one build (exit code: its result once it has one), or the queue and the workers'))
    .action((id: string | undefined, flags) => {
      result = runStatusCommand(id, flags);
    });
  withClientFlags(program.command('list').description('builds, newest last (SPEC §11 filters where the master has them)'))
    .option('--status <list>', 'comma list of statuses, e.g. FAILURE,ERROR')
    .option('--job <name>', 'job name')
    .option('--branch <branch>', 'git branch')
    .option('--repository <url-or-name>', 'git repository')
    .option('--created-after <epoch-s>', 'created after this time (seconds since 1970)')
    .option('--created-before <epoch-s>', 'created before this time (seconds since 1970)')
    .option('--search <query>', 'search terms (the master\'s q language, e.g. "failed branch:main")')
    .option('--order <asc|desc>', 'by id (default asc)')
    .option('--limit <n>', 'builds per page, 1 to 200 (default 20)')
    .option('--offset <n>', 'builds to skip')
    .action((flags) => {
      result = runListCommand(flags);
    });
  withClientFlags(program.command('logs').argument('<id>', 'a build id').description('console output of a build\'s atoms (or of one), live with --follow'))
    .option('--atom <subjob/atom>', 'one atom, e.g. 1/0 (as the build\'s output names it)')
    .option('--follow', 'keep printing new output until the atom (or the build) is done')
    .action((id: string, flags) => {
      result = runLogsCommand(id, flags);
    });
  withClientFlags(program.command('cancel').argument('<id>', 'a build id').description('cancel a build: its running atoms are stopped'))
    .action((id: string, flags) => {
      result = runCancelCommand(id, flags);
    });
  withResultsFlags(withClientFlags(program.command('retry').argument('<id>', 'a build id').description('run the failed atoms of a finished build again (or those named), then follow it')))
    .option('--atom <subjob/atom>', 'retry this atom (repeatable; default: every failed atom)', collectAtom)
    .option('--no-wait', 'do not follow the build')
    .action((id: string, flags) => {
      result = runRetryCommand(id, flags);
    });
  withResultsFlags(withClientFlags(program.command('attach').argument('<id>', 'a build id').description('follow a build as `build` does, then fetch its results')))
    .action((id: string, flags) => {
      result = runAttachCommand(id, flags);
    });
  withClientFlags(program.command('artifacts').argument('<id>', 'a build id').description('download a build\'s artifacts into build_results/<id>/'))
    .option('-o, --output <dir>', 'unpack into this folder instead (it must not exist, or be empty)')
    .action((id: string, flags) => {
      result = runArtifactsCommand(id, flags);
    });
  withClientFlags(program.command('workers').description('the master\'s workers'))
    .action((flags) => {
      result = runWorkersCommand(flags);
    });
  withCommonFlags(program.command('validate').argument('[dir]', 'the project folder (default: the current one)')
    .description('check clusterrunner.yaml and run its atomizers here, counting atoms (no master needed)'))
    .option('-j, --job-name <name>', 'only this job')
    .option('--no-atomize', 'check the file only; run no atomizer')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', '\nExit codes: 0 every job is valid and its atomizers ran, 3 otherwise.')
    .action((dir: string | undefined, flags) => {
      result = import('./validate-command.ts').then((command) => command.runValidateCommand(dir, flags));
    });
  program.command('completion').argument('<shell>', COMPLETION_SHELLS.join(' or '))
    .description('print a shell completion script: source <(clusterrunner completion bash)')
    .action((shell: string) => {
      result = Promise.resolve(runCompletionCommand(program, shell));
    });

  withClientFlags(program.command('shutdown').description('drain workers: they finish their running atoms, tear down and exit'))
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
    if (error instanceof CommanderError) {
      // --help and --version "fail" with exit code 0; everything else commander refuses is a usage error.
      return error.exitCode === 0 ? EXIT_SUCCESS : EXIT_USAGE;
    }
    if (error instanceof ClusterRunnerError) {
      process.stderr.write(`clusterrunner: ${error.message}\n`);
      return exitCodeForError(error);
    }
    process.stderr.write(`clusterrunner: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    return exitCodeForError(error);
  }
}
