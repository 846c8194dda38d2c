import type { RequestHandler } from 'express';
import { MASK } from '../../shared/mask.ts';

/**
 * Every JSON answer of the API passes through here with the master's secret replaced by `***` (issue 10
 * item 7), and so is text sent as text (dashboard pages, event stream frames): atom strings, console pages,
 * error messages, the event log and any build field a build could
 * fill with text it read (its parent's command line, a conf file). The worker masks what it sends too; this
 * is the master's own line, for anything that reached its store some other way. Answers are bounded (console
 * pages, failed atoms, lists), so the pass costs little.
 */
export function maskSecretInAnswers(secret: string): RequestHandler {
  // The secret as it appears raw and inside a JSON string (quotes and backslashes escaped).
  const forms = [...new Set([secret, JSON.stringify(secret).slice(1, -1)])].filter((form) => form.length >= 4);
  const mask = (text: string) => forms.reduce((masked, form) => (masked.includes(form) ? masked.split(form).join(MASK) : masked), text);
  return (_req, res, next) => {
    const send = res.send.bind(res);
    // res.json serialises and calls res.send, so masking at send covers JSON answers without replacing
    // res.json (the compatibility layer wraps res.json to translate answers). Text written as text —
    // dashboard pages, event stream frames — is masked too; bytes (downloads, archives, attachments) are
    // the build's own files and pass unchanged.
    res.send = (body?: unknown) => send(typeof body === 'string' ? mask(body) : body);
    const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
    res.write = ((chunk: unknown, ...rest: unknown[]) => write(typeof chunk === 'string' ? mask(chunk) : chunk, ...rest)) as typeof res.write;
    next();
  };
}
