import type { ProjectSource } from '../../shared/protocol.ts';

/** The resolved job a build runs, kept with the build so a restarted master can go on with it. */
export interface StoredJob {
  /** Where workers get the project: the same folder, or the same repository at the same commit. */
  readonly project: ProjectSource;
  readonly remoteFiles: Readonly<Record<string, string>>;
  /** Where this job's timing history lives: the same folder or repository (and sub-folder) and job name. */
  readonly timingKey: string;
  readonly name: string;
  readonly command: string;
  readonly setupCommand: string | null;
  readonly teardownCommand: string | null;
  readonly maxExecutors: number | null;
  readonly maxExecutorsPerWorker: number | null;
  readonly atomTimeoutMs: number | null;
  readonly retries: number;
  /** Key junit (SPEC §15): the globs workers collect test reports with; absent for jobs without. */
  readonly junit?: readonly string[];
}
