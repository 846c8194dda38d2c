/**
 * How `clusterrunner build` and `attach` show a running build. On a terminal: one status line rewritten in
 * place, with the running atoms and an estimate of the time left, cut to the terminal's width as it is now
 * (so a resize is followed; a terminal that reports 0 columns gets a sane width, not an empty line). In a
 * log (CI, a pipe, a file): a timestamped plain line only when something changed, so logs stay short.
 */
import { neutraliseLine } from './terminal-text.ts';

export interface BuildProgress {
  readonly buildId: number;
  readonly status: string;
  /** Atoms with an exit code; null until the build knows its atoms. */
  readonly atomsDone: number | null;
  /** null until the build is prepared. */
  readonly atomsTotal: number | null;
  /** Atoms that exited non-zero so far. */
  readonly atomsFailed: number;
  /** Atoms running now; default 0. */
  readonly atomsRunning?: number;
  /** Command strings of some running atoms (as the master shows them, not yet neutralised). */
  readonly runningAtoms?: readonly string[];
  /** Estimated seconds left; null when there is nothing to estimate from yet. */
  readonly etaSeconds?: number | null;
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
/** What a terminal that reports no width (0, undefined: some CI pseudo-terminals, `script`) gets. */
const FALLBACK_COLUMNS = 80;

/** `build 3: BUILDING 12/40 atoms done, 1 failed`; the status alone while the atoms are not known yet. */
export function describeProgress(progress: BuildProgress): string {
  let text = `build ${progress.buildId}: ${progress.status}`;
  if (progress.atomsTotal !== null && progress.atomsDone !== null) {
    text += ` ${progress.atomsDone}/${progress.atomsTotal} atoms done`;
  }
  if (progress.atomsFailed > 0) text += `, ${progress.atomsFailed} failed`;
  return text;
}

/** `1m05s`, `42s`, `2h03m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Local time of day, for plain lines in a log. */
export function timestamp(date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
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
        if (text !== lastPlain) options.stream.write(`${timestamp(new Date(now()))} ${text}\n`);
        lastPlain = text;
        return;
      }
      const seconds = Math.floor((now() - startedAt) / 1000);
      let line = `${describeProgress(progress)}  ${progressBar(progress)} ${formatDuration(seconds)}`;
      if (progress.etaSeconds !== undefined && progress.etaSeconds !== null) line += ` (about ${formatDuration(progress.etaSeconds)} left)`;
      const running = progress.atomsRunning ?? 0;
      if (running > 0) {
        const names = (progress.runningAtoms ?? []).map(neutraliseLine).join(', ');
        line += `  running ${running}${names === '' ? '' : `: ${names}`}`;
      }
      // A line wider than the terminal wraps, and then \r only rewrites its last part.
      const reported = options.stream.columns;
      const columns = reported !== undefined && reported > 0 ? reported : FALLBACK_COLUMNS;
      if (line.length >= columns) line = line.slice(0, Math.max(1, columns - 1));
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
