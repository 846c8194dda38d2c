/**
 * Polls GET /v1/build/:id every few ms until the build is terminal, timing each request, then prints one
 * JSON line (StatusPollReport) and exits. bench/throughput.ts runs it as its own process so that its
 * latencies are the master's, not the event-loop lag of a benchmark process busy with 200 simulated workers.
 *
 * Usage: node --import tsx bench/status-poller.ts <masterUrl> <buildId> <intervalMs> <timeoutMs> <archiveTimeoutMs>
 * It gives up (isTimedOut) after timeoutMs in all, or archiveTimeoutMs after the master counted the last
 * result without the build becoming terminal (a stalled archive). SIGTERM prints the report so far.
 */

export interface StatusPollReport {
  /** Milliseconds of each completed GET, in order, and the epoch ms at which each was sent. */
  readonly latenciesMs: number[];
  readonly sentAtMs: number[];
  /** Epoch ms (performance.timeOrigin + performance.now()) at which each status was first seen. */
  readonly firstSeenAtMs: Record<string, number>;
  /** Epoch ms of the first answer showing a completed subjob, and of the first showing all of them complete. */
  readonly firstCompletedAtMs: number | null;
  readonly allCompletedAtMs: number | null;
  /** [epoch ms, completed subjobs] at most once a second, for a progress curve. */
  readonly progress: [number, number][];
  /** Non-200 answers and failed requests, first few kept verbatim. */
  readonly failures: number;
  readonly failureSamples: string[];
  readonly finalStatus: string | null;
  readonly isTimedOut: boolean;
  /** Why it stopped before a terminal status: 'timeout', 'archive_timeout' or 'signal'. */
  readonly stopReason: string | null;
}

const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'ERROR', 'CANCELED']);

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

const report = {
  latenciesMs: [] as number[], sentAtMs: [] as number[], firstSeenAtMs: {} as Record<string, number>, failures: 0, failureSamples: [] as string[],
  finalStatus: null as string | null, isTimedOut: false as boolean, stopReason: null as string | null,
  firstCompletedAtMs: null as number | null, allCompletedAtMs: null as number | null, progress: [] as [number, number][],
} satisfies StatusPollReport;

async function poll(masterUrl: string, buildId: number, intervalMs: number, timeoutMs: number, archiveTimeoutMs: number): Promise<void> {
  const url = `${masterUrl}/v1/build/${buildId}`;
  const deadline = performance.now() + timeoutMs;
  let nextAt = performance.now();
  while (performance.now() < deadline) {
    if (report.allCompletedAtMs !== null && epochMs() - report.allCompletedAtMs > archiveTimeoutMs) {
      report.isTimedOut = true;
      report.stopReason = 'archive_timeout';
      return;
    }
    const started = performance.now();
    const sentAtMs = epochMs();
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
      const text = await response.text();
      report.latenciesMs.push(performance.now() - started);
      report.sentAtMs.push(sentAtMs);
      if (response.status !== 200) {
        report.failures++;
        if (report.failureSamples.length < 5) report.failureSamples.push(`HTTP ${response.status}: ${text.slice(0, 300)}`);
      } else {
        const { status, details } = (JSON.parse(text) as { build: { status: string; details: string | null } }).build;
        const now = epochMs();
        report.firstSeenAtMs[status] ??= now;
        // details is "{done} of {total} subjobs are complete (…)" (SPEC §2.1): the master's own count of results.
        const match = /^(\d+) of (\d+) subjobs/.exec(details ?? '');
        if (match) {
          const done = Number(match[1]);
          if (done > 0) report.firstCompletedAtMs ??= now;
          if (done === Number(match[2])) report.allCompletedAtMs ??= now;
          const last = report.progress.at(-1);
          if (last === undefined || now - last[0] >= 1000) report.progress.push([now, done]);
        }
        if (TERMINAL.has(status)) {
          report.finalStatus = status;
          return;
        }
      }
    } catch (error) {
      report.failures++;
      if (report.failureSamples.length < 5) report.failureSamples.push(String(error));
    }
    // A fixed cadence (not a fixed pause): a slow answer is followed at once by the next request.
    nextAt += intervalMs;
    const waitMs = nextAt - performance.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    else nextAt = performance.now();
  }
  report.isTimedOut = true;
  report.stopReason = 'timeout';
}

const [masterUrl, buildId, intervalMs, timeoutMs, archiveTimeoutMs] = process.argv.slice(2);
if (masterUrl === undefined || buildId === undefined) {
  process.stderr.write('usage: status-poller.ts <masterUrl> <buildId> [intervalMs] [timeoutMs] [archiveTimeoutMs]\n');
  process.exitCode = 2;
} else {
  process.once('SIGTERM', () => {
    report.isTimedOut = true;
    report.stopReason = 'signal';
    process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(0));
  });
  await poll(masterUrl, Number(buildId), Number(intervalMs ?? 25), Number(timeoutMs ?? 900_000), Number(archiveTimeoutMs ?? 900_000));
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
