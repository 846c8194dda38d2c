import type { RequestHandler } from 'express';
import { NONCE_HEADER, TIMESTAMP_HEADER } from '../../../shared/auth.ts';
import type { Compatibility } from './compatibility-mode.ts';
import type { ApiVersion } from './api-version.ts';
import { toOriginalVocabulary } from './original-vocabulary.ts';

/**
 * Rewrites every JSON answer on its way out (errors included, as they are sent with res.json too):
 * `api_version` says the version the request was answered in, and under `compatibility = original` the
 * body is in the original's vocabulary. Our own CLI and workers sign every request with a timestamp and a
 * nonce, which the original's clients never do, and the dashboard's calls are same-origin: both keep SPEC
 * §2.1's vocabulary in both modes.
 */
export function translateAnswers(mode: Compatibility): RequestHandler {
  return (req, res, next) => {
    const isSigned = req.headers[TIMESTAMP_HEADER] !== undefined && req.headers[NONCE_HEADER] !== undefined;
    // The dashboard is served by this master, so a browser marks its calls same-origin; the original's
    // clients are not browsers and send no Sec-Fetch-* header.
    const isOurClient = isSigned || req.headers['sec-fetch-site'] === 'same-origin';
    const inOriginalWords = mode === 'original' && !isOurClient;
    const send = res.json.bind(res);
    res.json = (body: unknown) => {
      let out = body;
      const version = res.locals['apiVersion'] as ApiVersion | undefined;
      if (version !== undefined && typeof out === 'object' && out !== null && 'api_version' in out) out = { ...out, api_version: version };
      return send(inOriginalWords ? toOriginalVocabulary(out) : out);
    };
    next();
  };
}
