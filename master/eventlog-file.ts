import { appendFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../shared/log.ts';
import type { EventRecord } from './store/event-store.ts';

/** The original's name for standard output as the event log file. */
const STDOUT = 'STDOUT';

export interface EventlogFile {
  /** Writes what is left, then stops; idempotent. */
  close(): Promise<void>;
}

/**
 * The original's eventlog_filename (`--eventlog-file`): the master's events, as served by GET /v1/eventlog,
 * appended to a file (or standard output, for `STDOUT`) as one JSON object a line, for tools that tailed the original's file. The database
 * stays the record; the file gets the events of this run, polled every `intervalMs` (default 1000).
 */
export function startEventlogFile(options: {
  events: { list(query: { sinceId?: number; sinceTimestamp?: number }): EventRecord[] };
  file: string;
  log: Logger;
  intervalMs?: number;
}): EventlogFile {
  const { events, file, log } = options;
  const startedAt = Date.now() / 1000;
  let lastId: number | null = null;
  let writing: Promise<void> = file === STDOUT ? Promise.resolve() : mkdir(path.dirname(file), { recursive: true }).then(() => undefined);
  let hasFailed = false;

  const writeNew = async (): Promise<void> => {
    // A page at a time (the store bounds it), until a page comes back empty.
    for (;;) {
      const page = lastId === null ? events.list({ sinceTimestamp: startedAt }) : events.list({ sinceId: lastId });
      if (page.length === 0) return;
      const lines = page.map((event) => `${JSON.stringify(event)}\n`).join('');
      if (file === STDOUT) await new Promise<void>((resolve, reject) => process.stdout.write(lines, (error) => (error ? reject(error) : resolve())));
      else await appendFile(file, lines);
      lastId = page[page.length - 1]!.__id__;
    }
  };
  const tick = (): void => {
    writing = writing.then(writeNew).catch((error: unknown) => {
      // Once per run: a full disk or a bad path must not flood the log every second.
      if (!hasFailed) log.error({ err: error, file }, 'cannot write the eventlog file; events stay in the database');
      hasFailed = true;
    });
  };
  const timer = setInterval(tick, options.intervalMs ?? 1000);
  timer.unref();

  let closing: Promise<void> | null = null;
  return {
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        tick();
        await writing;
      })();
      return closing;
    },
  };
}
