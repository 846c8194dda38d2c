import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/log.ts';
import type { ProjectSource } from '../shared/protocol.ts';
import { errorMessage } from '../shared/errors.ts';
import { validateGitSource, type GitCache } from '../shared/git.ts';

export interface Workspace {
  /** PROJECT_DIR on this worker. */
  readonly projectDir: string;
  /** A folder made for this build, removed at teardown; null when the project is the user's own folder. */
  readonly ownedDir: string | null;
}

export interface WorkspaceDeps {
  readonly git: GitCache;
  readonly projectsRoot: string;
  readonly allowLocalRepositories: boolean;
  readonly log: Logger;
  /** Unpacks the master's snapshot of the build's project into dir. */
  readonly downloadSnapshot: (dir: string, signal: AbortSignal) => Promise<void>;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isDirectory() ?? false;
}

/**
 * The folder a build's commands run in on this worker. A directory project runs in its own path when that
 * exists here (a shared or mirrored folder); a git project is checked out at the master's exact commit from
 * this worker's own cache of the repository. When neither works, the master's snapshot of the project is
 * used, so a worker never needs more than its connection to the master.
 */
export async function prepareWorkspace(buildId: number, project: ProjectSource, deps: WorkspaceDeps, signal: AbortSignal): Promise<Workspace> {
  const ownedDir = join(deps.projectsRoot, String(buildId));
  if (project.type === 'directory' && await isDirectory(project.path)) return { projectDir: project.path, ownedDir: null };
  if (project.type === 'git') {
    const source = { url: project.url, branch: project.branch, hash: project.commit, remote: project.remote };
    try {
      validateGitSource(source, { allowLocalRepositories: deps.allowLocalRepositories });
      await rm(ownedDir, { recursive: true, force: true });
      const commit = await deps.git.fetch(source, signal);
      await deps.git.checkout(source, commit, ownedDir, signal);
      const projectDir = project.subdirectory === null ? ownedDir : join(ownedDir, project.subdirectory);
      return { projectDir, ownedDir };
    } catch (error) {
      if (signal.aborted) throw error;
      deps.log.warn({ buildId, err: errorMessage(error) }, 'cannot fetch the repository here; using the master\'s snapshot');
    }
  }
  await rm(ownedDir, { recursive: true, force: true });
  await deps.downloadSnapshot(ownedDir, signal);
  return { projectDir: ownedDir, ownedDir };
}
