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
