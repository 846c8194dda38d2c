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
  /** build -e variables, exported in front of every atom, setup and teardown command; absent when none. */
  readonly environment?: Readonly<Record<string, string>>;
  /** Key junit (SPEC §15): the globs workers collect test reports with; absent for jobs without. */
  readonly junit?: readonly string[];
  /** Key requires (SPEC §13): labels a worker must carry, all of them, to be given this build; absent: any worker. */
  readonly requires?: readonly string[];
}

/** `export A='1' B='2'; command`: the build's variables in front of a command a worker runs. */
export function withEnvironment(command: string, environment: Readonly<Record<string, string>> | undefined): string {
  const entries = Object.entries(environment ?? {});
  if (entries.length === 0) return command;
  const quote = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;
  return `export ${entries.map(([name, value]) => `${name}=${quote(value)}`).join(' ')}; ${command}`;
}
