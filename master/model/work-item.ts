/** Work waiting for an executor: a subjob, or the atoms of it that still need a result. */
export interface WorkItem {
  readonly subjobId: number;
  readonly atomIds: readonly number[];
  /** A retried atom prefers another worker than the one it failed on. */
  readonly avoidWorkerId: number | null;
}
