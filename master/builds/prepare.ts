import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseJobDefinition, parseJobFile, joinCommands, RESERVED_VARIABLES, type JobConfig } from '../../shared/job-config.ts';
import type { BuildRequest } from './build-request.ts';
import { parseAtomsOverride, prepareError, runAtomizers, type AtomValue, type AtomizeLimits } from './atomize.ts';
import type { StoredJob } from '../store/build-store.ts';

export interface PreparedBuild {
  readonly projectDir: string;
  readonly job: StoredJob;
  readonly atoms: readonly AtomValue[];
}

const JOB_FILE = 'clusterrunner.yaml';
const MAX_JOB_FILE_BYTES = 1024 * 1024;
/** The name an inline `config` job gets when the request names none. */
export const INLINE_JOB_NAME = 'ClusterRunnerJob';

export function toStoredJob(job: JobConfig): StoredJob {
  return {
    name: job.name,
    command: joinCommands(job.commands),
    setupCommand: job.setupBuild.length > 0 ? joinCommands(job.setupBuild) : null,
    teardownCommand: job.teardownBuild.length > 0 ? joinCommands(job.teardownBuild) : null,
    maxExecutors: job.maxExecutors,
    maxExecutorsPerWorker: job.maxExecutorsPerWorker,
    atomTimeoutMs: job.atomTimeoutS === null ? null : Math.round(job.atomTimeoutS * 1000),
    retries: job.retries,
  };
}

async function readJob(request: BuildRequest, projectDir: string): Promise<JobConfig> {
  if (request.config !== null) return parseJobDefinition(request.jobName ?? INLINE_JOB_NAME, request.config);
  const path = join(projectDir, JOB_FILE);
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw prepareError(`No ${JOB_FILE} found in the project folder ${projectDir}. Add one, or post the job as "config".`);
  }
  if (size > MAX_JOB_FILE_BYTES) throw prepareError(`${JOB_FILE} is larger than ${MAX_JOB_FILE_BYTES} bytes.`);
  return parseJobFile(await readFile(path, 'utf8'), request.jobName);
}

/** A directory project: the folder on the master, its job, and its atoms. */
export async function prepareDirectoryBuild(request: BuildRequest, limits: AtomizeLimits, signal: AbortSignal): Promise<PreparedBuild> {
  const projectDir = request.projectDirectory!;
  const info = await stat(projectDir).catch(() => null);
  if (!info?.isDirectory()) throw prepareError(`The project directory ${projectDir} does not exist on the master.`);
  const job = await readJob(request, projectDir);
  let atoms: AtomValue[];
  if (request.atomsOverride !== null) {
    atoms = parseAtomsOverride(request.atomsOverride, projectDir);
    const reserved = atoms.find((atom) => RESERVED_VARIABLES.includes(atom.variable) || atom.variable.startsWith('CLUSTERRUNNER_'));
    if (reserved) throw prepareError(`atoms_override may not set the reserved variable ${reserved.variable}.`);
    if (atoms.length > limits.maxAtoms) throw prepareError(`atoms_override holds more than ${limits.maxAtoms} atoms (max_atoms).`);
  } else {
    atoms = await runAtomizers(job, projectDir, limits, signal);
  }
  return { projectDir, job: toStoredJob(job), atoms };
}
