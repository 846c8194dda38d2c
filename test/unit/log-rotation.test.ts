import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createSilentLogger, startLogRotation } from '../../shared/log.ts';

const dirs: string[] = [];
const fds: number[] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) closeSync(fd);
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempFile(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cr-log-rotation-'));
  dirs.push(dir);
  return join(dir, name);
}

const lineOf = (n: number) => `{"msg":"line ${String(n).padStart(6, '0')}","pad":"${'x'.repeat(60)}"}\n`;
const numbersIn = (text: string) => text.split('\n').filter(Boolean).map((line) => Number(/line (\d+)/.exec(line)![1]));

describe('startLogRotation', () => {
  it('rotates an appended file by size and keeps the configured count, losing no line it keeps', () => {
    const path = tempFile('master.log');
    const fd = openSync(path, 'a');
    fds.push(fd);
    const rotation = startLogRotation({ fd, maxBytes: 1000, keepFiles: 3, log: createSilentLogger(), checkIntervalMs: 3_600_000 });
    expect(rotation.path).toBe(path);
    let rotations = 0;
    for (let n = 0; n < 200; n++) {
      writeSync(fd, lineOf(n));
      if (rotation.rotateIfNeeded()) rotations++;
    }
    rotation.close();
    expect(rotations).toBeGreaterThan(10);
    expect([1, 2, 3].map((index) => existsSync(`${path}.${index}`))).toEqual([true, true, true]);
    expect(existsSync(`${path}.4`)).toBe(false);
    for (const file of [path, `${path}.1`, `${path}.2`, `${path}.3`]) expect(statSync(file).size).toBeLessThan(1000 + lineOf(0).length);
    // Oldest to newest, the kept files hold one unbroken run of lines ending with the last one written.
    const kept = [`${path}.3`, `${path}.2`, `${path}.1`, path].flatMap((file) => numbersIn(readFileSync(file, 'utf8')));
    expect(kept.at(-1)).toBe(199);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, index) => 200 - kept.length + index));
  });

  it('leaves alone a file not opened for appending, and anything that is not a file', () => {
    const path = tempFile('truncating.log');
    const fd = openSync(path, 'w');
    fds.push(fd);
    writeFileSync(path, 'x'.repeat(5000));
    expect(startLogRotation({ fd, maxBytes: 1024, keepFiles: 2, log: createSilentLogger() }).path).toBeNull();
    expect(() => startLogRotation({ fd, maxBytes: 1024, keepFiles: 0, log: createSilentLogger() })).toThrow(/keepFiles/);
  });

  it('rotates the stderr of a real process, as local mode hands it a log file', async () => {
    const path = tempFile('worker.log');
    const fd = openSync(path, 'a');
    const logModule = fileURLToPath(new URL('../../shared/log.ts', import.meta.url));
    // A daemon-like process: a pino logger on stderr and the rotation timer, logging faster than it checks.
    const script = `
      const { createLogger, startLogRotation } = await import(${JSON.stringify(logModule)});
      const log = createLogger({ name: 'worker', level: 'info', pretty: false });
      startLogRotation({ maxBytes: 4096, keepFiles: 2, log, checkIntervalMs: 20 });
      for (let n = 0; n < 600; n++) {
        log.info({ n, pad: 'y'.repeat(40) }, 'tick');
        // A longer wait after the last line lets the timer rotate past it, as it may on a loaded machine.
        await new Promise((resolve) => setTimeout(resolve, n === 599 ? 100 : 1));
      }
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', fd] });
    closeSync(fd);
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    expect(existsSync(`${path}.1`)).toBe(true);
    expect(existsSync(`${path}.2`)).toBe(true);
    expect(existsSync(`${path}.3`)).toBe(false);
    // The newest line ends the file, or ends `.1` when a rotation came after it (the timer may fire while the
    // script waits after its last line: then the file is rightly empty, and a check of it alone failed in CI).
    const newestLines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean);
    const current = newestLines(path);
    const last = (current.length > 0 ? current : newestLines(`${path}.1`)).at(-1)!;
    expect(JSON.parse(last)).toMatchObject({ n: 599, msg: 'tick' });
    // Every kept file holds whole JSON lines: truncation never cut one.
    for (const file of [path, `${path}.1`, `${path}.2`]) {
      for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
    }
  }, 60_000);
});
