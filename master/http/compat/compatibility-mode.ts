/**
 * `[master] compatibility`: `default` answers in SPEC §2.1's vocabulary; `original` answers the original
 * ClusterRunner's clients in theirs (status FINISHED with result NO_FAILURES, `slaves`, lower-case `status`).
 */
export const COMPATIBILITY_MODES = ['default', 'original'] as const;
export type Compatibility = (typeof COMPATIBILITY_MODES)[number];
