import { commandEnvironment } from '../../shared/conf.ts';
import { spawnShell } from '../../shared/process.ts';
import { OutputTail } from '../../shared/output-tail.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';
import type { JobConfig } from '../../shared/job-config.ts';

export interface AtomValue {
  readonly variable: string;
  readonly value: string;
}

export interface AtomizeLimits {
  readonly timeoutMs: number;
  readonly maxOutputBytes: number;
  readonly maxAtoms: number;
  readonly graceMs: number;
}

/**
 * The longest atom value accepted, in bytes (README: max_atom_bytes, fixed). A longer atomizer line ends the
 * build in ERROR naming the line: past about 1 MiB an atom hung its build in BUILDING holding an executor, past
 * 4 MiB it broke the worker's connection over and over (issue 10 item 10).
 */
export const MAX_ATOM_BYTES = 64 * 1024;

/** A failure of preparation that the build reports as ERROR with this message. */
export function prepareError(message: string, cause?: unknown): ClusterRunnerError {
  return new ClusterRunnerError('PREPARE_FAILED', message, { status: 400, cause });
}

/** Stdout lines; trailing blank lines dropped (SPEC §4), Windows line ends tolerated. */
export function splitAtomizerOutput(stdout: string): string[] {
  const lines = stdout.split('\n').map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
  return lines;
}

/**
 * Where a value holds the master's project path, store `$PROJECT_DIR` instead: each worker puts its own
 * project path back (SPEC §4).
 */
export function relativizeValue(value: string, projectDir: string): string {
  return projectDir.length > 1 && value.includes(projectDir) ? value.split(projectDir).join('$PROJECT_DIR') : value;
}

/**
 * Runs the job's atomizers in order in the project folder and returns their atoms, concatenated. Stdout
 * lines are atoms; stderr only feeds the error message. Output, atom count and time are bounded.
 */
export async function runAtomizers(job: JobConfig, projectDir: string, limits: AtomizeLimits, signal: AbortSignal): Promise<AtomValue[]> {
  const atoms: AtomValue[] = [];
  for (const atomizer of job.atomizers) {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let isTooLarge = false;
    const tail = new OutputTail(16 * 1024);
    const child = spawnShell(atomizer.command, {
      cwd: projectDir,
      env: commandEnvironment({ PROJECT_DIR: projectDir }),
      graceMs: limits.graceMs,
      timeoutMs: limits.timeoutMs,
      mergeStderr: false,
      signal,
      onOutput: (chunk) => {
        tail.push(chunk);
        if (isTooLarge) return;
        bytes += chunk.length;
        if (bytes > limits.maxOutputBytes) {
          isTooLarge = true;
          void child.stop('cancel');
          return;
        }
        chunks.push(chunk);
      },
      onStderr: (chunk) => tail.push(chunk),
    });
    const result = await child.result;
    if (signal.aborted) throw new ClusterRunnerError('CANCELED', 'The build was canceled while atomizing.', { status: 409 });
    if (isTooLarge) {
      throw prepareError(`Atomizer command failed! Its output passed the limit of ${limits.maxOutputBytes} bytes ` +
        `(max_atomizer_output_bytes).\nCommand: ${atomizer.command}`);
    }
    if (result.stopReason === 'timeout') {
      throw prepareError(`Atomizer command failed! It ran longer than ${limits.timeoutMs / 1000} s ` +
        `(atomizer_timeout_seconds).\nCommand: ${atomizer.command}\nOutput:\n${tail.text(50)}`);
    }
    if (result.exitCode !== 0) {
      throw prepareError(`Atomizer command failed!\nCommand: ${atomizer.command}\nExit code: ${result.exitCode}\n` +
        `Output:\n${tail.text(50)}`);
    }
    for (const [index, line] of splitAtomizerOutput(Buffer.concat(chunks).toString('utf8')).entries()) {
      // A line of n UTF-16 units has at most 3n UTF-8 bytes: short lines (nearly all) need no count.
      const bytes = line.length * 3 <= MAX_ATOM_BYTES ? 0 : Buffer.byteLength(line);
      if (bytes > MAX_ATOM_BYTES) {
        throw prepareError(`Atomizer line ${index + 1} is ${bytes} bytes long, over the limit of ${MAX_ATOM_BYTES} bytes per atom ` +
          `(max_atom_bytes).\nCommand: ${atomizer.command}\nLine ${index + 1} starts: ${JSON.stringify(line.slice(0, 80))}`);
      }
      if (atoms.length >= limits.maxAtoms) {
        throw prepareError(`The atomizers produced more than ${limits.maxAtoms} atoms (max_atoms). ` +
          `Raise max_atoms in the master's configuration, or make the atoms coarser.`);
      }
      atoms.push({ variable: atomizer.variable, value: relativizeValue(line, projectDir) });
    }
  }
  return atoms;
}

const ATOM_STRING = /^export ([A-Za-z_][A-Za-z0-9_]*)="([\s\S]*)";$/;

/** `atoms_override` entries are atom strings as the API shows them: `export VAR="value";`. */
export function parseAtomsOverride(entries: readonly string[], projectDir: string): AtomValue[] {
  return entries.map((entry, index) => {
    if (Buffer.byteLength(entry) > MAX_ATOM_BYTES + 64) {
      throw prepareError(`atoms_override[${index}] is ${Buffer.byteLength(entry)} bytes long, over the limit of ${MAX_ATOM_BYTES} bytes per atom (max_atom_bytes).`);
    }
    const match = ATOM_STRING.exec(entry.trim());
    if (!match) {
      throw prepareError(`atoms_override[${index}] must look like export NAME="value"; (got ${JSON.stringify(entry.slice(0, 200))}).`);
    }
    return { variable: match[1]!, value: relativizeValue(match[2]!, projectDir) };
  });
}
