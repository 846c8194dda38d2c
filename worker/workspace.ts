import { stat } from 'node:fs/promises';
import type { ProjectSource } from '../shared/protocol.ts';
import { ClusterRunnerError } from '../shared/errors.ts';

/**
 * The folder a build's commands run in on this worker. A directory project runs in the same path as on the
 * master, which must exist here (a shared or mirrored folder).
 */
export async function resolveProjectDir(project: ProjectSource): Promise<string> {
  switch (project.type) {
    case 'directory': {
      const info = await stat(project.path).catch(() => null);
      if (!info?.isDirectory()) {
        throw new ClusterRunnerError('PROJECT_MISSING', `The project directory ${project.path} does not exist on this worker.`, { status: 400 });
      }
      return project.path;
    }
    default: {
      const unknown: never = project.type;
      throw new ClusterRunnerError('PROJECT_UNSUPPORTED', `Unsupported project type ${String(unknown)}.`, { status: 400 });
    }
  }
}
