import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LAYERS = ['cli', 'master', 'worker', 'shared'] as const;
const IMPORT = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

/** The project's own import graph: file -> files it imports (type-only imports included). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const layer of LAYERS) {
    for (const file of sourceFiles(join(ROOT, layer))) {
      const text = readFileSync(file, 'utf8');
      const targets: string[] = [];
      for (const match of text.matchAll(IMPORT)) {
        const specifier = match[1] ?? match[2]!;
        if (specifier.startsWith('.')) targets.push(relative(ROOT, resolve(dirname(file), specifier)));
      }
      graph.set(relative(ROOT, file), targets);
    }
  }
  return graph;
}

describe('architecture', () => {
  const graph = importGraph();

  it('keeps imports flowing cli -> master | worker -> shared', () => {
    const allowed: Record<string, readonly string[]> = {
      cli: ['cli', 'master', 'worker', 'shared'],
      master: ['master', 'shared'],
      worker: ['worker', 'shared'],
      shared: ['shared'],
    };
    const violations: string[] = [];
    for (const [file, targets] of graph) {
      const from = file.split('/')[0]!;
      for (const target of targets) {
        const to = target.split('/')[0]!;
        if (!allowed[from]?.includes(to)) violations.push(`${file} imports ${target}`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('has no import cycles', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'visiting') {
        cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'visiting');
      for (const target of graph.get(file) ?? []) visit(target, [...path, file]);
      state.set(file, 'done');
    };
    for (const file of graph.keys()) visit(file, []);
    expect(cycles).toEqual([]);
  });

  it('has no import cycles between the folders inside master/ and worker/', () => {
    // A folder is a part a reader learns as a whole (builds, model, store, workers, scheduling, http): a
    // cycle between two folders means neither can be understood, or changed, without the other.
    // Files right in master/ or worker/ (the composition root, metrics) are parts of their own.
    const folderOf = (file: string) => (dirname(file) === 'master' || dirname(file) === 'worker' ? file : dirname(file));
    const folders = new Map<string, Set<string>>();
    for (const [file, targets] of graph) {
      if (!file.startsWith('master/') && !file.startsWith('worker/')) continue;
      const from = folderOf(file);
      const edges = folders.get(from) ?? new Set<string>();
      folders.set(from, edges);
      for (const target of targets) {
        const to = folderOf(target);
        if (to !== from && (to.startsWith('master') || to.startsWith('worker'))) edges.add(to);
      }
    }
    const cycles: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (folder: string, path: string[]) => {
      if (state.get(folder) === 'done') return;
      if (state.get(folder) === 'visiting') {
        cycles.push([...path.slice(path.indexOf(folder)), folder].join(' -> '));
        return;
      }
      state.set(folder, 'visiting');
      for (const next of folders.get(folder) ?? []) visit(next, [...path, folder]);
      state.set(folder, 'done');
    };
    for (const folder of folders.keys()) visit(folder, []);
    expect(folders.size).toBeGreaterThan(4);
    expect(cycles).toEqual([]);
  });

  it('resolves every relative import to a file that exists', () => {
    const missing = [...graph].flatMap(([file, targets]) => targets.filter((t) => !graph.has(t)).map((t) => `${file} -> ${t}`));
    expect(missing).toEqual([]);
  });
});
