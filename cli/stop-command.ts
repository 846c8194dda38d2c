/**
 * `clusterrunner stop` (SPEC §8): stops the master and worker that local-mode builds started on this host,
 * found through the pid files under base_directory. Nothing running is fine.
 */
import { errorMessage } from '../shared/errors.ts';
import { loadCommandConf, type CommonFlags } from './common.ts';
import { exitCodeForError } from './exit-codes.ts';
import { logFilePath, stopLocalCluster } from './local-cluster.ts';

export async function runStopCommand(flags: CommonFlags): Promise<number> {
  try {
    const conf = loadCommandConf('client', flags, {});
    const outcomes = await stopLocalCluster(conf);
    let code = 0;
    for (const outcome of outcomes) {
      const what = `the local ${outcome.role} (pid ${outcome.pid})`;
      switch (outcome.result) {
        case 'stopped':
          process.stdout.write(`stopped ${what}\n`);
          break;
        case 'killed':
          process.stdout.write(`killed ${what}: it did not stop in time (see ${logFilePath(conf, outcome.role)})\n`);
          break;
        case 'stale':
          // Same pid but another start time: the pid was reused by a program that is not ours (issue 10 item 12).
          if (flags.quiet !== true) process.stdout.write(`${what} is no longer running (that pid, if alive, is another process now): signaled nothing, removed its pid file\n`);
          break;
        case 'alive':
          process.stderr.write(`clusterrunner: ${what} survived SIGKILL; check it with \`ps -o pid,stat,cmd -g ${outcome.pid}\`\n`);
          code = 1;
          break;
        default: {
          const unexpected: never = outcome.result;
          throw new Error(`unknown stop result ${String(unexpected)}`);
        }
      }
    }
    if (!outcomes.some((outcome) => outcome.result === 'stopped' || outcome.result === 'killed') && flags.quiet !== true) {
      process.stdout.write(`no local master or worker was running (pid files under ${conf.baseDirectory})\n`);
    }
    return code;
  } catch (error) {
    process.stderr.write(`clusterrunner: ${errorMessage(error)}\n`);
    return exitCodeForError(error);
  }
}
