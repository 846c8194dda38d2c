import { copyFileSync, existsSync, fstatSync, ftruncateSync, readFileSync, readlinkSync, renameSync, rmSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** Never log these, whatever object they appear in. */
const REDACT = ['secret', '*.secret', 'headers["clusterrunner-message-authentication-digest"]', 'req.headers["clusterrunner-message-authentication-digest"]'];

/**
 * The one root logger of a process: JSON lines for machines, pretty lines when a person reads a terminal.
 * Everything else gets a child logger bound to its build, subjob or worker.
 */
export function createLogger(options: { name: string; level: LevelWithSilent; pretty?: boolean; destination?: NodeJS.WritableStream }): Logger {
  const base = { name: options.name, level: options.level, redact: { paths: REDACT, censor: '[redacted]' } };
  const wantsPretty = options.pretty ?? (process.stderr.isTTY === true && process.env['NODE_ENV'] !== 'production');
  if (wantsPretty) {
    return pino(base, pretty({ colorize: true, sync: true, destination: 2, ignore: 'pid,hostname' }));
  }
  return pino(base, options.destination ?? pino.destination({ dest: 2, sync: true }));
}

/** A logger that drops everything, for tests and library use. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}

export interface LogRotationOptions {
  /** Rotate once the file reaches this many bytes (conf log_max_bytes). */
  readonly maxBytes: number;
  /** Rotated files kept: `<file>.1` (newest) to `<file>.<keepFiles>` (conf log_keep_files). */
  readonly keepFiles: number;
  /** Where rotation problems are reported (once each). */
  readonly log: Logger;
  /** The descriptor the process logs to; default 2 (stderr, where createLogger writes). */
  readonly fd?: number;
  /** How often the size is looked at; default 1000 ms. The file may overshoot by what is written meanwhile. */
  readonly checkIntervalMs?: number;
}

export interface LogRotation {
  /** The file rotated, or null when the descriptor is not a file that can be rotated (a terminal, a pipe). */
  readonly path: string | null;
  /** Rotates now if the file is at its limit; true when it did. */
  rotateIfNeeded(): boolean;
  close(): void;
}

/** Linux's O_APPEND, as /proc/self/fdinfo shows a descriptor's flags (octal). */
const O_APPEND = 0o2000;

/**
 * Keeps the log file a daemon writes through its stderr within log_max_bytes × (log_keep_files + 1). Local
 * mode (and systemd's `StandardError=append:`) hand the process a descriptor opened for appending; the
 * process cannot reopen a path it was never given, so the file is rotated in place ("copytruncate"): the
 * older copies shift up, the file is copied to `<file>.1`, and the descriptor truncated to zero. Copy and
 * truncate run synchronously on the thread that writes every log line (pino's destination is synchronous),
 * so no line of this process falls between them. A descriptor not opened for appending is left alone:
 * truncating it would leave the next write at its old offset, behind a hole as large as the file was.
 * Where /proc is missing (not Linux), nothing is rotated.
 */
export function startLogRotation(options: LogRotationOptions): LogRotation {
  if (!(options.maxBytes >= 1)) throw new Error(`maxBytes must be >= 1, not ${options.maxBytes}`);
  if (!(Number.isInteger(options.keepFiles) && options.keepFiles >= 1)) throw new Error(`keepFiles must be an integer >= 1, not ${options.keepFiles}`);
  const fd = options.fd ?? 2;
  const path = rotatablePath(fd, options.log);
  if (path === null) return { path: null, rotateIfNeeded: () => false, close: () => undefined };

  let isBroken = false;
  const rotateIfNeeded = (): boolean => {
    if (isBroken) return false;
    try {
      const open = fstatSync(fd);
      if (open.size < options.maxBytes) return false;
      // Someone moved or deleted the file (logrotate, a person): it is no longer ours to rotate.
      const named = statSync(path, { throwIfNoEntry: false });
      if (named === undefined || named.ino !== open.ino || named.dev !== open.dev) {
        isBroken = true;
        options.log.warn({ path }, 'the log file was moved or deleted; not rotating it any more');
        return false;
      }
      rmSync(`${path}.${options.keepFiles}`, { force: true });
      for (let index = options.keepFiles - 1; index >= 1; index--) {
        if (existsSync(`${path}.${index}`)) renameSync(`${path}.${index}`, `${path}.${index + 1}`);
      }
      copyFileSync(path, `${path}.1`);
      ftruncateSync(fd, 0);
      return true;
    } catch (error) {
      isBroken = true;
      options.log.warn({ path, err: (error as Error).message }, 'cannot rotate the log file; not trying again');
      return false;
    }
  };
  const timer = setInterval(rotateIfNeeded, Math.max(10, options.checkIntervalMs ?? 1000)).unref();
  return { path, rotateIfNeeded, close: () => clearInterval(timer) };
}

function rotatablePath(fd: number, log: Logger): string | null {
  try {
    if (!fstatSync(fd).isFile()) return null;
    const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    const path = readlinkSync(`/proc/self/fd/${fd}`);
    if (flags === undefined || !isAbsolute(path)) return null;
    if ((Number.parseInt(flags, 8) & O_APPEND) === 0) {
      log.warn({ path }, 'the log file is not opened for appending (use >> rather than >); it will not be rotated');
      return null;
    }
    return path;
  } catch {
    return null;
  }
}
