import type { Request, Router } from 'express';
import { constants } from 'node:fs';
import { open, readdir, realpath } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { badRequest, notFound } from '../../shared/errors.ts';
import type { Store } from '../store/index.ts';
import { COMMAND_FILE, CONSOLE_FILE, EXIT_CODE_FILE, TIME_FILE, type ResultsLayout } from '../builds/results-layout.ts';
import { pagination, pathId } from './request-values.ts';
import { route, type ApiTree } from './api-tree.ts';

/**
 * Attachments (SPEC §12): the files atoms left in their ARTIFACT_DIR, as the master stored them
 * (results-layout.ts), listed page by page and served one by one while and after the build runs.
 */

export interface AttachmentRoutesDeps {
  readonly store: Store;
  readonly layout: ResultsLayout;
}

export interface Attachment {
  readonly subjobId: number;
  readonly atomId: number;
  /** Relative to the atom's folder, '/'-separated. */
  readonly path: string;
}

/** The master's own files in an atom's folder: results, not attachments. */
const RESERVED_FILES: ReadonlySet<string> = new Set([CONSOLE_FILE, COMMAND_FILE, EXIT_CODE_FILE, TIME_FILE]);
const ATOM_FOLDER = /^artifact_(\d{1,9})_(\d{1,9})$/;
/** A listing walks at most this many files: the workers' own limits keep honest builds far below it. */
export const MAX_WALKED_ATTACHMENTS = 200_000;

/**
 * Content types by extension; anything else is a download of bytes. Nothing a browser would run as a page
 * (html, svg, xhtml) gets its own type: stored content is never served as text/html.
 */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.txt': 'text/plain; charset=utf-8',
  '.log': 'text/plain; charset=utf-8',
  '.out': 'text/plain; charset=utf-8',
  '.csv': 'text/csv; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.json': 'application/json',
  '.xml': 'application/xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tgz': 'application/gzip',
  '.tar': 'application/x-tar',
};

export function attachmentContentType(path: string): string {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/** Every stored attachment of a build, in (subjob, atom, path) order; a missing folder has none. */
export async function listAttachments(artifactsDir: string): Promise<Attachment[]> {
  const folders = await readdir(artifactsDir, { withFileTypes: true }).catch(() => []);
  const atoms = folders.flatMap((entry) => {
    const match = entry.isDirectory() ? ATOM_FOLDER.exec(entry.name) : null;
    return match ? [{ name: entry.name, subjobId: Number(match[1]), atomId: Number(match[2]) }] : [];
  }).sort((a, b) => a.subjobId - b.subjobId || a.atomId - b.atomId);
  const found: Attachment[] = [];
  for (const atom of atoms) {
    const paths: string[] = [];
    // Iterative, regular files only: a link is never followed, whatever the unpacker let through.
    const stack = [''];
    while (stack.length > 0 && found.length + paths.length < MAX_WALKED_ATTACHMENTS) {
      const relative = stack.pop()!;
      const entries = await readdir(join(artifactsDir, atom.name, relative), { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) stack.push(path);
        else if (entry.isFile() && !(relative === '' && RESERVED_FILES.has(entry.name))) paths.push(path);
      }
    }
    paths.sort();
    for (const path of paths) found.push({ subjobId: atom.subjobId, atomId: atom.atomId, path });
    if (found.length >= MAX_WALKED_ATTACHMENTS) break;
  }
  return found;
}

/**
 * The attachment's path segments from the raw request path. Only the stored relative paths are served:
 * `..`, `.`, empty segments (an absolute or doubled path), backslashes, NUL, and %-escapes of `.`, `/`,
 * `\` or NUL (which could smuggle any of those past a check on the decoded path) are refused.
 */
export function attachmentPathSegments(rawTail: string): string[] {
  if (rawTail === '') throw badRequest('The attachment path is empty: give the file\'s path as the listing shows it.');
  if (rawTail.startsWith('/')) throw badRequest('The attachment path must be relative to the atom\'s folder, not absolute.');
  if (/%(2e|2f|5c|00)/i.test(rawTail)) throw badRequest('The attachment path holds an encoded ".", "/", "\\" or NUL; give the path as the listing shows it.');
  return rawTail.split('/').map((raw) => {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      throw badRequest('The attachment path holds a malformed %-escape.');
    }
    if (segment === '' || segment === '.' || segment === '..') {
      throw badRequest(`The attachment path may not hold ${segment === '' ? 'empty segments' : `"${segment}" segments`}.`);
    }
    if (/[\\\u0000-\u001f]/.test(segment)) throw badRequest('The attachment path may not hold backslashes or control characters.');
    return segment;
  });
}

