/**
 * What the CLI tests share: a client conf file with its own HOME in a temp folder, project folders with a
 * clusterrunner.yaml, and the local cluster's processes, stopped after each test.
 */
import { readPidFile } from '../../cli/local-cluster.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, writeConf } from '../support/cluster.ts';

export interface ClientSetup {
  readonly dir: string;
  readonly home: string;
  readonly conf: string;
  readonly base: string;
  /** Environment for runCli/spawnCli: its own HOME, so the real ~/.clusterrunner is never touched. */
  readonly env: NodeJS.ProcessEnv;
}

export function clientSetup(secret: string, general: Record<string, string | number> = {}): ClientSetup {
  const dir = tempDir('cr-cli-client-');
  const base = join(dir, 'base');
  const conf = writeConf(dir, 'client', { general: { secret, base_directory: base, ...general } });
  return { dir, home: dir, conf, base, env: { HOME: dir } };
}

/** A project folder holding clusterrunner.yaml with the given text. */
export function projectWith(yaml: string): string {
  const dir = tempDir('cr-cli-project-');
  writeFileSync(join(dir, 'clusterrunner.yaml'), yaml);
  return dir;
}

/** SIGKILL to the process group of each pid file's process; for cleanup after a test that failed midway. */
export function killFromPidFiles(base: string): void {
  for (const role of ['worker', 'master']) {
    const pid = readPidFile(join(base, `${role}.pid`));
    if (pid === null) continue;
    try {
      const commandLine = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!commandLine.includes('clusterrunner')) continue;
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
