/**
 * vs-original (issue 18): the original (Python) ClusterRunner started beside ours, both running the same
 * BENCH_VS_ATOMS (1000) atoms of `true` on one worker x 4 executors, POST to terminal, in alternation (ours,
 * original, ours, original …, BENCH_VS_ROUNDS (2) each), with the spawn limit (bench/spawn-limit.ts)
 * measured in the same run. The original runs from ../shared/original/ (CR_ORIGINAL_DIR overrides it: its
 * setup.sh, start.sh, stop.sh) with its source in the folder CR_SRC; when either is missing the bench says
 * what and how to get it, and skips itself.
 */
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSpawnLimit, measureSpawnLimit } from './spawn-limit.ts';
import { runOurCluster } from './local-cluster.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ATOMS = Number(process.env['BENCH_VS_ATOMS'] ?? 1000);
const ROUNDS = Math.max(2, Number(process.env['BENCH_VS_ROUNDS'] ?? 2));
const EXECUTORS = 4;
const ORIGINAL_DIR = resolve(process.env['CR_ORIGINAL_DIR'] ?? join(ROOT, '..', 'shared', 'original'));
const PYTHON = process.env['CR_PYTHON'] ?? '/usr/bin/python3';
const BUILD_TIMEOUT_MS = 30 * 60_000;

/** Why the original cannot run here, with what to do about it; null when it can. */
function whatIsMissing(): string | null {
  const src = process.env['CR_SRC'];
  const getSource = 'get its source with `git --git-dir=<a bare clone of github.com/box/ClusterRunner> archive HEAD | tar -x -C /tmp/cr-src` ' +
    `(any clone or snapshot of the public repository), run \`${join(ORIGINAL_DIR, 'setup.sh')} /tmp/cr-src\`, ` +
    'then `CR_SRC=/tmp/cr-src npm run bench -- vs-original`';
  for (const script of ['setup.sh', 'start.sh', 'stop.sh']) {
    if (!existsSync(join(ORIGINAL_DIR, script))) {
      return `${join(ORIGINAL_DIR, script)} is missing: CR_ORIGINAL_DIR must name the folder with the original's setup.sh, start.sh and stop.sh`;
    }
  }
  if (src === undefined || src === '') return `CR_SRC is not set (the folder holding the original's source): ${getSource}`;
  if (!existsSync(join(src, 'app', '__main__.py'))) return `CR_SRC=${src} holds no ClusterRunner source (no app/__main__.py): ${getSource}`;
  const check = spawnSync(PYTHON, ['-c', 'import app.master.cluster_master, app.slave.cluster_slave'], { cwd: src, encoding: 'utf8', timeout: 60_000 });
  if (check.status !== 0) {
    return `the original in CR_SRC=${src} does not import with ${PYTHON} (setup not done?): run \`${join(ORIGINAL_DIR, 'setup.sh')} ${src}\` ` +
      `(it installs Debian's python3 packages and patches the source for Python 3.11); ${(check.stderr ?? '').trim().split('\n').at(-1) ?? ''}`;
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? done(address.port) : fail(new Error('no port'))));
    });
  });
}

interface OriginalCluster {
  readonly dir: string;
  readonly url: string;
  readonly secret: string;
}

async function startOriginal(): Promise<OriginalCluster> {
  // Its master takes the port given and its slave the next one; both must be free.
  let port = await freePort();
  for (let tries = 0; tries < 20 && port > 65_000; tries++) port = await freePort();
  const started = spawnSync(join(ORIGINAL_DIR, 'start.sh'), ['-s', process.env['CR_SRC']!, '-p', String(port), '-k', '1', '-e', String(EXECUTORS)], {
    encoding: 'utf8', timeout: 180_000, env: { ...process.env, CR_LOG_LEVEL: 'WARNING' },
  });
  if (started.status !== 0) throw new Error(`start.sh failed (${started.status}): ${started.stderr}`);
  const values = new Map(started.stdout.split('\n').map((line) => line.match(/^(CR_\w+)=(.*)$/)).filter((match) => match !== null)
    .map((match) => [match[1]!, match[2]!.replace(/^"|"$/g, '')]));
  const dir = values.get('CR_DIR');
  const url = values.get('CR_MASTER_URL');
  const secret = values.get('CR_SECRET');
  if (!dir || !url || !secret) throw new Error(`start.sh printed no CR_DIR/CR_MASTER_URL/CR_SECRET: ${started.stdout}`);
  return { dir, url, secret };
}

