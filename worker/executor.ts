import { randomUUID } from 'node:crypto';
import { mkdirSync, rmdirSync } from 'node:fs';
import { chmod, chown, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from '../shared/log.ts';
import { isGroupAlive, killMarkedProcessesUntilGone, spawnShell, type RunAsUser } from '../shared/process.ts';
import { userEnvironment } from './run-as.ts';
import type { Spawner } from '../shared/spawner.ts';
import { MAX_OUTPUT_CHUNK_CHARS, type RunSubjobMessage } from '../shared/protocol.ts';
import type { MasterConnection } from './connection.ts';
import { hasArtifacts, sendArtifacts } from './artifacts.ts';
import { collectJunitFiles } from './junit-files.ts';
import { OutputRecord, outputKey } from './output-record.ts';

/** What an executor needs of the build it runs for. */
export interface BuildContext {
  readonly buildId: number;
  readonly projectDir: string;
  readonly command: string;
  readonly atomTimeoutMs: number | null;
  readonly killGraceMs: number;
  /** Output past this is read and dropped here: the master would only cut it (max_console_bytes). */
  readonly maxConsoleBytes: number;
  /** Masks the secret and the build's credentials in the output sent (shared/mask.ts). */
  readonly mask: (text: string) => string;
  /** run_as_user: commands run as this user, and their ARTIFACT_DIR is theirs. */
  readonly runAs: RunAsUser | null;
  /** The job's junit globs (SPEC §15); the files an atom wrote that match go with its artifacts. */
  readonly junitGlobs?: readonly string[];
}

/** Sent artifacts are not needed any more; the next atom need not wait for the disk to forget them. */
function removeInBackground(dir: string): void {
  rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

/**
 * A folder found empty is removed with one rmdir: the recursive removal's walk, a few promise-based calls,
 * was a sixth of a worker's time per trivial atom (issue 18). Anything written into it since (a process the
 * atom left behind) makes the rmdir fail, and the walk then removes it.
 */
function removeEmptyFolder(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    removeInBackground(dir);
  }
}

/**
 * Every atom gets an ARTIFACT_DIR no earlier atom knew: a process escaped from an earlier atom (setsid, a
 * double fork) cannot write into a later atom's archive, since the path it holds is gone and the new one has
 * 122 random bits. (Reusing one folder per executor saved three file operations per atom, and was exactly
 * that hole: issue 10 item 8.) The path doubles as the atom's fingerprint when its marker is shed.
 * randomUUID draws from a pool filled a few KB at a time; randomBytes(16) asked the system each time, 30 µs
 * an atom here (issue 18).
 */
async function createArtifactDir(workDir: string, leaseId: string, atomId: number, runAs: RunAsUser | null): Promise<string> {
  const dir = join(workDir, 'artifacts', `${leaseId}-${atomId}-${randomUUID()}`);
  // Synchronous: two small syscalls, where the promise version costs a round through the thread pool
  // between one atom and the next (long on a loaded machine; issue 18).
  mkdirSync(dir, { recursive: true });
  if (runAs !== null) {
    // Another user's command must reach its own folder, and list no other atom's.
    await chmod(dirname(dir), 0o711);
    await chown(dir, runAs.uid, runAs.gid);
  }
  return dir;
}

/** Puts this worker's project path where the master stored `$PROJECT_DIR` (SPEC §4). */
export function localizeValue(value: string, projectDir: string): string {
  return value.split('$PROJECT_DIR').join(projectDir);
}

/**
 * Runs one subjob: its atoms one after another, each in its own process group, streaming start, output,
 * artifacts and result to the master. Stops at once when `signal` aborts (its reason says why); a stopped
 * atom reports nothing but its end, since the master no longer wants it.
 */
export async function runSubjob(options: {
  message: RunSubjobMessage;
  build: BuildContext;
  connection: MasterConnection;
  workDir: string;
  log: Logger;
  signal: AbortSignal;
  /** Where each running atom's output record is kept while it runs (key: outputKey). */
  outputs: Map<string, OutputRecord>;
  /** Forks the atoms from this small process when given (shared/spawner.ts). */
  spawner?: Spawner | null;
  /** Without a spawner, how far below the worker's CPU priority atoms run (command_nice). */
  commandNice?: number;
  /** The environment atoms inherit (the worker's own, less its settings: commandEnvironment()). */
  baseEnv: NodeJS.ProcessEnv;
}): Promise<void> {
  const { message, build, connection, signal } = options;
  const ids = { lease_id: message.lease_id, build_id: message.build_id, subjob_id: message.subjob_id };
  const isWanted = () => !signal.aborted;
  const { baseEnv } = options;
  for (const atom of message.atoms) {
    if (signal.aborted) break;
    // One marker per atom: what one left behind is stopped in the background while the next one runs.
    const marker = `cr-${message.lease_id}-${atom.atom_id}`;
    const artifactDir = await createArtifactDir(options.workDir, message.lease_id, atom.atom_id, build.runAs);
    const fingerprints = [`ARTIFACT_DIR=${artifactDir}`];
    const env: NodeJS.ProcessEnv = {
      ...baseEnv,
      PROJECT_DIR: build.projectDir,
      ARTIFACT_DIR: artifactDir,
      ATOM_ID: String(atom.atom_id),
      MACHINE_EXECUTOR_INDEX: String(message.executor_index),
      EXECUTOR_INDEX: String(message.executor_index),
      BUILD_EXECUTOR_INDEX: String(message.build_executor_index),
      ...userEnvironment(build.runAs),
    };
    // Values reach the command only through its environment, never through shell text (SPEC §4 fix).
    for (const [name, value] of Object.entries(atom.env)) env[name] = localizeValue(value, build.projectDir);
    connection.send({ type: 'atom_started', ...ids, atom_id: atom.atom_id });
    const decoder = new StringDecoder('utf8');
    // A few bytes over the limit are sent, so the master itself sees the limit crossed and says so in the
    // console; the rest is still read, so the command never blocks on a full pipe, but goes nowhere.
    const outputLimit = build.maxConsoleBytes + 4;
    let outputBytes = 0;
    const record = new OutputRecord({ ...ids, atom_id: atom.atom_id });
    options.outputs.set(outputKey(message.lease_id, atom.atom_id), record);
    const forward = (raw: string) => {
      const text = build.mask(raw);
      record.add(text);
      for (let at = 0; at < text.length; at += MAX_OUTPUT_CHUNK_CHARS) {
        connection.send({ type: 'atom_output', ...ids, atom_id: atom.atom_id, data: text.slice(at, at + MAX_OUTPUT_CHUNK_CHARS) });
      }
    };
    const child = spawnShell(build.command, {
      cwd: build.projectDir,
      env,
      graceMs: build.killGraceMs,
      timeoutMs: build.atomTimeoutMs,
      signal,
      marker,
      runAs: build.runAs,
      spawner: options.spawner ?? null,
      nice: options.commandNice ?? 0,
      onOutput: (chunk) => {
        if (outputBytes > outputLimit) return;
        outputBytes += chunk.length;
        forward(decoder.write(chunk));
        if (connection.isCongested) holdOutput();
      },
    });
    // Backpressure: while the master cannot take more output, stop reading it; the command then blocks
    // on a full pipe instead of its output being dropped or piling up in memory.
    let congestionTimer: NodeJS.Timeout | null = null;
    const holdOutput = () => {
      if (congestionTimer !== null) return;
      child.pauseOutput();
      congestionTimer = setInterval(() => {
        if (connection.isCongested && !signal.aborted) return;
        clearInterval(congestionTimer!);
        congestionTimer = null;
        child.resumeOutput();
      }, 20);
    };
    const result = await child.result;
    // What a command left running in the background must not outlive it: it would hold the machine's
    // resources, and could write into the next atom's ARTIFACT_DIR. Stopped (SIGTERM, then SIGKILL after the
    // grace) without holding up the next atom. A spawner that saw nothing escape saw nothing of the group
    // either: every member is the shell's descendant, and its orphans become the spawner's children. Asking the
    // kernel anyway cost an ESRCH exception per atom (issue 18).
    const leftBehind = result.stopReason === null && result.mayHaveEscaped !== false && child.pid > 0 && isGroupAlive(child.pid);
    if (leftBehind) void child.stop('cancel');
    // And what left the group (setsid, a double fork), found by its marker or, marker shed, its ARTIFACT_DIR.
    // Through the spawner, its list of children as the shell exited says whether anything escaped at all:
    // reading the environment of every process on the machine after every atom was most of a worker's time
    // on trivial atoms (issue 18).
    if (result.stopReason === null && result.mayHaveEscaped !== false) void killMarkedProcessesUntilGone(marker, fingerprints);
    if (congestionTimer !== null) clearInterval(congestionTimer);
    const rest = decoder.end();
    if (rest && outputBytes <= outputLimit) forward(rest);
    if (result.stopReason !== null) await killMarkedProcessesUntilGone(marker, fingerprints);
    const stoppedByUs = result.stopReason !== null && result.stopReason !== 'timeout';
    if (stoppedByUs || signal.aborted) {
      removeInBackground(artifactDir);
      break;
    }
    if (result.stopReason === 'timeout') {
      forward(`\n[ClusterRunner: atom stopped after ${(build.atomTimeoutMs ?? 0) / 1000} s (atom_timeout)]\n`);
    }
    if (build.junitGlobs !== undefined && build.junitGlobs.length > 0) {
      await collectJunitFiles({ projectDir: build.projectDir, globs: build.junitGlobs, env, artifactDir, sinceMs: Date.now() - result.durationMs })
        .catch((error: unknown) => options.log.warn({ atomId: atom.atom_id, err: error }, 'could not collect the junit files'));
    }
    const withArtifacts = hasArtifacts(artifactDir);
    if (withArtifacts) {
      const sent = await sendArtifacts(connection, artifactDir, { ...ids, atom_id: atom.atom_id }, isWanted);
      if (!sent) {
        removeInBackground(artifactDir);
        break;
      }
    }
    options.log.debug({ atomId: atom.atom_id, exitCode: result.exitCode, durationMs: result.durationMs }, 'atom finished');
    connection.send({
      type: 'atom_finished',
      ...ids,
      atom_id: atom.atom_id,
      exit_code: result.exitCode,
      time_s: result.durationMs / 1000,
      stop_reason: result.stopReason,
      has_artifacts: withArtifacts,
    });
    settleOutput(options.outputs, outputKey(message.lease_id, atom.atom_id), connection);
    if (withArtifacts) removeInBackground(artifactDir);
    else removeEmptyFolder(artifactDir);
  }
  for (const atom of message.atoms) settleOutput(options.outputs, outputKey(message.lease_id, atom.atom_id), connection);
  connection.send({ type: 'subjob_finished', ...ids });
}

/**
 * An atom's output record is dropped once its output went to a live connection; sent while the master was
 * away, it is kept until the next registration says how much of it the master holds.
 */
function settleOutput(outputs: Map<string, OutputRecord>, key: string, connection: MasterConnection): void {
  const record = outputs.get(key);
  if (!record) return;
  if (connection.isRegistered) outputs.delete(key);
  else record.isDone = true;
}
