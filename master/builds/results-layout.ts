import { join, sep } from 'node:path';

/** Where a build's files live under `<base_directory>/results/<build id>/` (DESIGN: Data). */
export function createResultsLayout(resultsRoot: string) {
  const buildDir = (buildId: number) => join(resultsRoot, String(buildId));
  // The last build's folder is kept: an atom's folder is then that and a plain name, nothing to normalise
  // (two path.joins per result were 2% of the master's time at 10,000 results/s, issue 18).
  let lastBuildId = -1;
  let lastArtifactsDir = '';
  const artifactsDir = (buildId: number) => {
    if (buildId !== lastBuildId) {
      lastArtifactsDir = join(buildDir(buildId), 'artifacts');
      lastBuildId = buildId;
    }
    return lastArtifactsDir;
  };
  return {
    buildDir,
    artifactsDir,
    atomDir: (buildId: number, subjobId: number, atomId: number) => `${artifactsDir(buildId)}${sep}${atomFolderName(subjobId, atomId)}`,
    tarGz: (buildId: number) => join(buildDir(buildId), 'results.tar.gz'),
    zip: (buildId: number) => join(buildDir(buildId), 'results.zip'),
    snapshot: (buildId: number) => join(buildDir(buildId), 'project-snapshot.tar.gz'),
  };
}

export type ResultsLayout = ReturnType<typeof createResultsLayout>;

export function atomFolderName(subjobId: number, atomId: number): string {
  return `artifact_${subjobId}_${atomId}`;
}

export const CONSOLE_FILE = 'clusterrunner_console_output';
export const COMMAND_FILE = 'clusterrunner_command';
export const EXIT_CODE_FILE = 'clusterrunner_exit_code';
export const TIME_FILE = 'clusterrunner_time';
