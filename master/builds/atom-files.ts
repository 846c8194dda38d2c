import { appendFile, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createSafeExtractor } from '../../shared/archive.ts';
import { ClusterRunnerError, errorMessage } from '../../shared/errors.ts';
import { ConsoleWriter } from './console-files.ts';
import { CONSOLE_FILE } from './results-layout.ts';

/**
 * The files of one atom's result on the master (SPEC §7): its console output as it arrives and the
 * artifacts the worker sends. The clusterrunner_command, _exit_code and _time files are not written per
 * atom: SQLite holds those values, and the archive writes the files from them (archive.ts), which saves
 * several file operations on every atom's path.
 */

/** An atom's artifact tar.gz arriving in chunks, unpacked as it comes. */
export interface ArtifactUpload {
  write(bytes: Buffer): Promise<void>;
  finish(): Promise<void>;
  abort(): void;
}

/** The writer of a run's live console output; a retry or requeued run starts from a clean folder. */
export async function startAtomFolder(dir: string, maxConsoleBytes: number, isFirstRun: boolean): Promise<ConsoleWriter> {
  // One result per atom, never a mix of two runs' files.
  if (!isFirstRun) await rm(dir, { recursive: true, force: true });
  return new ConsoleWriter(dir, maxConsoleBytes);
}

/** Unpacks the artifact tar.gz the worker streams, refusing anything unsafe (shared/archive.ts). */
export function createArtifactUpload(dir: string, limits: { maxBytes: number; maxEntries: number }): ArtifactUpload {
  const extractor = createSafeExtractor(dir, limits);
  const input = extractor.input;
  let failure: unknown = null;
  extractor.done.catch((error: unknown) => {
    failure = error;
  });
  let finished: Promise<void> | null = null;
  return {
    write: async (bytes) => {
      if (failure !== null || finished) return;
      if (!input.write(bytes)) {
        await new Promise<void>((resolve) => {
          input.once('drain', resolve);
          extractor.done.then(() => resolve(), () => resolve());
        });
      }
    },
    finish: () => {
      finished ??= (async () => {
        if (failure === null) input.end();
        try {
          await extractor.done;
        } catch (error) {
          if (!(error instanceof ClusterRunnerError) || error.code !== 'ARCHIVE_TOO_LARGE') throw error;
          // The user can act on the limit only if the message names it.
          throw new ClusterRunnerError(error.code, `${error.message} (the master's max_artifact_bytes = ${limits.maxBytes}, ` +
            `max_artifact_files = ${limits.maxEntries})`, { status: error.status, cause: error });
        }
      })();
      return finished;
    },
    abort: () => {
      if (failure === null && !finished) input.end();
      extractor.done.catch(() => undefined);
    },
  };
}

/**
 * Closes the atom's console and artifacts. Returns the exit code to record: a result whose artifacts were
 * refused or lost is a failure, whatever the command said, and the console says why.
 */
export async function closeAtomFiles(options: {
  dir: string;
  console: ConsoleWriter | undefined;
  upload: ArtifactUpload | undefined;
  hasArtifacts: boolean;
  exitCode: number;
}): Promise<number> {
  const problems: string[] = [];
  if (options.hasArtifacts) {
    try {
      if (!options.upload) throw new Error('the worker announced artifacts but sent none');
      await options.upload.finish();
    } catch (error) {
      problems.push(`artifacts refused: ${errorMessage(error)}`);
    }
  }
  if (options.console) await options.console.close();
  if (problems.length === 0) return options.exitCode;
  // A refused upload keeps nothing it unpacked before the refusal (names with a newline or U+202E among
  // them): the archive would carry half of a result nobody accepted. The console, which says why, stays.
  await removeAllBut(options.dir, CONSOLE_FILE);
  await mkdir(options.dir, { recursive: true });
  await appendFile(join(options.dir, CONSOLE_FILE), `\n[ClusterRunner: ${problems.join('; ')}]\n`);
  return options.exitCode === 0 ? 1 : options.exitCode;
}

async function removeAllBut(dir: string, keep: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(names.filter((name) => name !== keep).map((name) => rm(join(dir, name), { recursive: true, force: true })));
}
