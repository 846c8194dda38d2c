/**
 * The build archive (issue 18): what a build spends between its last result and its terminal status is mostly
 * writing artifacts.tar.gz and artifacts.zip. For each size in BENCH_ARCHIVE_ATOMS (1000,20000): that many
 * atom folders, each holding its console output as the master leaves it, archived BENCH_ARCHIVE_RUNS (5) times
 * by writeBuildArchives, as the finisher calls it. Prints each run and the median; the first run of a process
 * includes the JIT's warm-up, as a master's first builds do.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBuildArchives, type AtomResultFiles } from '../master/builds/archive.ts';
import { positiveIntegerFromEnv } from './master-process.ts';

const SIZES = (process.env['BENCH_ARCHIVE_ATOMS'] ?? '1000,20000').split(',').map((size) => {
  const atoms = Number(size);
  if (!Number.isInteger(atoms) || atoms < 1) throw new Error(`BENCH_ARCHIVE_ATOMS: expected sizes like 1000,20000, got ${JSON.stringify(size)}`);
  return atoms;
});
const RUNS = positiveIntegerFromEnv('BENCH_ARCHIVE_RUNS', 5);

process.stdout.write(`archive: writeBuildArchives (tar.gz + zip) of N atoms with their console output, ${RUNS} runs each\n`);
for (const atoms of SIZES) {
  const base = await mkdtemp(join(tmpdir(), 'cr-bench-archive-'));
  try {
    const artifactsDir = join(base, 'artifacts');
    mkdirSync(artifactsDir);
    const results: AtomResultFiles[] = [];
    for (let index = 0; index < atoms; index++) {
      const folder = join(artifactsDir, `artifact_${index}_0`);
      mkdirSync(folder);
      writeFileSync(join(folder, 'clusterrunner_console_output'), `atom ${index}\n`);
      results.push({ subjobId: index, atomId: 0, command: `export N="${index}"; true`, exitCode: 0, timeS: 0.01 });
    }
    const times: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const started = performance.now();
      await writeBuildArchives({ artifactsDir, tarGzPath: join(base, 'artifacts.tar.gz'), zipPath: join(base, 'artifacts.zip'), results, failures: [] });
      times.push(performance.now() - started);
    }
    const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
    process.stdout.write(`  ${atoms} atoms: ${times.map((ms) => ms.toFixed(0)).join(' / ')} ms; median ${median.toFixed(0)} ms (${((median * 1000) / atoms).toFixed(0)} µs per atom)\n`);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}
