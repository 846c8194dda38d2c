import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { repositoryKey, type GitCache } from '../../shared/git.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { ProjectSource } from '../../shared/protocol.ts';
import { parseJobDefinition, parseJobFile, joinCommands, RESERVED_VARIABLES, type JobConfig } from '../../shared/job-config.ts';
import type { BuildRequest } from './build-request.ts';
import { parseAtomsOverride, prepareError, runAtomizers, type AtomValue, type AtomizeLimits } from './atomize.ts';
import type { StoredJob } from '../model/stored-job.ts';

export interface PreparedBuild {
  readonly projectDir: string;
  readonly job: StoredJob;
  readonly atoms: readonly AtomValue[];
}

const JOB_FILE = 'clusterrunner.yaml';
const MAX_JOB_FILE_BYTES = 1024 * 1024;
/** The name an inline `config` job gets when the request names none. */
export const INLINE_JOB_NAME = 'ClusterRunnerJob';

/** The key of a job's timing history: its project (folder, or repository and sub-folder) and its name. */
export function timingKey(project: ProjectSource, jobName: string): string {
  const where = project.type === 'directory'
    ? `directory:${project.path}`
    : `git:${repositoryKey(project.url)}:${project.subdirectory ?? ''}`;
  return `${where}:${jobName}`;
}

export function toStoredJob(job: JobConfig, project: ProjectSource, remoteFiles: Readonly<Record<string, string>>,
  environment: Readonly<Record<string, string>> = {}): StoredJob {
  return {
    ...(Object.keys(environment).length > 0 ? { environment } : {}),
    project,
    remoteFiles,
    timingKey: timingKey(project, job.name),
    name: job.name,
    command: joinCommands(job.commands),
    setupCommand: job.setupBuild.length > 0 ? joinCommands(job.setupBuild) : null,
    teardownCommand: job.teardownBuild.length > 0 ? joinCommands(job.teardownBuild) : null,
    maxExecutors: job.maxExecutors,
    maxExecutorsPerWorker: job.maxExecutorsPerWorker,
    atomTimeoutMs: job.atomTimeoutS === null ? null : Math.round(job.atomTimeoutS * 1000),
    retries: job.retries,
    ...(job.junit === undefined ? {} : { junit: job.junit }),
    ...(job.requires === undefined ? {} : { requires: job.requires }),
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

async function readJobAndAtoms(request: BuildRequest, projectDir: string, limits: AtomizeLimits, signal: AbortSignal) {
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
  if (atoms.length === 0 && job.allowNoAtoms === false) {
    const atomizers = job.atomizers.map((atomizer) => `${atomizer.variable} (${atomizer.command})`).join(', ');
    throw prepareError(`No atoms: the atomizers ${atomizers} printed nothing, and job "${job.name}" sets allow_no_atoms: false.`);
  }
  return { job, atoms };
}

/** A directory project: the folder on the master, its job, and its atoms. */
export async function prepareDirectoryBuild(request: BuildRequest, limits: AtomizeLimits, signal: AbortSignal): Promise<PreparedBuild> {
  const projectDir = request.projectDirectory!;
  const info = await stat(projectDir).catch(() => null);
  if (!info?.isDirectory()) throw prepareError(`The project directory ${projectDir} does not exist on the master.`);
  const { job, atoms } = await readJobAndAtoms(request, projectDir, limits, signal);
  return { projectDir, job: toStoredJob(job, { type: 'directory', path: projectDir }, request.remoteFiles, request.environment), atoms };
}

/**
 * A git project: fetched into the master's cache of the repository, checked out at the exact commit into a
 * folder of its own (so builds of other commits of the same repository prepare and run side by side).
 */
export async function prepareGitBuild(
  request: BuildRequest,
  git: { cache: GitCache; checkoutDir: string },
  limits: AtomizeLimits,
  signal: AbortSignal,
): Promise<PreparedBuild> {
  const source = { url: request.url!, branch: request.branch, hash: request.hash, remote: request.remote };
  let commit: string;
  try {
    commit = await git.cache.fetch(source, signal);
    await rm(git.checkoutDir, { recursive: true, force: true });
    await git.cache.checkout(source, commit, git.checkoutDir, signal);
  } catch (error) {
    if (signal.aborted) throw error;
    throw prepareError(`Fetching the repository failed: ${errorMessage(error)}`, error);
  }
  const subdirectory = request.projectDirectory;
  const projectDir = subdirectory === null ? git.checkoutDir : join(git.checkoutDir, subdirectory);
  const info = await stat(projectDir).catch(() => null);
  if (!info?.isDirectory()) {
    throw prepareError(`The repository has no folder "${subdirectory}" at commit ${commit} (project_directory).`);
  }
  const { job, atoms } = await readJobAndAtoms(request, projectDir, limits, signal);
  const project: ProjectSource = { type: 'git', url: source.url, branch: source.branch, remote: source.remote, commit, subdirectory };
  return { projectDir, job: toStoredJob(job, project, request.remoteFiles, request.environment), atoms };
}
