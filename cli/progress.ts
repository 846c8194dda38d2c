/**
 * How `clusterrunner build` shows a running build: on a terminal, one status line rewritten in place; in a
 * log (CI, a pipe, a file), a plain line only when something changed, so that logs stay short and diffable.
 */

export interface BuildProgress {
  readonly buildId: number;
  readonly status: string;
  /** Atoms with an exit code; null until the build knows its atoms. */
  readonly atomsDone: number | null;
  /** null until the build is prepared. */
  readonly atomsTotal: number | null;
  /** Atoms that exited non-zero so far. */
  readonly atomsFailed: number;
}

export interface ProgressReporter {
  update(progress: BuildProgress): void;
  /** Takes the live line off the terminal so that other output starts on a clean line; no-op for plain lines. */
  clear(): void;
}

export interface ProgressOptions {
  readonly stream: { write(text: string): unknown; readonly columns?: number };
  /** Live line (true) or plain lines (false). */
  readonly isTty: boolean;
  /** Milliseconds clock for the elapsed time on the live line; default Date.now. */
  readonly now?: () => number;
}

const CLEAR_LINE = '\r\x1b[2K';
const BAR_WIDTH = 20;

/** `build 3: BUILDING 12/40 atoms done, 1 failed`; the status alone while the atoms are not known yet. */
export function describeProgress(progress: BuildProgress): string {
  let text = `build ${progress.buildId}: ${progress.status}`;
  if (progress.atomsTotal !== null && progress.atomsDone !== null) {
    text += ` ${progress.atomsDone}/${progress.atomsTotal} atoms done`;
  }
  if (progress.atomsFailed > 0) text += `, ${progress.atomsFailed} failed`;
  return text;
}

export function createProgressReporter(options: ProgressOptions): ProgressReporter {
  const now = options.now ?? Date.now;
  const startedAt = now();
  let lastPlain = '';
  let isLineShown = false;

  return {
    update(progress) {
      if (!options.isTty) {
        const text = describeProgress(progress);
        if (text !== lastPlain) options.stream.write(`${text}\n`);
        lastPlain = text;
        return;
      }
      const seconds = Math.floor((now() - startedAt) / 1000);
      let line = `${describeProgress(progress)}  ${progressBar(progress)} ${seconds}s`;
      // A line wider than the terminal wraps, and then \r only rewrites its last part.
      const columns = options.stream.columns ?? 80;
      if (line.length >= columns) line = line.slice(0, Math.max(0, columns - 1));
      options.stream.write(`${CLEAR_LINE}${line}`);
      isLineShown = true;
    },
    clear() {
      if (!isLineShown) return;
      options.stream.write(CLEAR_LINE);
      isLineShown = false;
    },
  };
}

function progressBar(progress: BuildProgress): string {
  const total = progress.atomsTotal ?? 0;
  const done = progress.atomsDone ?? 0;
  const filled = total > 0 ? Math.min(BAR_WIDTH, Math.floor((done / total) * BAR_WIDTH)) : 0;
  return `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
}
