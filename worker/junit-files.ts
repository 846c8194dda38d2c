import { copyFile, lstat, mkdir, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import picomatch from 'picomatch';

/**
 * The job's `junit:` globs (SPEC §15): after an atom, the JUnit XML files it wrote in PROJECT_DIR that
 * match them are copied into its ARTIFACT_DIR under `clusterrunner_junit/<path in the project>`, so they
 * travel with its artifacts and the master reads them like any report in ARTIFACT_DIR.
 *
 * "It wrote": modified since the atom started. Executors of one worker share PROJECT_DIR, so a glob may
 * name the atom's own file with the variables it sees — `$MACHINE_EXECUTOR_INDEX`, `$BUILD_EXECUTOR_INDEX`,
 * `$ATOM_ID` or the atomizer's variable, written `$NAME` or `${NAME}` — else two atoms running at once on
 * one worker may each collect the other's report.
 *
 * Bounded: only under each glob's fixed leading folders, at most MAX_WALKED entries and MAX_DEPTH deep, at
 * most MAX_FILES files and MAX_BYTES bytes per atom; links are never followed.
 */
export const JUNIT_FOLDER = 'clusterrunner_junit';
const MAX_WALKED = 50_000;
const MAX_DEPTH = 24;
const MAX_FILES = 200;
const MAX_BYTES = 256 * 1024 * 1024;
/** File times may be coarser than the clock (some file systems keep whole seconds). */
const MTIME_SLACK_MS = 2000;
/** Never walked into unless a glob names them in its fixed part. */
const SKIPPED_FOLDERS: ReadonlySet<string> = new Set(['.git', 'node_modules']);

export interface JunitCollection {
  readonly projectDir: string;
  readonly globs: readonly string[];
  /** What the atom's command saw: the variables a glob may use. */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly artifactDir: string;
  /** Epoch ms when the atom started. */
  readonly sinceMs: number;
}

/** Copies the matching files; returns the project-relative paths copied. */
export async function collectJunitFiles(options: JunitCollection): Promise<string[]> {
  const copied: string[] = [];
  let walked = 0;
  let bytes = 0;
  const seen = new Set<string>();
  for (const raw of options.globs) {
    const glob = expandVariables(raw, options.env);
    const { base } = picomatch.scan(glob);
    // The fixed part may not leave the project either (a variable could hold "..").
    if (base.split('/').includes('..') || glob.split('/').includes('..')) continue;
    const isMatch = picomatch(glob, { dot: true });
    const walk = async (relative: string, depth: number): Promise<void> => {
      const entries = await readdir(join(options.projectDir, relative), { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        if (++walked > MAX_WALKED || copied.length >= MAX_FILES) return;
        const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) {
          if (depth < MAX_DEPTH && !SKIPPED_FOLDERS.has(entry.name)) await walk(path, depth + 1);
        } else if (entry.isFile() && !seen.has(path) && isMatch(path)) {
          seen.add(path);
          const info = await lstat(join(options.projectDir, path)).catch(() => null);
          if (info === null || !info.isFile() || info.mtimeMs < options.sinceMs - MTIME_SLACK_MS) continue;
          if (bytes + info.size > MAX_BYTES) continue;
          bytes += info.size;
          const target = join(options.artifactDir, JUNIT_FOLDER, path);
          await mkdir(dirname(target), { recursive: true });
          await copyFile(join(options.projectDir, path), target);
          copied.push(path);
        }
      }
    };
    const start = base === '.' ? '' : base;
    const info = await lstat(join(options.projectDir, start)).catch(() => null);
    if (info?.isDirectory()) await walk(start, start === '' ? 0 : start.split('/').length);
    else if (info?.isFile() && isMatch(start)) await walk(dirname(start) === '.' ? '' : dirname(start), 0);
  }
  return copied;
}

/** `$NAME` and `${NAME}` from the atom's variables; glob characters in a value match only themselves. */
function expandVariables(glob: string, env: Readonly<Record<string, string | undefined>>): string {
  return glob.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, braced: string | undefined, plain: string | undefined) => {
    const value = env[braced ?? plain ?? ''];
    return value === undefined ? whole : value.replace(/[*?[\]{}()!+@\\]/g, (char) => `\\${char}`);
  });
}
