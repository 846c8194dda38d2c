import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { findMarkedProcesses, killMarkedProcesses, spawnShell, type GroupProcess, type ShellOptions } from '../../shared/process.ts';
import { Spawner, availableSpawners, type SpawnerKind } from '../../shared/spawner.ts';

/** spawnShell through each spawner that runs here: the same contract as Node's spawn (process.test.ts). */
let spawner: Spawner;
let dir: string;
let marker: string;
const started: GroupProcess[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cr-spawner-'));
  marker = `test-${process.pid}-${Math.random().toString(36).slice(2)}`;
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((child) => child.stop('cancel')));
  killMarkedProcesses(marker);
  rmSync(dir, { recursive: true, force: true });
});


function run(command: string, options: Partial<ShellOptions> = {}) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const child = spawnShell(command, {
    cwd: dir, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, graceMs: 2_000, marker, spawner,
    onOutput: (chunk) => out.push(chunk), onStderr: (chunk) => err.push(chunk), ...options,
  });
  started.push(child);
  return { child, output: () => Buffer.concat(out).toString('utf8'), stderr: () => Buffer.concat(err).toString('utf8') };
}

function groupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' ? undefined : Number(fields[2]);
  } catch {
    return undefined;
  }
}

function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

function liveGroupMembers(pgid: number): number[] {
  return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number).filter((pid) => groupOf(pid) === pgid);
}

// Debian's python3 and perl-base are both here: a machine without either would test only what it has, so
// say so rather than pass having tested nothing.
it('has a spawner to test', () => {
  expect(availableSpawners().length).toBeGreaterThan(0);
});