/** `attachment; filename="..."` with a plain ASCII fallback and the exact name in RFC 8187 form. */
function contentDisposition(name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const exact = encodeURIComponent(name).replace(/['()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${fallback}"; filename*=UTF-8''${exact}`;
}

function rawTailAfter(req: Request, marker: string): string {
  const rawPath = req.originalUrl.split('?')[0]!;
  const at = rawPath.indexOf(marker);
  return at === -1 ? '' : rawPath.slice(at + marker.length);
}

export function addAttachmentRoutes(router: Router, deps: AttachmentRoutesDeps, tree: ApiTree): void {
  const { store, layout } = deps;
  const buildsPath = `${tree.prefix}/${tree.build}`;
  const attachmentUrl = (buildId: number, item: Attachment) =>
    `${buildsPath}/${buildId}/${tree.subjob}/${item.subjobId}/${tree.atom}/${item.atomId}/attachments/` +
    item.path.split('/').map(encodeURIComponent).join('/');
  const loadBuildId = (raw: string | string[] | undefined): number => {
    const id = pathId(raw, 'build');
    store.batcher.flush();
    if (!store.builds.get(id)) throw notFound(`Invalid build id: ${id}.`);
    return id;
  };

  route(router, `/${tree.build}/:buildId/attachments`, {
    get: [async (req, res) => {
      for (const key of Object.keys(req.query)) {
        if (key !== 'offset' && key !== 'limit') throw badRequest(`Unknown query parameter "${key}". Known parameters: offset, limit.`);
      }
      const buildId = loadBuildId(req.params['buildId']);
      const { offset, limit } = pagination(req.query);
      const all = await listAttachments(layout.artifactsDir(buildId));
      const attachments = [];
      for (const item of all.slice(offset, offset + limit)) {
        const handle = await open(join(layout.atomDir(buildId, item.subjobId, item.atomId), item.path), constants.O_RDONLY | constants.O_NOFOLLOW)
          .catch(() => null);
        // Gone since the walk (a retry starts its atom's folder afresh): not listed.
        if (handle === null) continue;
        const size = await handle.stat().then((info) => info.size).finally(() => handle.close());
        attachments.push({ subjob_id: item.subjobId, atom_id: item.atomId, path: item.path, size, url: attachmentUrl(buildId, item) });
      }
      const next = limit > 0 && offset + limit < all.length ? `${buildsPath}/${buildId}/attachments?offset=${offset + limit}&limit=${limit}` : null;
      res.json({
        attachments, next, total: all.length,
        child_routes: { attachment: `${buildsPath}/[build_id]/${tree.subjob}/[subjob_id]/${tree.atom}/[atom_id]/attachments/[path]` },
      });
    }],
  });

  route(router, `/${tree.build}/:buildId/${tree.subjob}/:subjobId/${tree.atom}/:atomId/attachments/*path`, {
    get: [async (req, res) => {
      const buildId = loadBuildId(req.params['buildId']);
      const subjobId = pathId(req.params['subjobId'], 'subjob');
      const atomId = pathId(req.params['atomId'], 'atom');
      const segments = attachmentPathSegments(rawTailAfter(req, '/attachments/'));
      const shown = segments.join('/');
      const missing = () => notFound(`Build ${buildId} has no attachment ${JSON.stringify(shown)} in atom ${subjobId}/${atomId}.`);
      if (segments.length === 1 && RESERVED_FILES.has(segments[0]!)) throw missing();
      const dir = layout.atomDir(buildId, subjobId, atomId);
      const path = join(dir, ...segments);
      // No link anywhere on the way: the file must really be inside the atom's folder.
      const [realDir, realPath] = await Promise.all([realpath(dir).catch(() => null), realpath(path).catch(() => null)]);
      if (realDir === null || realPath === null || !realPath.startsWith(realDir + sep)) throw missing();
      const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => null);
      if (handle === null) throw missing();
      try {
        const info = await handle.stat();
        if (!info.isFile()) throw missing();
        res.status(200).set({
          'Content-Type': attachmentContentType(shown),
          'Content-Length': String(info.size),
          'Content-Disposition': contentDisposition(segments.at(-1)!),
          'X-Content-Type-Options': 'nosniff',
          'Content-Security-Policy': "default-src 'none'; sandbox",
        });
        await pipeline(handle.createReadStream({ autoClose: false }), res).catch((error: unknown) => {
          // A client that hangs up mid-download is not a fault of the master.
          if (!res.destroyed) throw error;
        });
      } finally {
        await handle.close();
      }
    }],
  });
}
