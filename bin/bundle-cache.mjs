// Node 20 cannot run TypeScript itself. tsx's loader transpiles module by module on a hooks thread, which
// costs every start (a master, a worker, each CLI call) about 1.3 s of CPU. Instead the sources are bundled
// once by esbuild into one ES module, kept until a source file changes; node_modules stay outside it.
import { createHash } from 'node:crypto';
import { readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';

const SOURCE_DIRS = ['cli', 'master', 'worker', 'shared'];
const STALE_BUNDLE_MS = 10 * 60 * 1000;

/** Every .ts source under the folders the CLI is made of, with what tells a change: its size and mtime. */
function sourceStamp(root) {
  const hash = createHash('sha256');
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) {
        const stat = statSync(path);
        hash.update(`${relative(root, path)}\0${stat.size}\0${stat.mtimeMs}\n`);
      }
    }
  };
  for (const dir of SOURCE_DIRS) walk(join(root, dir));
  hash.update(process.version);
  return hash.digest('hex').slice(0, 16);
}

/**
 * Each source keeps its own `import.meta.url` (the code finds its static files, conf and bin/ through it),
 * which a bundle would otherwise give the bundle's own address.
 */
function keepModuleUrls(root) {
  return {
    name: 'keep-module-urls',
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, async (args) => {
        if (args.path.includes(`${join(root, 'node_modules')}`)) return undefined;
        const { readFile } = await import('node:fs/promises');
        const source = await readFile(args.path, 'utf8');
        return { contents: source.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)), loader: 'ts' };
      });
    },
  };
}

/**
 * The path of an up-to-date bundle of `entry`, built now if the sources changed since the last one; null
 * where none can be written (a read-only install), and the caller falls back to tsx. The bundle is split
 * at dynamic imports, so that a client command loads neither the master nor the worker.
 */
export async function bundledEntry(root, entry) {
  const cache = join(root, 'node_modules', '.cache', 'clusterrunner');
  const name = `cli-${sourceStamp(root)}`;
  const main = join(cache, name, 'main.js');
  try {
    statSync(main);
    return main;
  } catch {
    // Not built yet for these sources.
  }
  try {
    const { build } = await import('esbuild');
    // Several processes may start at once: each builds into its own folder and renames it into place.
    const temporary = join(cache, `${name}.${process.pid}.tmp`);
    await build({
      entryPoints: { main: join(root, entry) }, bundle: true, splitting: true, outdir: temporary,
      platform: 'node', format: 'esm', target: `node${process.versions.node}`, packages: 'external',
      sourcemap: 'inline', sourcesContent: false, logLevel: 'silent', plugins: [keepModuleUrls(root)],
    });
    try {
      renameSync(temporary, join(cache, name));
    } catch {
      rmSync(temporary, { recursive: true, force: true }); // another process put the same bundle there first
    }
    // Older bundles go once nothing can still be starting from them: a process loads its chunks within
    // seconds of its start, and may have started just before a source changed.
    for (const old of readdirSync(cache)) {
      const path = join(cache, old);
      if (old.startsWith('cli-') && old !== name && Date.now() - statSync(path).mtimeMs > STALE_BUNDLE_MS) rmSync(path, { recursive: true, force: true });
    }
    statSync(main);
    return main;
  } catch {
    return null;
  }
}
