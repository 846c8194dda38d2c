/**
 * The limit the per-atom benches are held to: the cost of making the same spawns (`bash -c 'set -o pipefail;
 * true'`, N at a time, each in a session of its own as an atom is) with the cheapest spawner available here.
 * Measured in the same run, the lowest wins: Node's child_process, and a small process — a tiny C program
 * compiled at bench time when gcc is present (fork + setsid + exec, and posix_spawn, from a few hundred KB of
 * address space), else `xargs -P`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SCRIPT = 'set -o pipefail; true';

/**
 * `parallel` children at a time, waited for with wait(2); argv[3] picks how each starts: "fork" (fork,
 * setsid, exec bash) or "spawn" (posix_spawn with POSIX_SPAWN_SETSID: glibc's vfork-style clone, which copies
 * no page tables). The cheaper of the two is the small process's figure.
 */
const SMALL_SPAWNER_C = `
#define _GNU_SOURCE
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
  if (argc != 4) return 2;
  int total = atoi(argv[1]), parallel = atoi(argv[2]), started = 0, running = 0;
  int useSpawn = strcmp(argv[3], "spawn") == 0;
  char *args[] = { "bash", "-c", "${SCRIPT}", 0 };
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  while (started < total || running > 0) {
    if (started < total && running < parallel) {
      pid_t pid = -1;
      if (useSpawn) {
        if (posix_spawn(&pid, "/bin/bash", 0, &attr, args, environ) != 0) pid = -1;
      } else {
        pid = fork();
        if (pid == 0) { setsid(); execv("/bin/bash", args); _exit(127); }
      }
      if (pid > 0) { started++; running++; continue; }
    }
    if (wait(0) > 0) running--; else if (started >= total) break;
  }
  return 0;
}
`;

export interface SpawnLimit {
  /** Seconds for the spawns made from this Node process. */
  readonly nodeS: number;
  /** Seconds for the spawns made from the small process, and which one it was. */
  readonly smallS: number;
  readonly smallSpawner: string;
  /** The lower of the two. */
  readonly limitS: number;
}

/** `count` spawns from Node, `parallel` at a time. */
export async function nodeSpawnSeconds(count: number, parallel: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next++;
      await new Promise<void>((resolve, reject) => {
        const child = spawn('/bin/bash', ['-c', SCRIPT], { stdio: 'ignore', detached: true });
        child.on('error', reject);
        child.on('exit', () => resolve());
      });
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return (performance.now() - started) / 1000;
}

function runTimed(file: string, args: string[]): number {
  const started = performance.now();
  const run = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (run.status !== 0) throw new Error(`${file} ${args.join(' ')} exited ${run.status}: ${run.stderr.toString().slice(0, 300)}`);
  return (performance.now() - started) / 1000;
}

/** `count` spawns from a small process, `parallel` at a time. */
export function smallSpawnSeconds(count: number, parallel: number): { seconds: number; spawner: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cr-bench-spawner-'));
  try {
    writeFileSync(join(dir, 'spawner.c'), SMALL_SPAWNER_C);
    const compiled = spawnSync('gcc', ['-O2', '-o', join(dir, 'spawner'), join(dir, 'spawner.c')], { stdio: 'ignore' });
    if (compiled.status === 0) {
      const forkS = runTimed(join(dir, 'spawner'), [String(count), String(parallel), 'fork']);
      const spawnS = runTimed(join(dir, 'spawner'), [String(count), String(parallel), 'spawn']);
      return spawnS < forkS
        ? { seconds: spawnS, spawner: `C posix_spawn (C fork ${forkS.toFixed(2)} s)` }
        : { seconds: forkS, spawner: `C fork (C posix_spawn ${spawnS.toFixed(2)} s)` };
    }
    // No compiler: xargs, itself a small process; `sh -c 'exec setsid bash …'` would add an exec, so no setsid.
    const list = join(dir, 'list');
    writeFileSync(list, 'x\n'.repeat(count));
    return {
      seconds: runTimed('xargs', ['-a', list, '-P', String(parallel), '-n', '1', '/bin/bash', '-c', SCRIPT]),
      spawner: `xargs -P${parallel}`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureSpawnLimit(count: number, parallel: number): Promise<SpawnLimit> {
  const nodeS = await nodeSpawnSeconds(count, parallel);
  const small = smallSpawnSeconds(count, parallel);
  return { nodeS, smallS: small.seconds, smallSpawner: small.spawner, limitS: Math.min(nodeS, small.seconds) };
}

export function formatSpawnLimit(limit: SpawnLimit, count: number, parallel: number): string {
  return `spawn limit, ${count} x bash -c true, ${parallel} at a time: Node ${limit.nodeS.toFixed(2)} s, ` +
    `${limit.smallSpawner} ${limit.smallS.toFixed(2)} s -> limit ${limit.limitS.toFixed(2)} s`;
}