function stopOriginal(cluster: OriginalCluster): void {
  spawnSync(join(ORIGINAL_DIR, 'stop.sh'), [cluster.dir], { stdio: 'ignore', timeout: 120_000 });
}

/** One build on the original, POST to FINISHED; seconds. */
async function runOriginal(cluster: OriginalCluster, projectDir: string): Promise<number> {
  const body = JSON.stringify({ type: 'directory', project_directory: projectDir, job_name: 'Bench' });
  const digest = createHmac('sha512', cluster.secret).update(body).digest('hex');
  const started = performance.now();
  const response = await fetch(`${cluster.url}/v1/build`, {
    method: 'POST', body, headers: { 'Content-Type': 'application/json', 'Clusterrunner-Message-Authentication-Digest': digest },
  });
  if (!response.ok) throw new Error(`original POST /v1/build: HTTP ${response.status} ${await response.text()}`);
  const { build_id: id } = (await response.json()) as { build_id: number };
  for (;;) {
    const { build } = (await (await fetch(`${cluster.url}/v1/build/${id}`)).json()) as { build: { status: string; result: string | null; num_atoms: number | null; error_message: string | null } };
    if (['FINISHED', 'ERROR', 'CANCELED'].includes(build.status)) {
      if (build.status !== 'FINISHED' || build.result !== 'NO_FAILURES') throw new Error(`original build ${id} ended ${build.status} ${build.result}: ${build.error_message}`);
      if (build.num_atoms !== ATOMS) throw new Error(`original build ${id} had ${build.num_atoms} atoms, not ${ATOMS}`);
      return (performance.now() - started) / 1000;
    }
    if (performance.now() - started > BUILD_TIMEOUT_MS) throw new Error(`original build ${id} still ${build.status} after ${BUILD_TIMEOUT_MS / 60_000} min`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
};
const list = (values: readonly number[]) => values.map((value) => value.toFixed(2)).join(', ');

process.stdout.write(`vs-original: ${ATOMS} atoms of \`true\`, 1 worker x ${EXECUTORS} executors, POST to terminal, ours and the original in alternation\n`);
const missing = whatIsMissing();
if (missing !== null) {
  process.stdout.write(`  skipped: ${missing}\n`);
} else {
  const limit = await measureSpawnLimit(ATOMS, EXECUTORS);
  process.stdout.write(`  ${formatSpawnLimit(limit, ATOMS, EXECUTORS)}\n`);
  const projectDir = mkdtempSync(join(tmpdir(), 'cr-bench-vs-original-'));
  writeFileSync(join(projectDir, 'clusterrunner.yaml'), `Bench:\n  commands:\n    - 'true'\n  atomizers:\n    - N: seq 1 ${ATOMS}\n`);
  const original = await startOriginal();
  const ours: number[] = [];
  const theirs: number[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const [our] = await runOurCluster({ workers: 1, executors: EXECUTORS, atoms: ATOMS, pollIntervalMs: null, cpuProfileDir: null });
      ours.push(our!.seconds);
      const their = await runOriginal(original, projectDir);
      theirs.push(their);
      process.stdout.write(`  round ${round}: ours ${our!.seconds.toFixed(2)} s, original ${their.toFixed(2)} s\n`);
    }
  } finally {
    stopOriginal(original);
    rmSync(projectDir, { recursive: true, force: true });
  }
  process.stdout.write(`  ours:     ${list(ours)} s (median ${median(ours).toFixed(2)}, ${(median(ours) / limit.limitS).toFixed(2)}x the spawn limit)\n`);
  process.stdout.write(`  original: ${list(theirs)} s (median ${median(theirs).toFixed(2)}, ${(median(theirs) / limit.limitS).toFixed(2)}x the spawn limit)\n`);
  process.stdout.write(`  original / ours: ${(median(theirs) / median(ours)).toFixed(2)} (medians)\n`);
}
