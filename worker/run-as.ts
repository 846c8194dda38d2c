/**
 * run_as_user (issue 10 item 7): a worker running as root runs build commands as another user, so that
 * build code cannot read the worker's conf (the secret), its git cache or other builds' folders.
 */
import { execFile } from 'node:child_process';
import { chmod } from 'node:fs/promises';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { ClusterRunnerError } from '../shared/errors.ts';
import { findUser, type RunAsUser } from '../shared/process.ts';

const execFileAsync = promisify(execFile);

/** run_as_user as uid and gid; refused unless this worker runs as root (only root may change user). */
export function resolveRunAs(nameOrUid: string | null): RunAsUser | null {
  if (nameOrUid === null) return null;
  const user = findUser(nameOrUid);
  if (user === null) throw new ClusterRunnerError('BAD_CONF', `run_as_user "${nameOrUid}" is not a user of this machine (/etc/passwd)`, { status: 400 });
  if (process.getuid?.() !== 0) {
    throw new ClusterRunnerError('BAD_CONF', `run_as_user "${nameOrUid}" needs the worker to run as root; remove it to run builds as the worker's own user`, { status: 400 });
  }
  return user;
}

/** HOME, USER and LOGNAME of the user commands run as, so they do not write into the worker's home. */
export function userEnvironment(user: RunAsUser | null): Record<string, string> {
  return user === null ? {} : { HOME: user.home, USER: user.name, LOGNAME: user.name };
}

/** The build's own copy of the project becomes the build user's: its commands write there. */
export async function handOver(dir: string, user: RunAsUser): Promise<void> {
  await chmod(dirname(dir), 0o711);
  await execFileAsync('chown', ['-R', `${user.uid}:${user.gid}`, '--', dir]);
}
