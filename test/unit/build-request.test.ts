import { describe, expect, it } from 'vitest';
import { parseBuildRequest, redactRequestParams } from '../../master/builds/build-request.ts';

function refusal(body: unknown): string {
  try {
    parseBuildRequest(body);
  } catch (error) {
    expect((error as { status: number }).status).toBe(400);
    return (error as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('POST /v1/build body', () => {
  it('takes a directory request with defaults', () => {
    expect(parseBuildRequest({ type: 'Directory', project_directory: '/p' })).toMatchObject({
      type: 'directory', projectDirectory: '/p', branch: 'master', remote: 'origin', priority: 0, jobName: null, atomsOverride: null,
    });
  });

  it('names the type and the required parameters the way the original did', () => {
    expect(refusal({ project_directory: '/p' })).toBe('Invalid build request type.');
    expect(refusal({ type: 'svn' })).toBe('Invalid build request type.');
    expect(refusal({ type: 'directory' })).toBe('Missing required parameter. Required parameters: [project_directory]');
    expect(refusal({ type: 'git' })).toBe('Missing required parameter. Required parameters: [url]');
  });

  it('refuses unknown keys by name', () => {
    expect(refusal({ type: 'directory', project_directory: '/p', jobname: 'x' })).toMatch(/"jobname"/);
  });

  it.each([
    [{ priority: 'high' }, /priority/],
    [{ priority: 1.5 }, /priority/],
    [{ job_name: 5 }, /job_name/],
    [{ config: [] }, /config/],
    [{ atoms_override: 'export A="1";' }, /atoms_override/],
    [{ remote_files: { '../etc/passwd': 'https://x/y' } }, /remote_files/],
    [{ remote_files: { 'a.txt': 'ftp://x/y' } }, /remote_files/],
    [{ hash: 'abc' }, /hash/],
    [{ project_directory: 'relative/path' }, /absolute/],
  ])('names the field of a wrongly typed value: %j', (extra, pattern) => {
    expect(refusal({ type: 'directory', project_directory: '/p', ...extra })).toMatch(pattern);
  });

  it.each([null, [], 'text', 42])('refuses a body that is not an object: %j', (body) => {
    expect(refusal(body)).toMatch(/JSON object/);
  });

  it('masks credentials in URLs it echoes back', () => {
    const shown = redactRequestParams({ type: 'git', url: 'https://me:hunter2@example.com/r.git', remote_files: { 'a.txt': 'https://t:s3cret@x.org/a' } });
    expect(JSON.stringify(shown)).not.toMatch(/hunter2|s3cret/);
    expect(shown['url']).toBe('https://me:***@example.com/r.git');
  });
});