describe.each(availableSpawners().map((kind): [SpawnerKind] => [kind]))('spawnShell through the %s spawner', (kind) => {
  beforeAll(() => {
    spawner = new Spawner(kind);
  });
  afterAll(() => spawner.close());

  it('reports exit codes and signals', async () => {
    expect((await run('exit 0').child.result).exitCode).toBe(0);
    expect(await run('exit 3').child.result).toMatchObject({ exitCode: 3, signal: null, stopReason: null });
    expect(await run('kill -KILL $$').child.result).toMatchObject({ exitCode: -9, signal: 'SIGKILL' });
  });

  it('gives the command exactly its environment, the marker, its cwd, its own process group, no terminal and no stdin', async () => {
    const running = run('echo "$GREETING $CLUSTERRUNNER_MARKER ${HOME-unset}"; pwd; ps -o pgid=,tty= -p $$; read -r line; echo "read $?"', {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', GREETING: 'hello world' },
    });
    expect((await running.child.result).exitCode).toBe(0);
    const [greeting, cwd, groupAndTty, read] = running.output().split('\n');
    expect(greeting).toBe(`hello world ${marker} unset`);
    expect(cwd).toBe(dir);
    expect(groupAndTty!.trim().split(/\s+/)).toEqual([String(running.child.pid), '?']);
    expect(read).toBe('read 1');
  });

  // Under the kernel's autogroups a session is a scheduling group with one share of the CPUs: a session per
  // command gave 80 running shells 80 shares against the one of the daemon serving them.
  it('starts every command in one session, the spawner\'s, which is not the worker\'s', async () => {
    const first = run('ps -o sid= -p $$; sleep 30');
    const second = run('ps -o sid= -p $$; sleep 30');
    await expect.poll(() => first.output() !== '' && second.output() !== '', { timeout: 10_000 }).toBe(true);
    const [firstSid, secondSid] = [Number(first.output()), Number(second.output())];
    expect(firstSid).toBe(secondSid);
    expect(firstSid).not.toBe(first.child.pid);
    expect(firstSid).not.toBe(sessionOf(process.pid));
  });

  it('merges stderr in order, or keeps it apart when asked', async () => {
    const merged = run('echo a; echo b >&2; echo c');
    await merged.child.result;
    expect(merged.output()).toBe('a\nb\nc\n');
    const apart = run('echo a; echo b >&2', { mergeStderr: false });
    await apart.child.result;
    expect(apart.output()).toBe('a\n');
    expect(apart.stderr()).toBe('b\n');
  });

  it('relays large output whole', async () => {
    const running = run('head -c 3000000 /dev/zero | tr "\\0" x');
    await running.child.result;
    expect(running.output().length).toBe(3_000_000);
  });

  it('stops the whole group: SIGTERM, then SIGKILL after the grace', async () => {
    const running = run(`trap '' TERM; sleep 100 & echo up; wait`, { graceMs: 300 });
    await expect.poll(() => running.output(), { timeout: 10_000 }).toContain('up');
    await expect.poll(() => liveGroupMembers(running.child.pid).length).toBeGreaterThanOrEqual(2);
    const result = await running.child.stop('worker_stop');
    expect(result).toMatchObject({ exitCode: -9, signal: 'SIGKILL', stopReason: 'worker_stop' });
    expect(liveGroupMembers(running.child.pid)).toEqual([]);
  });

  it('stops on timeout and on abort, even before the pid is known', async () => {
    expect(await run('sleep 30', { timeoutMs: 200 }).child.result).toMatchObject({ exitCode: -15, stopReason: 'timeout' });
    const result = await run('sleep 30', { signal: AbortSignal.abort('lease_lost') }).child.result;
    // Stopped by its signal, not ended by itself: the group was signalled once the pid came.
    expect(result).toMatchObject({ exitCode: -15, stopReason: 'lease_lost' });
  });

  it('reports a missing working directory as a failed result', async () => {
    const running = run('echo never', { cwd: join(dir, 'missing') });
    expect(await running.child.result).toMatchObject({ exitCode: 127, signal: null, stopReason: null });
    expect(running.output()).toContain('does not exist');
    expect(running.child.pid).toBe(0);
  });

  it('does not wait for a grandchild holding the output pipe', async () => {
    const running = run('(sleep 30 &) ; echo done');
    expect((await running.child.result).exitCode).toBe(0);
    expect(running.output()).toBe('done\n');
  });

  it('holds a paused command on its full pipe and loses nothing', async () => {
    let received = 0;
    const child = spawnShell('head -c 4000000 /dev/zero', {
      cwd: dir, env: { PATH: '/usr/bin:/bin' }, graceMs: 500, spawner, onOutput: (chunk) => {
        received += chunk.length;
      },
    });
    started.push(child);
    child.pauseOutput();
    await expect.poll(() => child.pid > 0 && liveGroupMembers(child.pid).some((pid) => /pipe_write/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'))), { timeout: 10_000, interval: 20 }).toBe(true);
    expect(received).toBeLessThan(1_000_000);
    child.resumeOutput();
    expect((await child.result).exitCode).toBe(0);
    expect(received).toBe(4_000_000);
  });

  // command_nice: the commands run below the worker, per process (what counts in a service's cgroup) and per
  // autogroup (what counts where sessions are scheduling groups; the kernel takes such a write at most every
  // 100 ms from the whole machine, so it may come a little after the first command).
  it('runs commands at the nice asked for, their session\'s autogroup too, and at ours by default', async () => {
    const niced = new Spawner(kind, { nice: 7 });
    try {
      const seen = async (chosen: Spawner) => {
        const running = run('ps -o ni= -p $$; cat /proc/self/autogroup', { spawner: chosen });
        expect((await running.child.result).exitCode).toBe(0);
        const [nice, autogroup] = running.output().split('\n');
        return { nice: Number(nice), autogroupNice: Number(/ nice (-?\d+)$/.exec(autogroup!)?.[1]) };
      };
      const own = getPriority();
      expect((await seen(niced)).nice).toBe(Math.min(19, own + 7));
      await expect.poll(async () => (await seen(niced)).autogroupNice, { timeout: 15_000, interval: 100 }).toBe(7);
      expect(await seen(spawner)).toEqual({ nice: own, autogroupNice: 0 });
    } finally {
      niced.close();
    }
  });

  it('refuses a nice outside 0 to 19', () => {
    expect(() => new Spawner(kind, { nice: 20 })).toThrow(/nice: expected an integer from 0 to 19, got 20/);
    expect(() => new Spawner(kind, { nice: -1 })).toThrow(/got -1/);
  });

  it('runs hundreds of commands four at a time, with questions in between, every one to its true end', async () => {
    // A signal handler run at the wrong instant once corrupted the spawner's heap after a few hundred commands.
    const results: number[] = [];
    await Promise.all(Array.from({ length: 4 }, async (_, lane) => {
      for (let i = 0; i < 100; i++) {
        results.push((await spawnShell(`exit ${(lane + i) % 3}`, { cwd: dir, env: {}, graceMs: 500, spawner }).result).exitCode);
        if (i % 4 === 0) await spawner.mayHaveEscaped();
      }
    }));
    expect(results).toHaveLength(400);
    expect(results.filter((code) => code === 0)).toHaveLength(134);
    expect(results.every((code) => code >= 0 && code <= 2)).toBe(true);
  });

  it('outlives a signal to its process group, which is the worker\'s to act on, and its commands ignore no signal', async () => {
    const first = run('echo $PPID; grep SigIgn /proc/$$/status');
    expect((await first.child.result).exitCode).toBe(0);
    const [spawnerPid, ignored] = first.output().trim().split('\n');
    // Ctrl-C in a terminal, a service manager's or a pool's stop: INT, TERM, HUP, QUIT to the whole group.
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.kill(Number(spawnerPid), signal);
    const second = run('echo $PPID; sleep 0.2');
    expect((await second.child.result).exitCode).toBe(0);
    expect(second.output().trim()).toBe(spawnerPid);
    // Every signal at its default, but for glibc's two internal ones (32, 33), which its posix_spawn leaves
    // ignored; a glibc program installs its own handlers for them when it needs them.
    const mask = BigInt(`0x${ignored!.split('\t')[1]}`);
    expect(mask & ~0x1_8000_0000n).toBe(0n);
  });

  it('tells that a process escaped its group, and the marker still finds it', async () => {
    await run('true').child.result;
    await expect.poll(() => spawner.mayHaveEscaped()).toBe(false);
    const meanwhile = run('sleep 30', { marker: `${marker}-other` });
    // The result itself says so, as seen when the shell was reaped; a command leaving nothing says no.
    expect((await run('true').child.result).mayHaveEscaped).toBe(false);
    const running = run('setsid sleep 60 & echo started');
    expect(await running.child.result).toMatchObject({ exitCode: 0, mayHaveEscaped: true });
    expect(await spawner.mayHaveEscaped()).toBe(true);
    expect(findMarkedProcesses(marker)).toHaveLength(1);
    killMarkedProcesses(marker);
    // A command still running is no escape.
    await expect.poll(() => spawner.mayHaveEscaped(), { timeout: 10_000 }).toBe(false);
    await meanwhile.child.stop('cancel');
  });
});
