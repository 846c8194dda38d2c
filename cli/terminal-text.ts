/**
 * Text that comes from a build (atom strings, console output, error messages, names) is written by whoever
 * controls the build's code. Printed raw, an escape sequence can clear the screen, move the cursor or
 * retitle the window, and a test printed a fake "SUCCESS" that way (issue 10 item 11). Every such text goes
 * through here before the CLI prints it: control characters become visible `\xNN` / `\u{…}` escapes.
 */

// C0 controls (but tab and newline, handled per function), DEL, C1 controls, and the bidirectional
// overrides and isolates that reorder what a reader sees (Trojan Source, U+202E in file names).
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const LINE_BREAKS = /[\n\t]/g;

function escape(character: string): string {
  const code = character.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`;
}

/** For a block of output: keeps newlines and tabs, neutralises every other control character. */
export function neutraliseBlock(text: string): string {
  return text.replace(CONTROL, escape);
}

/** For text shown on one line (a name, an atom, a status line): newlines and tabs are escaped too. */
export function neutraliseLine(text: string): string {
  return neutraliseBlock(text).replace(LINE_BREAKS, escape);
}
