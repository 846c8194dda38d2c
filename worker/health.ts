import os from 'node:os';
import { statfs } from 'node:fs/promises';
import type { Logger } from '../shared/log.ts';
import { commandEnvironment } from '../shared/conf.ts';
import { errorMessage } from '../shared/errors.ts';
import { spawnShell } from '../shared/process.ts';
import type { HeartbeatMessage } from '../shared/protocol.ts';

export interface WorkerHealthOptions {
  /** The worker's work folder: its file system's free space is the disk figure and the disk verdict. */
  readonly diskPath: string;
  /** Free bytes below which the worker is unhealthy (conf min_disk_free_bytes; 0 = never). */
  readonly minDiskFreeBytes: number;
  /** Conf health_check_command; null: no check, only the disk decides. */
  readonly checkCommand: string | null;
  /** Conf health_check_interval_seconds, in ms: between the starts of two checks (and two disk looks). */
  readonly checkIntervalMs: number;
  /** Where the check runs. */
  readonly cwd: string;
  readonly log: Logger;
  /** Called when the verdict changes, so the master hears it with a heartbeat now rather than at the next. */
  readonly onChange: () => void;
}

/** The heartbeat fields this module fills (everything but the type). */
export type HealthReport = Omit<HeartbeatMessage, 'type'>;

/** A check that hangs is a failing check; it may not hold the worker's verdict for longer than this. */
const MAX_CHECK_MS = 60_000;
/** What of a failing check's output goes into the reason the master shows. */
const REASON_OUTPUT_CHARS = 300;
const KILL_GRACE_MS = 2_000;

/**
 * The worker's side of SPEC §13 health: the machine figures every heartbeat carries (CPU count, load,
 * memory, free disk of the work folder) and the worker's own verdict. It is unhealthy while its
 * health_check_command fails (non-zero exit, or no exit within the interval) or while its disk is below
 * min_disk_free_bytes; healthy again once both pass. The master gives an unhealthy worker no new work.
 */
export class WorkerHealth {
  readonly #options: WorkerHealthOptions;
  #diskFreeBytes: number | null = null;
  /** The last check's failure in words; null while it passes (or there is none). */
  #checkFailure: string | null = null;
  #timer: NodeJS.Timeout | null = null;
  #pass: Promise<void> | null = null;
  #abort = new AbortController();
  #isClosed = false;
  #lastVerdict: string | null = null;

  constructor(options: WorkerHealthOptions) {
    if (!(options.checkIntervalMs > 0)) throw new Error(`checkIntervalMs must be > 0, not ${options.checkIntervalMs}`);
    if (!(options.minDiskFreeBytes >= 0)) throw new Error(`minDiskFreeBytes must be >= 0, not ${options.minDiskFreeBytes}`);
    this.#options = options;
  }

  /** Runs a first pass at once, then one per interval. */
  start(): void {
    if (this.#timer !== null || this.#isClosed) return;
    void this.#runPass();
    this.#timer = setInterval(() => void this.#runPass(), this.#options.checkIntervalMs);
    this.#timer.unref();
  }

  /** Waits for the pass under way (or runs one): for the first heartbeat to carry a real verdict. */
  async settle(): Promise<void> {
    await (this.#pass ?? this.#runPass());
  }

  /** The fields of the next heartbeat, from the figures at hand (never waits). */
  report(): HealthReport {
    const reason = this.#unhealthyReason();
    return {
      cpu_count: os.availableParallelism(),
      load1: Math.max(0, os.loadavg()[0] ?? 0),
      memory_total_bytes: os.totalmem(),
      memory_available_bytes: os.freemem(),
      disk_free_bytes: this.#diskFreeBytes,
      health: reason === null ? 'healthy' : 'unhealthy',
      health_reason: reason === null ? null : reason.slice(0, 1024),
    };
  }

  async close(): Promise<void> {
    this.#isClosed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#abort.abort();
    await this.#pass;
  }

  #unhealthyReason(): string | null {
    const reasons: string[] = [];
    if (this.#checkFailure !== null) reasons.push(this.#checkFailure);
    const min = this.#options.minDiskFreeBytes;
    if (min > 0 && this.#diskFreeBytes !== null && this.#diskFreeBytes < min) {
      reasons.push(`free disk ${this.#diskFreeBytes} bytes is below min_disk_free_bytes ${min}`);
    }
    return reasons.length === 0 ? null : reasons.join('; ');
  }

  /** One pass at a time: a slow check is never run twice at once. */
  #runPass(): Promise<void> {
    if (this.#pass) return this.#pass;
    this.#pass = this.#measure().finally(() => {
      this.#pass = null;
      const verdict = this.#unhealthyReason();
      if (verdict === this.#lastVerdict || this.#isClosed) return;
      const wasUnhealthy = this.#lastVerdict !== null;
      this.#lastVerdict = verdict;
      if (verdict === null) this.#options.log.info('healthy again');
      else this.#options.log.warn({ reason: verdict }, 'unhealthy: the master gives this worker no new work');
      // The first verdict "healthy" is no news: the master assumes it.
      if (verdict !== null || wasUnhealthy) this.#options.onChange();
    });
    return this.#pass;
  }

  async #measure(): Promise<void> {
    try {
      const stats = await statfs(this.#options.diskPath);
      this.#diskFreeBytes = Number(stats.bavail) * Number(stats.bsize);
    } catch (error) {
      // Unknown is not short: the figure goes out as null and the disk alone makes nobody unhealthy.
      this.#diskFreeBytes = null;
      this.#options.log.debug({ error: errorMessage(error) }, 'cannot read free disk space');
    }
    const command = this.#options.checkCommand;
    if (command === null || this.#isClosed) return;
    let output = '';
    const child = spawnShell(command, {
      cwd: this.#options.cwd,
      env: commandEnvironment(),
      graceMs: KILL_GRACE_MS,
      timeoutMs: Math.min(this.#options.checkIntervalMs, MAX_CHECK_MS),
      signal: this.#abort.signal,
      onOutput: (chunk) => {
        if (output.length < 64 * 1024) output += chunk.toString('utf8');
      },
    });
    const result = await child.result;
    if (this.#isClosed) return;
    const tail = output.trim().slice(-REASON_OUTPUT_CHARS);
    if (result.stopReason === 'timeout') {
      this.#checkFailure = `health_check_command did not finish within ${Math.round(Math.min(this.#options.checkIntervalMs, MAX_CHECK_MS) / 1000)} s`;
    } else if (result.exitCode !== 0) {
      this.#checkFailure = `health_check_command exited with ${result.exitCode}${tail === '' ? '' : `: ${tail}`}`;
    } else {
      this.#checkFailure = null;
    }
  }
}
