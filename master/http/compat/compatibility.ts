import type { Express } from 'express';
import type { Compatibility } from './compatibility-mode.ts';
import { negotiateApiVersion } from './api-version.ts';
import { normaliseOriginalRequests } from './request-normaliser.ts';
import { translateAnswers } from './answer-translator.ts';

export type { Compatibility } from './compatibility-mode.ts';

/**
 * What lets the original ClusterRunner's clients use this master unchanged (issue 17): version negotiation
 * and the unversioned v2 paths, and (under `compatibility = original`) its vocabulary. Installed first, so
 * that every answer, even a refusal before routing, is translated; the request bodies are normalised later,
 * once read (normaliseOriginalRequests).
 */
export function addCompatibility(app: Express, mode: Compatibility): void {
  app.use(translateAnswers(mode));
  app.use(negotiateApiVersion(mode));
}

export { normaliseOriginalRequests };
