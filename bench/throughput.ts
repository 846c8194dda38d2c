/**
 * Master throughput: a real master process (`bin/clusterrunner master`), 200 simulated workers × 8 executors
 * (bench/sim-worker.ts, in this process) that finish every atom at once, and one directory build of 100,000
 * atoms of `true`. Only the master does real work per atom, so this measures how many results it can take.
 *
 * Figures: results per second (first result → last result, and POST → terminal), the master's peak memory
 * (VmHWM, and RSS sampled during the run), GET /v1/build/:id latency polled every 25 ms from a separate
 * process (bench/status-poller.ts), and the final archive phase (last result → terminal).
 *
 * Environment: BENCH_THROUGHPUT_ATOMS (default 100000), BENCH_WORKERS (default 200), BENCH_EXECUTORS
 * (default 8), BENCH_ARCHIVE_TIMEOUT_S (default 300: how long after the last result the build may take to
 * become terminal before the bench reports a stalled archive and stops), BENCH_CPU_PROF=<dir> runs the master
 * with `node --cpu-prof` and writes its profile there (summarize it with bench/cpu-profile-summary.ts),
 * BENCH_KEEP=1 keeps the temp base directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { signRequest } from '../shared/auth.ts';
import { positiveIntegerFromEnv, procCpuSeconds, procStatusMb, startMasterProcess, startStatusPoller, stopMasterProcess, type MasterProcess, type StatusPoller } from './master-process.ts';
import { startSimWorker, type SimWorker } from './sim-worker.ts';


const ATOMS = positiveIntegerFromEnv('BENCH_THROUGHPUT_ATOMS', 100_000);
const WORKERS = positiveIntegerFromEnv('BENCH_WORKERS', 200);
const EXECUTORS = positiveIntegerFromEnv('BENCH_EXECUTORS', 8);
const ARCHIVE_TIMEOUT_MS = positiveIntegerFromEnv('BENCH_ARCHIVE_TIMEOUT_S', 300) * 1000;
const CPU_PROFILE_DIR = process.env['BENCH_CPU_PROF'] ? resolve(process.env['BENCH_CPU_PROF']) : null;
const KEEP_BASE = process.env['BENCH_KEEP'] === '1';

// Issue 18's targets.
const TARGET_RESULTS_PER_S = 20_000;
const TARGET_PEAK_MB = 300;
const TARGET_STATUS_P99_MS = 20;
const STATUS_POLL_INTERVAL_MS = positiveIntegerFromEnv('BENCH_POLL_MS', 25);
/** The whole build may take this long before the bench gives up (a stalled master must not hang it). */
const BUILD_TIMEOUT_MS = 60 * 60_000;
const RSS_SAMPLE_INTERVAL_MS = 250;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function connectWorkers(masterUrl: string, secret: string, onAtomFinished: (atMs: number) => void): Promise<SimWorker[]> {
  const workers: SimWorker[] = [];
  // A few at a time: 200 signed upgrades at once would only measure the accept queue.
  for (let i = 0; i < WORKERS; i += 20) {
    const batch = Array.from({ length: Math.min(20, WORKERS - i) }, (_, j) =>
      startSimWorker({ masterUrl, secret, name: `sim-${i + j}`, numExecutors: EXECUTORS, onAtomFinished }));
    workers.push(...batch);
    await Promise.all(batch.map((worker) => worker.registered));
  }
  return workers;
}

interface BuildView {
  readonly status: string;
  readonly num_atoms: number | null;
  readonly error_message: string | null;
  readonly state_timestamps: Record<string, number>;
}

async function getBuild(masterUrl: string, buildId: number): Promise<BuildView | string> {
  try {
    const response = await fetch(`${masterUrl}/v1/build/${buildId}`, { signal: AbortSignal.timeout(30_000) });
    if (!response.ok) return `GET /v1/build/${buildId}: HTTP ${response.status} ${await response.text()}`;
    return ((await response.json()) as { build: BuildView }).build;
  } catch (error) {
    return `GET /v1/build/${buildId} failed: ${String(error)}`;
  }
}

