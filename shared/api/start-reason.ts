/**
 * Why a build was started (SPEC §11, LayerCI's start reasons): two optional POST /v1/build fields, stored
 * with the build (in its request parameters) and echoed in every view of it.
 */
import { z } from 'zod';

export const START_REASON_KEYS = ['run_start_reason', 'run_start_reason_url'] as const;

/** SPEC §11: strings up to 1 KiB, counted in UTF-8 bytes as stored. */
export const MAX_START_REASON_BYTES = 1024;

const fitsInKiB = (text: string) => Buffer.byteLength(text, 'utf8') <= MAX_START_REASON_BYTES;

/** Spread into the build request schema of either type. */
export const startReasonFields = {
  run_start_reason: z.string('"run_start_reason" must be a string.')
    .refine(fitsInKiB, `"run_start_reason" must be at most ${MAX_START_REASON_BYTES} bytes.`)
    .optional(),
  // http(s) only: the dashboard and clients show it as a link, and a javascript: or file: link is not one.
  run_start_reason_url: z.string('"run_start_reason_url" must be a string.')
    .refine(fitsInKiB, `"run_start_reason_url" must be at most ${MAX_START_REASON_BYTES} bytes.`)
    .refine((text) => /^https?:\/\/[^\s/?#]+\S*$/i.test(text), '"run_start_reason_url" must be an http(s) URL.')
    .optional(),
};
