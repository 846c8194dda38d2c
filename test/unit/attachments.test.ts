/** Attachments (SPEC §12): what a listing walks, which paths a download accepts, and the types it serves. */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachmentContentType, attachmentPathSegments, listAttachments } from '../../master/http/attachments-routes.ts';
import { ClusterRunnerError } from '../../shared/errors.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function write(path: string, text = 'x'): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
}

describe('listAttachments', () => {
  it('lists the files atoms left, in subjob, atom and path order, without the master\'s own files or links', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cr-attach-'));
    dirs.push(dir);
    write(join(dir, 'artifact_10_0', 'z.txt'));
    write(join(dir, 'artifact_2_1', 'b.log'));
    write(join(dir, 'artifact_2_1', 'a', 'deep', 'c.json'));
    write(join(dir, 'artifact_2_1', 'clusterrunner_console_output'));
    write(join(dir, 'artifact_2_1', 'sub', 'clusterrunner_console_output'));
    write(join(dir, 'artifact_2_0', 'clusterrunner_exit_code'));
    write(join(dir, 'not_an_atom', 'x.txt'));
    write(join(dir, 'outside.txt'));
    symlinkSync(join(dir, 'outside.txt'), join(dir, 'artifact_2_1', 'link.txt'));
    symlinkSync(dir, join(dir, 'artifact_2_1', 'loop'));
    expect(await listAttachments(dir)).toEqual([
      { subjobId: 2, atomId: 1, path: 'a/deep/c.json' },
      { subjobId: 2, atomId: 1, path: 'b.log' },
      { subjobId: 2, atomId: 1, path: 'sub/clusterrunner_console_output' },
      { subjobId: 10, atomId: 0, path: 'z.txt' },
    ]);
  });

  it('has none for a build whose results folder does not exist (yet)', async () => {
    expect(await listAttachments(join(tmpdir(), 'cr-no-such-folder-for-attachments'))).toEqual([]);
  });
});

describe('attachmentPathSegments', () => {
  it('accepts stored relative paths, decoding ordinary escapes', () => {
    expect(attachmentPathSegments('report.xml')).toEqual(['report.xml']);
    expect(attachmentPathSegments('logs/run%201/out.txt')).toEqual(['logs', 'run 1', 'out.txt']);
    expect(attachmentPathSegments('caf%C3%A9..txt')).toEqual(['café..txt']);
  });

  const refused: [string, RegExp][] = [
    ['', /empty/],
    ['/etc/passwd', /not absolute/],
    ['../secret', /"\.\." segments/],
    ['a/../../b', /"\.\." segments/],
    ['./a', /"\." segments/],
    ['a//b', /empty segments/],
    ['a/', /empty segments/],
    ['%2e%2e/secret', /encoded/],
    ['..%2Fsecret', /encoded/],
    ['a%2fb', /encoded/],
    ['%2Fetc%2Fpasswd', /encoded/],
    ['a%5C..%5Cb', /encoded/],
    ['a%00.txt', /encoded/],
    ['a\\..\\b', /backslashes/],
    ['a%0Ab', /control characters/],
    ['%E0%A4%A', /malformed/],
  ];
  for (const [raw, message] of refused) {
    it(`refuses ${JSON.stringify(raw)} with a 400`, () => {
      let error: unknown;
      try {
        attachmentPathSegments(raw);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ClusterRunnerError);
      expect((error as ClusterRunnerError).status).toBe(400);
      expect((error as ClusterRunnerError).message).toMatch(message);
    });
  }
});

describe('attachmentContentType', () => {
  it('types known extensions and never serves a page a browser would run', () => {
    expect(attachmentContentType('a/report.XML')).toBe('application/xml');
    expect(attachmentContentType('out.txt')).toBe('text/plain; charset=utf-8');
    expect(attachmentContentType('shot.png')).toBe('image/png');
    for (const name of ['index.html', 'page.htm', 'x.xhtml', 'logo.svg', 'script.js', 'noextension']) {
      expect(attachmentContentType(name)).toBe('application/octet-stream');
    }
  });
});
