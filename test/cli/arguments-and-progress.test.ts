/** The pure parts of the CLI: argument rewriting, the build request body, the progress output. */
import { describe, expect, it } from 'vitest';
import { buildRequestBody, joinRemoteFileArguments } from '../../cli/build-command.ts';
import { shutdownRequestBody } from '../../cli/shutdown-command.ts';
import { createProgressReporter, describeProgress } from '../../cli/progress.ts';
import { localMasterUrl, isThisMachine } from '../../cli/local-cluster.ts';

describe('joinRemoteFileArguments', () => {
  it('joins -f NAME URL into one value of the build command, wherever it stands', () => {
    expect(joinRemoteFileArguments(['build', '-f', 'a.txt', 'http://x/a', 'git', '--url', 'u', '--remote-file', 'b', 'http://x/b?c=d']))
      .toEqual(['build', '--remote-file', 'a.txt=http://x/a', 'git', '--url', 'u', '--remote-file', 'b=http://x/b?c=d']);
  });

  it('leaves NAME=URL, other commands and what follows -- alone', () => {
    expect(joinRemoteFileArguments(['build', '-f', 'a=http://x/a', 'directory'])).toEqual(['build', '-f', 'a=http://x/a', 'directory']);
    expect(joinRemoteFileArguments(['worker', '-f', 'a', 'b'])).toEqual(['worker', '-f', 'a', 'b']);
    expect(joinRemoteFileArguments(['build', '--', '-f', 'a', 'b'])).toEqual(['build', '--', '-f', 'a', 'b']);
  });
});

describe('buildRequestBody', () => {
  it('makes the directory absolute from the current folder, defaulting to it', () => {
    expect(buildRequestBody({}, { type: 'directory' }, '/home/me/project')).toEqual({ type: 'directory', project_directory: '/home/me/project' });
    expect(buildRequestBody({ jobName: 'J' }, { type: 'directory', projectDirectory: 'sub' }, '/home/me'))
      .toEqual({ type: 'directory', project_directory: '/home/me/sub', job_name: 'J' });
  });

  it('refuses a remote file without a URL or named twice', () => {
    expect(() => buildRequestBody({ remoteFile: ['lonely'] }, { type: 'directory' }, '/')).toThrow(/-f NAME URL/);
    expect(() => buildRequestBody({ remoteFile: ['a=http://x', 'a=http://y'] }, { type: 'directory' }, '/')).toThrow(/twice/);
  });
});

describe('shutdownRequestBody', () => {
  it('maps -a and -w to the API body, and refuses neither, both or non-numbers', () => {
    expect(shutdownRequestBody({ allWorkers: true })).toEqual({ shutdown_all: true });
    expect(shutdownRequestBody({ workerId: ['3', '4'] })).toEqual({ workers: [3, 4] });
    expect(shutdownRequestBody({})).toMatch(/-a\/--all-workers/);
    expect(shutdownRequestBody({ allWorkers: true, workerId: ['1'] })).toMatch(/not both/);
    expect(shutdownRequestBody({ workerId: ['x'] })).toMatch(/whole numbers/);
  });
});

describe('localMasterUrl and isThisMachine', () => {
  it('follows a moved port when master_url was left at its default', () => {
    expect(localMasterUrl({ masterUrl: 'http://127.0.0.1:43000', port: 43001 })).toBe('http://127.0.0.1:43001');
    expect(localMasterUrl({ masterUrl: 'http://127.0.0.1:43000', port: 43000 })).toBe('http://127.0.0.1:43000');
    expect(localMasterUrl({ masterUrl: 'http://build-box:45000', port: 43001 })).toBe('http://build-box:45000');
  });

  it('knows loopback names and this host, and nothing else', () => {
    expect(isThisMachine('http://localhost:1', { hostname: 'me' })).toBe(true);
    expect(isThisMachine('http://[::1]:1', { hostname: 'me' })).toBe(true);
    expect(isThisMachine('http://me:1', { hostname: 'me' })).toBe(true);
    expect(isThisMachine('http://elsewhere.example:1', { hostname: 'me' })).toBe(false);
  });
});

function fakeStream(columns?: number) {
  const writes: string[] = [];
  return { writes, stream: { columns, write: (text: string) => writes.push(text) } };
}

describe('progress output', () => {
  const building = { buildId: 3, status: 'BUILDING', atomsDone: 12, atomsTotal: 40, atomsFailed: 1 };

  it('describes the build, atoms only once they are known', () => {
    expect(describeProgress(building)).toBe('build 3: BUILDING 12/40 atoms done, 1 failed');
    expect(describeProgress({ buildId: 3, status: 'PREPARING', atomsDone: null, atomsTotal: null, atomsFailed: 0 })).toBe('build 3: PREPARING');
  });

  it('writes a plain line only when something changed', () => {
    const { writes, stream } = fakeStream();
    const progress = createProgressReporter({ stream, isTty: false });
    progress.update(building);
    progress.update(building);
    progress.update({ ...building, atomsDone: 13 });
    progress.clear();
    expect(writes).toHaveLength(2);
    expect(writes[0]).toMatch(/^\d\d:\d\d:\d\d build 3: BUILDING 12\/40 atoms done, 1 failed\n$/);
    expect(writes[1]).toMatch(/^\d\d:\d\d:\d\d build 3: BUILDING 13\/40 atoms done, 1 failed\n$/);
  });

  it('rewrites one line in place on a terminal, never wider than it, and clears it', () => {
    const { writes, stream } = fakeStream(30);
    let now = 0;
    const progress = createProgressReporter({ stream, isTty: true, now: () => now });
    progress.update(building);
    now = 5_000;
    progress.update(building);
    progress.clear();
    expect(writes).toHaveLength(3);
    for (const text of writes) {
      expect(text.startsWith('\r\x1b[2K')).toBe(true);
      expect(text).not.toContain('\n');
      expect(text.length - '\r\x1b[2K'.length).toBeLessThan(30);
    }
    expect(writes[2]).toBe('\r\x1b[2K');

    const wide = fakeStream(200);
    const wideProgress = createProgressReporter({ stream: wide.stream, isTty: true, now: () => 7_000 });
    wideProgress.update(building);
    expect(wide.writes[0]).toBe('\r\x1b[2Kbuild 3: BUILDING 12/40 atoms done, 1 failed  [######--------------] 0s');
  });
});
