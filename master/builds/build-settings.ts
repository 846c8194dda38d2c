import type { Conf } from '../../shared/conf.ts';

/** The parts of the master's configuration the build side reads. */
export type BuildSettings = Pick<Conf,
  'killGraceMs' | 'atomizerTimeoutMs' | 'maxAtomizerOutputBytes' | 'maxAtoms' | 'maxConsoleBytes' |
  'maxArtifactBytes' | 'maxArtifactFiles' | 'maxConcurrentPreparations' | 'noWorkerTimeoutMs' | 'allowLocalRepositories' | 'secret'> & Partial<Pick<Conf, 'suspectAfterFailures'>>;
