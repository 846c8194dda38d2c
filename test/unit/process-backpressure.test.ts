import { describe, expect, it } from 'vitest';
import { tmpdir } from 'node:os';
import { spawnShell } from '../../shared/process.ts';

describe('output backpressure', () => {
  it('holds a chatty command while its output is paused, and loses nothing', async () => {
    let received = 0;
    const child = spawnShell('head -c 8000000 /dev/zero', {
      cwd: tmpdir(), env: process.env, graceMs: 500, onOutput: (chunk) => {
        received += chunk.length;
      },
    });
    child.pauseOutput();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Only what fits in the pipe (and one read) can have arrived: the command is blocked on its writes.
    expect(received).toBeLessThan(1_000_000);
    child.resumeOutput();
    const result = await child.result;
    expect(result.exitCode).toBe(0);
    expect(received).toBe(8_000_000);
  });
});
