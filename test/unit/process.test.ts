import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  findMarkedProcesses,
  killMarkedProcesses,
  spawnShell,
  type GroupProcess,
  type ShellOptions,
} from '../../shared/process.ts';

let dir: string;
let marker: string;
const started: GroupProcess[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cr-process-'));
  marker = `test-${process.pid}-${Math.random().toString(36).slice(2)}`;
});

afterEach(async () => {
  // Whatever a failing test left behind must not outlive it.
  await Promise.all(started.splice(0).map((child) => child.stop('cancel')));
  killMarkedProcesses(marker);
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  readonly child: GroupProcess;
  output(): string;
  stderr(): string;
}

function run(command: string, options: Partial<ShellOptions> = {}): Run {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const child = spawnShell(command, {
    cwd: dir,
    env: { ...process.env },
    graceMs: 2_000,
    marker,
    onOutput: (chunk) => out.push(chunk),
    onStderr: (chunk) => err.push(chunk),
    ...options,
  });
  started.push(child);
  return {
    child,
    output: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8'),
  };
}

interface ProcInfo {
  readonly pid: number;
  readonly state: string;
  readonly pgrp: number;
}

function procInfo(pid: number): ProcInfo | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { pid, state: fields[0] ?? '?', pgrp: Number(fields[2]) };
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  const info = procInfo(pid);
  return info !== undefined && info.state !== 'Z' && info.state !== 'X';
}

function liveGroupMembers(pgid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => procInfo(Number(name)))
    .filter((info) => info !== undefined && info.pgrp === pgid && isAlive(info.pid))
    .map((info) => info!.pid);
}

/** Waits until the command has written `text`, proving it got past its start. */
async function waitForOutput(running: Run, text: string): Promise<void> {
  await expect.poll(() => running.output(), { timeout: 5_000 }).toContain(text);
}