/** Files of the build's results folder with their sizes: shows how far a stalled archive got. */
function listResultFiles(dir: string): string {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => `${entry.name} ${(statSync(join(dir, entry.name)).size / 1024 / 1024).toFixed(1)} MB`)
      .join(', ');
  } catch {
    return '(none)';
  }
}

interface LatencyFigures {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

function latencyFigures(latenciesMs: readonly number[]): LatencyFigures {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? Number.NaN };
}

const formatLatency = (figures: LatencyFigures) =>
  `${figures.count} requests, p50 ${figures.p50.toFixed(1)} ms, p99 ${figures.p99.toFixed(1)} ms, max ${figures.max.toFixed(1)} ms`;

const base = await mkdtemp(join(tmpdir(), 'cr-bench-throughput-'));
if (CPU_PROFILE_DIR) mkdirSync(CPU_PROFILE_DIR, { recursive: true });
const secret = randomBytes(16).toString('hex');
let master: MasterProcess | null = null;
let poller: StatusPoller | null = null;
let workers: SimWorker[] = [];
let rssTimer: NodeJS.Timeout | null = null;
try {
  master = await startMasterProcess({
    base, secret, cpuProfileDir: CPU_PROFILE_DIR, masterConf: [
      // Room for the bench's atoms whatever the defaults become (`seq` prints at most 7 bytes per atom here).
      `max_atoms = ${Math.max(200_000, ATOMS)}`,
      `max_atomizer_output_bytes = ${Math.max(64 * 1024 * 1024, ATOMS * 16)}`,
      'no_worker_timeout_seconds = 0',
      // Every simulated worker connects from 127.0.0.1, all at once, and holds its connection open beside
      // the poller's and the bench's own (the per-address limit of issue 10 item 4).
      `max_worker_connects_per_second = ${WORKERS * 2}`,
      `max_connections_per_address = ${WORKERS + 100}`,
      `max_connections = ${WORKERS + 1000}`,
    ],
  });
  const pid = master.child.pid!;
  let firstResultMs = Number.NaN;
  let lastResultMs = Number.NaN;
  let resultsSent = 0;
  const onAtomFinished = (atMs: number) => {
    if (resultsSent === 0) firstResultMs = atMs;
    lastResultMs = atMs;
    resultsSent++;
  };
  const connectStarted = performance.now();
  workers = await connectWorkers(master.url, secret, onAtomFinished);
  const connectS = (performance.now() - connectStarted) / 1000;
  const idleRssMb = procStatusMb(pid, 'VmRSS');

  const rssSamples: { atMs: number; mb: number }[] = [];
  const body = JSON.stringify({ type: 'directory', project_directory: base, config: { commands: ['true'], atomizers: [{ N: `seq 1 ${ATOMS}` }] } });
  const masterCpuBefore = procCpuSeconds(pid);
  const benchCpuBefore = process.cpuUsage();
  const postedAtMs = performance.now();
  rssTimer = setInterval(() => {
    const mb = procStatusMb(pid, 'VmRSS');
    if (Number.isFinite(mb)) rssSamples.push({ atMs: performance.now(), mb });
  }, RSS_SAMPLE_INTERVAL_MS);
  const response = await fetch(`${master.url}/v1/build`, { method: 'POST', body, headers: signRequest(secret, 'POST', '/v1/build', body) });
  if (response.status !== 202) throw new Error(`POST /v1/build: HTTP ${response.status} ${await response.text()}`);
  const { build_id: buildId } = (await response.json()) as { build_id: number };

  const currentPoller = startStatusPoller(master.url, buildId, { intervalMs: STATUS_POLL_INTERVAL_MS, timeoutMs: BUILD_TIMEOUT_MS, archiveTimeoutMs: ARCHIVE_TIMEOUT_MS });
  poller = currentPoller;
  const masterOutput = master.output;
  const masterGone = master.exited.then((code) => {
    currentPoller.stop();
    throw new Error(`the master exited (code ${code}) during the build:\n${masterOutput.lines.join('\n')}`);
  });
  const poll = await Promise.race([currentPoller.report, masterGone]);
  clearInterval(rssTimer);
  rssTimer = null;
  const endedAtMs = performance.now();
  const masterCpuS = procCpuSeconds(pid) - masterCpuBefore;
  const benchCpu = process.cpuUsage(benchCpuBefore);
  const peakMb = procStatusMb(pid, 'VmHWM');
  const endRssMb = procStatusMb(pid, 'VmRSS');
  const resultFiles = listResultFiles(join(base, 'results', String(buildId)));
  const build = await getBuild(master.url, buildId);

  // Epoch ms from the poller process to this process's performance.now() scale.
  const toLocalMs = (epoch: number | null | undefined) => (epoch === null || epoch === undefined ? Number.NaN : epoch - performance.timeOrigin);
  const firstAcceptedMs = toLocalMs(poll.firstCompletedAtMs);
  const allAcceptedMs = toLocalMs(poll.allCompletedAtMs);
  const terminalMs = toLocalMs(poll.finalStatus === null ? null : poll.firstSeenAtMs[poll.finalStatus]);
  // Sent: when the simulated workers sent them. Accepted: when GET /v1/build showed them counted (±25 ms);
  // the master frees an executor before it has stored the result, so the two can be far apart.
  const sentS = (lastResultMs - firstResultMs) / 1000;
  const acceptedS = (allAcceptedMs - firstAcceptedMs) / 1000;
  const acceptedPerS = ATOMS / acceptedS;
  const totalS = (terminalMs - postedAtMs) / 1000;
  const archiveS = (terminalMs - allAcceptedMs) / 1000;
  const resultsPhase = latencyFigures(poll.latenciesMs.filter((_, i) => toLocalMs(poll.sentAtMs[i]) <= allAcceptedMs || Number.isNaN(allAcceptedMs)));
  const archivePhase = latencyFigures(poll.latenciesMs.filter((_, i) => toLocalMs(poll.sentAtMs[i]) > allAcceptedMs));
  const allLatencies = latencyFigures(poll.latenciesMs);
  const rssPeak = (from: number, to: number) => Math.max(0, ...rssSamples.filter((sample) => sample.atMs >= from && sample.atMs <= to).map((sample) => sample.mb));
  const counts = workers.reduce((sum, worker) => ({
    subjobs: sum.subjobs + worker.counts.subjobs,
    setups: sum.setups + worker.counts.setups,
    teardowns: sum.teardowns + worker.counts.teardowns,
    aborted: sum.aborted + worker.counts.abortedLeases,
  }), { subjobs: 0, setups: 0, teardowns: 0, aborted: 0 });
  const protocolErrors = workers.flatMap((worker) => worker.counts.errors.map((error) => `${worker.name}: ${error}`));

  const verdict = (ok: boolean) => (ok ? 'PASS' : 'FAIL');
  const seconds = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)} s` : 'n/a');
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`throughput: ${ATOMS} atoms of \`true\`, ${WORKERS} simulated workers x ${EXECUTORS} executors, master pid ${pid}`);
  if (typeof build === 'string') out(`  build ${buildId}: ${build}`);
  else out(`  build ${buildId}: ${build.status}${build.error_message ? ` (${build.error_message})` : ''}, num_atoms ${build.num_atoms}`);
  out(`  workers connected in ${connectS.toFixed(2)} s; results sent ${resultsSent}, subjobs ${counts.subjobs}, setups ${counts.setups}, ` +
    `teardowns ${counts.teardowns}, aborted leases ${counts.aborted}`);
  if (typeof build !== 'string' && build.state_timestamps['queued'] !== undefined && build.state_timestamps['building'] !== undefined) {
    out(`  POST → BUILDING (atomize + plan): ${seconds(build.state_timestamps['building'] - build.state_timestamps['queued'])} (master clock)`);
  }
  out(`  POST → first result sent: ${seconds((firstResultMs - postedAtMs) / 1000)}`);
  out(`  results sent by workers, first → last: ${seconds(sentS)} => ${(resultsSent / sentS).toFixed(0)}/s (dispatch rate)`);
  out(`  results accepted by the master, first → last: ${seconds(acceptedS)} => ${acceptedPerS.toFixed(0)} results/s   ` +
    `[target >= ${TARGET_RESULTS_PER_S}: ${verdict(acceptedPerS >= TARGET_RESULTS_PER_S)}]`);
  if (poll.isTimedOut) {
    out(`  STALL: the build was not terminal ${seconds((endedAtMs - allAcceptedMs) / 1000)} after its last result ` +
      `(poller stopped: ${poll.stopReason}); results folder: ${resultFiles}`);
  } else {
    out(`  last result accepted → terminal (archive phase): ${seconds(archiveS)}`);
    out(`  POST → terminal: ${seconds(totalS)} => ${(ATOMS / totalS).toFixed(0)} atoms/s end to end`);
  }
  const curve = poll.progress.filter((_, i) => i % Math.max(1, Math.ceil(poll.progress.length / 12)) === 0);
  out(`  accepted results (s after POST: results): ${curve.map(([at, done]) => `${((toLocalMs(at) - postedAtMs) / 1000).toFixed(0)}: ${done}`).join(', ')}`);
  out(`  master memory: idle RSS ${idleRssMb.toFixed(0)} MB; peak sampled RSS while results came ${rssPeak(postedAtMs, allAcceptedMs).toFixed(0)} MB, ` +
    `during the archive ${rssPeak(allAcceptedMs, endedAtMs).toFixed(0)} MB; end RSS ${endRssMb.toFixed(0)} MB; VmHWM ${peakMb.toFixed(0)} MB   ` +
    `[target <= ${TARGET_PEAK_MB}: ${verdict(peakMb <= TARGET_PEAK_MB)}]`);
  out(`  GET /v1/build/${buildId} every ${STATUS_POLL_INTERVAL_MS} ms: ${formatLatency(allLatencies)}   ` +
    `[target p99 <= ${TARGET_STATUS_P99_MS}: ${verdict(allLatencies.p99 <= TARGET_STATUS_P99_MS)}]`);
  out(`    while results came: ${formatLatency(resultsPhase)}; during the archive: ${formatLatency(archivePhase)}`);
  out(`  CPU: master ${masterCpuS.toFixed(1)} s (${((masterCpuS * 1e6) / ATOMS).toFixed(0)} µs/atom), bench process ${((benchCpu.user + benchCpu.system) / 1e6).toFixed(1)} s`);
  const step = Math.max(1, Math.ceil(rssSamples.length / 12));
  out(`  RSS curve (s after POST: MB): ${rssSamples.filter((_, i) => i % step === 0).map((sample) => `${((sample.atMs - postedAtMs) / 1000).toFixed(0)}: ${sample.mb.toFixed(0)}`).join(', ')}`);
  if (poll.failures > 0) out(`  status poll failures: ${poll.failures}; ${poll.failureSamples.join(' | ')}`);
  if (protocolErrors.length > 0) out(`  protocol errors seen by simulated workers:\n    ${protocolErrors.slice(0, 10).join('\n    ')}`);
  if (master.output.warnings + master.output.errors > 0) {
    out(`  master log: ${master.output.warnings} warnings, ${master.output.errors} errors; last lines:\n    ${master.output.lines.slice(-10).join('\n    ')}`);
  }
  if (typeof build === 'string' || build.status !== 'SUCCESS') process.exitCode = 1;
} finally {
  if (rssTimer) clearInterval(rssTimer);
  poller?.stop();
  await Promise.all(workers.map((worker) => worker.close()));
  if (master) await stopMasterProcess(master);
  if (CPU_PROFILE_DIR) {
    const profiles = readdirSync(CPU_PROFILE_DIR).filter((name) => name.endsWith('.cpuprofile'));
    process.stdout.write(`  master CPU profile(s) in ${CPU_PROFILE_DIR}: ${profiles.join(', ') || 'none written'}\n`);
  }
  if (KEEP_BASE) process.stdout.write(`  base directory kept: ${base}\n`);
  else await rm(base, { recursive: true, force: true });
}
