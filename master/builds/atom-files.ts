import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSafeExtractor } from '../../shared/archive.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { ArtifactUpload } from '../workers/worker-registry.ts';
import { ConsoleWriter } from './console-files.ts';
import { COMMAND_FILE, CONSOLE_FILE, EXIT_CODE_FILE, TIME_FILE } from './results-layout.ts';

/**
 * The files of one atom's result on the master (SPEC §7): its console output as it arrives, the artifacts
 * the worker sends, and the clusterrunner_* files written when its result is in.
 */

/** A fresh folder for a run of the atom, and the writer of its live console output. */
export async function startAtomFolder(dir: string, maxConsoleBytes: number): Promise<ConsoleWriter> {
  // A retry or a requeued run starts from a clean folder: one result per atom, never a mix of two.
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  return new ConsoleWriter(join(dir, CONSOLE_FILE), maxConsoleBytes);
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
        await extractor.done;
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
 * Closes the atom's console and artifacts and writes its result files. Returns the exit code to record: a
 * result whose artifacts were refused or lost is a failure, whatever the command said, and the console
 * says why.
 */
export async function writeAtomResult(options: {
  dir: string;
  console: ConsoleWriter | undefined;
  upload: ArtifactUpload | undefined;
  hasArtifacts: boolean;
  commandLine: string;
  exitCode: number;
  timeS: number;
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
  const { dir } = options;
  if (problems.length > 0) await writeFile(join(dir, CONSOLE_FILE), `\n[ClusterRunner: ${problems.join('; ')}]\n`, { flag: 'a' });
  const exitCode = problems.length > 0 && options.exitCode === 0 ? 1 : options.exitCode;
  await Promise.all([
    writeFile(join(dir, COMMAND_FILE), `${options.commandLine}\n`),
    writeFile(join(dir, EXIT_CODE_FILE), `${exitCode}\n`),
    writeFile(join(dir, TIME_FILE), `${options.timeS.toFixed(2)}\n`),
  ]);
  return exitCode;
}
