import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Conf } from '../shared/conf.ts';
import { createLogger, type Logger } from '../shared/log.ts';
import { commandLogger } from './common.ts';

/**
 * What the master and worker commands do with the original ClusterRunner's settings (issue 17): its
 * log_filename sends the log there instead of stderr, and every key or flag that has no effect here is
 * named once in the log, with what we do instead, so that a migrated init script keeps working and says so.
 */
export function serviceLogger(name: string, conf: Conf): Logger {
  if (conf.logFile === null) return commandLogger(name, conf);
  // JSON lines, as on a non-terminal stderr, appended; the folder is made as the original made it.
  mkdirSync(path.dirname(conf.logFile), { recursive: true });
  return createLogger({ name, level: conf.logLevel, pretty: false, destination: createWriteStream(conf.logFile, { flags: 'a' }) });
}

export function logIgnoredSettings(log: Logger, conf: Conf, flagWarnings: readonly string[] = []): void {
  for (const warning of [...conf.warnings, ...flagWarnings]) log.warn({ setting: warning }, 'setting of the original ClusterRunner ignored');
}
