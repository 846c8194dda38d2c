/**
 * Reads a V8 .cpuprofile (from `node --cpu-prof`) and prints where the time went: self time by function
 * (name + file + line), self time by file, and total (inclusive) time of the heaviest functions.
 *
 * Usage: npx tsx bench/cpu-profile-summary.ts <file.cpuprofile> [top=30] [fromS] [toS]
 * fromS/toS keep only the samples taken in that window (seconds from the profile's start), to look at one
 * phase of a run; the busy-per-second line printed first shows where the phases are.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}

/** The parts of the .cpuprofile JSON used here (Chrome DevTools protocol Profiler.Profile). */
export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  /** Microseconds between consecutive samples; timeDeltas[i] is the time before samples[i]. */
  readonly timeDeltas: readonly number[];
}

export interface TimeRow {
  readonly key: string;
  readonly ms: number;
  readonly share: number;
}

export interface ProfileSummary {
  readonly totalMs: number;
  /** Milliseconds not idle in each second of the whole profile (the window does not apply). */
  readonly busyMsBySecond: readonly number[];
  readonly selfByFunction: readonly TimeRow[];
  readonly selfByFile: readonly TimeRow[];
  readonly totalByFunction: readonly TimeRow[];
}

const ROOT_URL = new URL('..', import.meta.url).href;

/** Short, readable locations: paths inside the project relative to it, node_modules from the package on. */
function shortUrl(url: string): string {
  if (url === '') return '';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) return url.slice(modules + '/node_modules/'.length);
  if (url.startsWith(ROOT_URL)) return url.slice(ROOT_URL.length);
  return url.replace(/^file:\/\//, '');
}

function functionKey(frame: CallFrame): string {
  const name = frame.functionName === '' ? '(anonymous)' : frame.functionName;
  const url = shortUrl(frame.url);
  return url === '' ? name : `${name} ${url}:${frame.lineNumber + 1}`;
}

function fileKey(frame: CallFrame): string {
  // Native and VM entries ("(garbage collector)", "(program)", built-ins) have no file: keep their name.
  return frame.url === '' ? (frame.functionName === '' ? '(native)' : frame.functionName) : shortUrl(frame.url);
}

function rows(totals: ReadonlyMap<string, number>, totalUs: number, top: number): TimeRow[] {
  return [...totals]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => ({ key, ms: us / 1000, share: totalUs > 0 ? us / totalUs : 0 }));
}

export interface SummaryOptions {
  /** Rows per table; default 30. */
  readonly top?: number;
  /** Seconds from the profile's start: only samples in [fromS, toS) count. */
  readonly fromS?: number;
  readonly toS?: number;
}

export function summarizeCpuProfile(profile: CpuProfile, options: SummaryOptions = {}): ProfileSummary {
  const top = options.top ?? 30;
  const fromUs = (options.fromS ?? 0) * 1e6;
  const toUs = (options.toS ?? Number.POSITIVE_INFINITY) * 1e6;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);

  // Self time of each node: the time delta that follows each of its samples.
  const selfUs = new Map<number, number>();
  const busyUsBySecond: number[] = [];
  let totalUs = 0;
  let atUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    atUs += profile.timeDeltas[i] ?? 0;
    // The delta before the next sample is the time spent in this one; the last sample gets none.
    const us = Math.max(0, profile.timeDeltas[i + 1] ?? 0);
    const id = profile.samples[i]!;
    const second = Math.floor(atUs / 1e6);
    if (byId.get(id)!.callFrame.functionName !== '(idle)') busyUsBySecond[second] = (busyUsBySecond[second] ?? 0) + us;
    if (atUs < fromUs || atUs >= toUs) continue;
    selfUs.set(id, (selfUs.get(id) ?? 0) + us);
    totalUs += us;
  }

  const selfByFunction = new Map<string, number>();
  const selfByFile = new Map<string, number>();
  const totalByFunction = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    selfByFunction.set(functionKey(frame), (selfByFunction.get(functionKey(frame)) ?? 0) + us);
    selfByFile.set(fileKey(frame), (selfByFile.get(fileKey(frame)) ?? 0) + us);
    // Inclusive time: every function on the stack gets the sample once, even when it recurses.
    const onStack = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const key = functionKey(byId.get(at)!.callFrame);
      if (key === '(root)') continue;
      onStack.add(key);
    }
    for (const key of onStack) totalByFunction.set(key, (totalByFunction.get(key) ?? 0) + us);
  }
  return {
    totalMs: totalUs / 1000,
    busyMsBySecond: Array.from(busyUsBySecond, (us) => Math.round((us ?? 0) / 1000)),
    selfByFunction: rows(selfByFunction, totalUs, top),
    selfByFile: rows(selfByFile, totalUs, top),
    totalByFunction: rows(totalByFunction, totalUs, top),
  };
}

export function formatProfileSummary(summary: ProfileSummary): string {
  const table = (title: string, items: readonly TimeRow[]) => [
    title,
    ...items.map((row) => `  ${row.ms.toFixed(0).padStart(8)} ms ${(row.share * 100).toFixed(1).padStart(5)}%  ${row.key}`),
  ].join('\n');
  return [
    `busy ms in each second of the profile: ${summary.busyMsBySecond.map((ms, second) => `${second}:${ms}`).join(' ')}`,
    `profiled (in the window): ${(summary.totalMs / 1000).toFixed(2)} s of samples`,
    table('self time by function:', summary.selfByFunction),
    table('self time by file:', summary.selfByFile),
    table('total (inclusive) time by function:', summary.totalByFunction),
  ].join('\n\n');
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top, fromS, toS] = process.argv.slice(2);
  if (file === undefined) {
    process.stderr.write('usage: cpu-profile-summary.ts <file.cpuprofile> [top]\n');
    process.exitCode = 2;
  } else {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    process.stdout.write(`${formatProfileSummary(summarizeCpuProfile(profile, {
      top: top === undefined ? undefined : Number(top),
      fromS: fromS === undefined ? undefined : Number(fromS),
      toS: toS === undefined ? undefined : Number(toS),
    }))}\n`);
  }
}
