import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tempDir } from './cluster.ts';

const GIT_ENV = { GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' };

export interface TestRepo {
  readonly dir: string;
  git(...args: string[]): string;
  /** Writes the files (path -> content) and commits them; returns the new commit. */
  commit(files: Record<string, string>, message?: string): string;
  head(): string;
}

/** A real git repository in a temp folder, on branch master. */
export function createRepo(files: Record<string, string>): TestRepo {
  const dir = tempDir('cr-repo-');
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, env: { ...process.env, ...GIT_ENV } }).toString().trim();
  git('init', '-q', '-b', 'master');
  const repo: TestRepo = {
    dir,
    git,
    commit(changed, message = 'change') {
      for (const [path, content] of Object.entries(changed)) {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), content);
      }
      git('add', '-A');
      git('commit', '-q', '-m', message);
      return git('rev-parse', 'HEAD');
    },
    head: () => git('rev-parse', 'HEAD'),
  };
  repo.commit(files, 'initial');
  return repo;
}
