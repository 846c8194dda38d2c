import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanupAll, eventually, spawnCli, tempDir, writeConf } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';

afterEach(cleanupAll);

describe('a master process rotates its log file', () => {
  it('keeps log_keep_files rotated files of about log_max_bytes beside the live one', async () => {
    const base = tempDir('cr-log-master-');
    const port = await freePort();
    const conf = writeConf(base, 'master', {
      general: { secret: 'log-rotation-secret', base_directory: base, log_max_bytes: 2048, log_keep_files: 2 },
      master: { port },
    });
    // spawnCli hands the master an appended log file as its stdout and stderr, as local mode does.
    const master = spawnCli(['master', '-c', conf, '-p', String(port)]);
    await eventually('the master to answer', async () => (await fetch(`http://127.0.0.1:${port}/v1`)).ok, 30_000);
    const logFile = readlinkSync(`/proc/${master.child.pid}/fd/2`);

    // Each refused write is one warning line of a few hundred bytes; keep logging until two rotations are kept
    // and a third has pushed the oldest out (the rotation looks once a second).
    const refuse = () => fetch(`http://127.0.0.1:${port}/v1/build`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    await eventually('three rotations', async () => {
      for (let n = 0; n < 10; n++) {
        expect((await refuse()).status).toBe(401);
      }
      // Once .2 no longer holds the first segment (the start lines), a third rotation has dropped it.
      return existsSync(`${logFile}.2`) && !readFileSync(`${logFile}.2`, 'utf8').includes('master listening') ? true : null;
    }, 40_000);

    expect(existsSync(`${logFile}.1`)).toBe(true);
    expect(existsSync(`${logFile}.3`)).toBe(false);
    // A rotated file holds what came in until the next look at its size: bounded, not a runaway.
    for (const file of [`${logFile}.1`, `${logFile}.2`]) expect(statSync(file).size).toBeLessThan(2048 * 20);
    for (const line of readFileSync(`${logFile}.1`, 'utf8').split('\n').filter((text) => text.startsWith('{'))) {
      expect(() => JSON.parse(line)).not.toThrow();
    }
    master.child.kill('SIGTERM');
    expect(await master.exited).toBe(0);
  }, 90_000);
});