describe('spawnShell', () => {
  it('reports exit codes', async () => {
    expect((await run('exit 0').child.result).exitCode).toBe(0);
    const failed = await run('exit 3').child.result;
    expect(failed).toMatchObject({ exitCode: 3, signal: null, stopReason: null });
    expect(failed.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('fails a pipeline when any part of it fails (pipefail)', async () => {
    expect((await run('false | true').child.result).exitCode).toBe(1);
  });

  it('gives the command its environment, the marker and the working directory', async () => {
    const running = run('echo "$GREETING $CLUSTERRUNNER_MARKER"; pwd', {
      env: { ...process.env, GREETING: 'hello' },
    });
    expect((await running.child.result).exitCode).toBe(0);
    expect(running.output()).toBe(`hello ${marker}\n${dir}\n`);
  });

  // command_nice where no spawner runs: Node's spawn has no such option, so the shell's first instants run at
  // ours (hence the sleep before looking).
  it('runs the command the nice asked for below us, and at ours by default', async () => {
    const niced = run('sleep 0.3; ps -o ni= -p $$', { nice: 6 });
    const plain = run('ps -o ni= -p $$');
    await Promise.all([niced.child.result, plain.child.result]);
    expect(Number(niced.output())).toBe(Math.min(19, getPriority() + 6));
    expect(Number(plain.output())).toBe(getPriority());
  });

  it('merges stderr into stdout in the exact order written', async () => {
    const running = run('echo a; echo b >&2; echo c; echo d >&2');
    await running.child.result;
    expect(running.output()).toBe('a\nb\nc\nd\n');
    expect(running.stderr()).toBe('');
  });

  it('puts a syntax error of the command into the merged output', async () => {
    const running = run('echo never; if then');
    expect((await running.child.result).exitCode).toBe(2);
    expect(running.output()).toContain('syntax error');
  });

  it('keeps stderr apart when asked', async () => {
    const running = run('echo a; echo b >&2', { mergeStderr: false });
    await running.child.result;
    expect(running.output()).toBe('a\n');
    expect(running.stderr()).toBe('b\n');
  });

  it('passes the command text to bash untouched', async () => {
    const running = run(`printf '%s\\n' "it's" '$HOME' "a;b"`);
    await running.child.result;
    expect(running.output()).toBe(`it's\n$HOME\na;b\n`);
  });

  it('stops a command with SIGTERM', async () => {
    const running = run('echo up; sleep 30');
    await waitForOutput(running, 'up');
    const result = await running.child.stop('cancel');
    expect(result).toMatchObject({ exitCode: -15, signal: 'SIGTERM', stopReason: 'cancel' });
    expect(isAlive(running.child.pid)).toBe(false);
  });

  it('SIGKILLs a command that ignores SIGTERM once the grace period is over', async () => {
    const graceMs = 300;
    const running = run(`trap '' TERM; echo up; sleep 30`, { graceMs });
    await waitForOutput(running, 'up');
    const stopAt = performance.now();
    const result = await running.child.stop('worker_stop');
    const stopMs = performance.now() - stopAt;
    expect(result).toMatchObject({ exitCode: -9, signal: 'SIGKILL', stopReason: 'worker_stop' });
    // Not before the grace (a timer may round down by a millisecond); how much later is the machine's business.
    expect(stopMs).toBeGreaterThanOrEqual(graceMs - 2);
    expect(isAlive(running.child.pid)).toBe(false);
    expect(liveGroupMembers(running.child.pid)).toEqual([]);
  });

  it('kills every process of the group', async () => {
    const running = run('sleep 100 & sleep 100 & echo up; wait');
    await waitForOutput(running, 'up');
    await expect.poll(() => liveGroupMembers(running.child.pid).length).toBeGreaterThanOrEqual(3);
    const members = liveGroupMembers(running.child.pid);
    await running.child.stop('cancel');
    expect(members.filter(isAlive)).toEqual([]);
  });

  it('returns the same promise when stopped twice', async () => {
    const running = run('echo up; sleep 30');
    await waitForOutput(running, 'up');
    const first = running.child.stop('cancel');
    const second = running.child.stop('timeout');
    expect(second).toBe(first);
    expect((await first).stopReason).toBe('cancel');
  });

  it('reports the natural result when stopped after it ended, and clears what it left behind', async () => {
    const running = run('sleep 30 & echo done');
    const natural = await running.child.result;
    expect(natural).toMatchObject({ exitCode: 0, stopReason: null });
    const leftBehind = liveGroupMembers(running.child.pid);
    expect(leftBehind.length).toBeGreaterThan(0);
    expect(await running.child.stop('cancel')).toEqual(natural);
    expect(leftBehind.filter(isAlive)).toEqual([]);
  });

  it('stops a command that runs past its timeout', async () => {
    const timeoutMs = 200;
    const running = run('sleep 30', { timeoutMs });
    const result = await running.child.result;
    expect(result).toMatchObject({ exitCode: -15, stopReason: 'timeout' });
    expect(result.durationMs).toBeGreaterThanOrEqual(timeoutMs - 2);
  });

  it('does not wait for a background grandchild holding its output pipe', async () => {
    const running = run('(sleep 30 &) ; echo done');
    const result = await running.child.result;
    // The grandchild still holds the pipe: the result came without waiting for it, however slow the machine.
    expect(liveGroupMembers(running.child.pid).length).toBeGreaterThan(0);
    expect(result.exitCode).toBe(0);
    expect(running.output()).toBe('done\n');
    await running.child.stop('cancel');
  });

  it('stops on abort, with the reason given when it is a stop reason', async () => {
    const controller = new AbortController();
    const running = run('echo up; sleep 30', { signal: controller.signal });
    await waitForOutput(running, 'up');
    controller.abort();
    expect((await running.child.result).stopReason).toBe('cancel');

    const leaseController = new AbortController();
    const leased = run('echo up; sleep 30', { signal: leaseController.signal });
    await waitForOutput(leased, 'up');
    leaseController.abort('lease_lost');
    expect((await leased.child.result).stopReason).toBe('lease_lost');
  });

  it('stops at once when the signal is already aborted', async () => {
    const result = await run('sleep 30', { signal: AbortSignal.abort() }).child.result;
    expect(result.stopReason).toBe('cancel');
    expect(result.exitCode).toBeLessThan(0);
  });

  it('reports a missing working directory as a failed result, not a crash', async () => {
    const running = run('echo never', { cwd: join(dir, 'missing') });
    const result = await running.child.result;
    expect(result).toMatchObject({ exitCode: 127, signal: null, stopReason: null });
    expect(running.output()).toContain('does not exist');
    expect(running.child.pid).toBe(0);
    expect(await running.child.stop('cancel')).toEqual(result);
  });
});

describe('marked processes', () => {
  it('finds and kills a process that escaped its group with setsid', async () => {
    const running = run('setsid sleep 30 & echo started');
    await running.child.result;
    await expect.poll(() => findMarkedProcesses(marker)).toHaveLength(1);
    const [escaped] = findMarkedProcesses(marker);
    expect(procInfo(escaped!)?.pgrp).not.toBe(running.child.pid);
    // Stopping the group cannot reach it: that is what the marker is for.
    await running.child.stop('cancel');
    expect(isAlive(escaped!)).toBe(true);

    expect(killMarkedProcesses(marker)).toBe(1);
    await expect.poll(() => isAlive(escaped!)).toBe(false);
    expect(findMarkedProcesses(marker)).toEqual([]);
  });

  it('finds nothing for an empty or unused marker', () => {
    expect(findMarkedProcesses('')).toEqual([]);
    expect(findMarkedProcesses(`${marker}-unused`)).toEqual([]);
    expect(killMarkedProcesses(`${marker}-unused`)).toBe(0);
  });
});
