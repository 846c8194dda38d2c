/**
 * `clusterrunner logs ID [--atom SUBJOB/ATOM] [--follow]` (issue 16): the console output of one atom, or of
 * every atom of a build, read page by page (SPEC §2.2) so that a huge console never sits in memory; with
 * --follow, new lines as they arrive until the atom (or the build) is done. Output is neutralised.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAtomRef, parseBuildId, runClientCommand, type ClientFlags } from './client-context.ts';
import { EXIT_SUCCESS } from './exit-codes.ts';
import { isTerminalStatus, type AtomView, type MasterClient } from './master-client.ts';
import { neutraliseBlock, neutraliseLine } from './terminal-text.ts';

export interface LogsFlags extends ClientFlags {
  readonly atom?: string;
  readonly follow?: boolean;
}

/** Lines asked for per request: bounded answers, few round trips. */
const PAGE_LINES = 1_000;
const FOLLOW_POLL_MS = 500;

interface AtomCursor {
  readonly subjobId: number;
  readonly atomId: number;
  /** Next line to ask for. */
  offset: number;
}

/** Reads every complete line from cursor.offset on, page by page; returns how many lines came. */
async function readNewLines(client: MasterClient, buildId: number, cursor: AtomCursor, emit: (content: string) => void): Promise<number> {
  let lines = 0;
  for (;;) {
    const page = await client.atomConsolePage(buildId, cursor.subjobId, cursor.atomId, cursor.offset, PAGE_LINES);
    if (page.num_lines === 0) return lines;
    emit(page.content);
    cursor.offset += page.num_lines;
    lines += page.num_lines;
    if (cursor.offset >= page.total_num_lines) return lines;
  }
}

/** Console lines to stdout, neutralised; with a prefix on each line when atoms interleave (--follow). */
function writeBlock(content: string, prefix: string): void {
  if (content === '') return;
  const text = neutraliseBlock(content).replace(/\n$/, '');
  process.stdout.write(prefix === '' ? `${text}\n` : `${text.split('\n').map((line) => `${prefix}${line}`).join('\n')}\n`);
}

export function runLogsCommand(id: string, flags: LogsFlags): Promise<number> {
  return runClientCommand(flags, async ({ client }, out) => {
    const buildId = parseBuildId(id);
    const one = flags.atom === undefined ? null : parseAtomRef(flags.atom);
    const build = await client.getBuild(buildId);
    if (one !== null) {
      const cursor: AtomCursor = { ...one, offset: 0 };
      const collected: string[] = [];
      const emit = (content: string) => (out.isJson ? collected.push(content) : writeBlock(content, ''));
      for (;;) {
        await readNewLines(client, buildId, cursor, emit);
        if (flags.follow !== true) break;
        const atom = await client.getAtom(buildId, one.subjobId, one.atomId);
        if (atom.state === 'COMPLETED' || isTerminalStatus((await client.getBuild(buildId)).status)) {
          await readNewLines(client, buildId, cursor, emit);
          break;
        }
        await sleep(FOLLOW_POLL_MS);
      }
      if (out.isJson) out.json({ build_id: buildId, subjob_id: one.subjobId, atom_id: one.atomId, content: collected.join('') });
      return EXIT_SUCCESS;
    }

    // Every atom: blocks one after the other, or with --follow, lines as they come, each marked with its atom.
    const cursors = new Map<string, AtomCursor>();
    const results = new Map<string, { subjob_id: number; id: number; command_string: string; exit_code: number | null; content: string }>();
    let status = build.status;
    for (;;) {
      const atoms: AtomView[] = (await client.listSubjobs(buildId)).flatMap((subjob) => subjob.atoms);
      for (const atom of atoms) {
        const key = `${atom.subjob_id}/${atom.id}`;
        let cursor = cursors.get(key);
        if (cursor === undefined) {
          if (flags.follow === true && atom.state === 'NOT_STARTED') continue;
          cursor = { subjobId: atom.subjob_id, atomId: atom.id, offset: 0 };
          cursors.set(key, cursor);
          if (flags.follow !== true && !out.isJson) process.stdout.write(`==> atom ${key} (exit code ${atom.exit_code ?? 'none yet'}): ${neutraliseLine(atom.command_string)}\n`);
        }
        if (out.isJson) {
          const entry = results.get(key) ?? { subjob_id: atom.subjob_id, id: atom.id, command_string: atom.command_string, exit_code: null, content: '' };
          await readNewLines(client, buildId, cursor, (content) => {
            entry.content += content;
          });
          entry.exit_code = atom.exit_code;
          results.set(key, entry);
        } else {
          await readNewLines(client, buildId, cursor, (content) => writeBlock(content, flags.follow === true ? `[${key}] ` : ''));
        }
      }
      if (flags.follow !== true || isTerminalStatus(status)) break;
      await sleep(FOLLOW_POLL_MS);
      // One more pass after the build ends picks up the last lines.
      status = (await client.getBuild(buildId)).status;
    }
    if (out.isJson) out.json({ build_id: buildId, status, atoms: [...results.values()] });
    return EXIT_SUCCESS;
  });
}
