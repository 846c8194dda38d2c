import { mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import type { Conf } from '../shared/conf.ts';
import { createLogger, startLogRotation, type Logger } from '../shared/log.ts';
import { commandLogger } from './common.ts';

/**
 * What the master and worker commands do with the original ClusterRunner's settings (issue 17): its
 * log_filename sends the log there instead of stderr (rotated as a stderr log file is), and every key or
 * flag that has no effect here is named once in the log, with what we do instead, so that a migrated init
 * script keeps working and says so.
 */
export function serviceLogger(name: string, conf: Conf): Logger {
  if (conf.logFile === null) return commandLogger(name, conf);
  // JSON lines, as on a non-terminal stderr, appended; the folder is made as the original made it. Written
  // synchronously and rotated like a stderr log file (log_max_bytes, which max_log_file_size sets, and
  // log_keep_files): the rotation copies and truncates between two synchronous writes.
  mkdirSync(path.dirname(conf.logFile), { recursive: true });
  const fd = openSync(conf.logFile, 'a', 0o600);
  const destination = pino.destination({ fd, sync: true }) as unknown as NodeJS.WritableStream;
  const log = createLogger({ name, level: conf.logLevel, pretty: false, destination });
  // Runs until the process exits (its timer is unref'd); nothing else writes to this descriptor.
  startLogRotation({ fd, maxBytes: conf.logMaxBytes, keepFiles: conf.logKeepFiles, log });
  return log;
}

export function logIgnoredSettings(log: Logger, conf: Conf, flagWarnings: readonly string[] = []): void {
  for (const warning of [...conf.warnings, ...flagWarnings]) log.warn({ setting: warning }, 'setting of the original ClusterRunner ignored');
}
