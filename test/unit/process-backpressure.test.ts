import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { spawnShell } from '../../shared/process.ts';

/**
 * Kernel functions a writer sleeps in when its stdout (a pipe, or the socket pair Node gives a child) is
 * full, as /proc/PID/wchan names them.
 */
const WRITE_WAITS = /pipe_write|sock_alloc_send|wait_for_wmem|wait_for_peer|sk_stream_wait_memory/;

/** True when a process of the group sleeps in the kernel writing into its full output (Linux). */
function isBlockedOnWrite(pgid: number): boolean {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // Field 5 of stat is the process group; the command name (field 2) may hold spaces, so count from ')'.
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      if (pgrp === pgid && WRITE_WAITS.test(readFileSync(`/proc/${name}/wchan`, 'utf8'))) return true;
    } catch {
      // The process ended while we looked.
    }
  }
  return false;
}

describe('output backpressure', () => {
  it('holds a chatty command while its output is paused, and loses nothing', async () => {
    let received = 0;
    const child = spawnShell('head -c 8000000 /dev/zero', {
      cwd: tmpdir(), env: process.env, graceMs: 500, onOutput: (chunk) => {
        received += chunk.length;
      },
    });
    child.pauseOutput();
    // Wait until the command is stuck writing into its full output: that is what pausing must achieve.
    await expect.poll(() => isBlockedOnWrite(child.pid), { timeout: 10_000, interval: 20 }).toBe(true);
    // Only what fits in the pipe (and one read) can have arrived.
    expect(received).toBeLessThan(1_000_000);
    child.resumeOutput();
    const result = await child.result;
    expect(result.exitCode).toBe(0);
    expect(received).toBe(8_000_000);
  });
});
