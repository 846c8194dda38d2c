/**
 * `[pool NAME]` sections of clusterrunner.conf (SPEC §13): pools of workers the master starts and stops
 * itself. Read by shared/conf.ts, which hands over the section's entries; every problem names the file line,
 * the section and the key, and all of them are reported together with the rest of the conf's.
 */
import { z } from 'zod';

export const POOL_PROVIDERS = ['local', 'command'] as const;
export type PoolProvider = (typeof POOL_PROVIDERS)[number];

export interface PoolConf {
  readonly name: string;
  /** local: `clusterrunner worker` processes on the master's host; command: start_command/stop_command. */
  readonly provider: PoolProvider;
  /** Default 0. */
  readonly minWorkers: number;
  /** Required; at least 1 and at least min_workers. */
  readonly maxWorkers: number;
  /** Executors of each worker the pool starts; default 1. */
  readonly executorsPerWorker: number;
  /** Labels of the pool's workers (given to them at start); default none. */
  readonly labels: readonly string[];
  /** Provider command: run by /bin/sh on the master with POOL, WORKER_NAME and MASTER_URL set. */
  readonly startCommand: string | null;
  /** Provider command: run the same way to stop one worker; null = the master only ends its start command. */
  readonly stopCommand: string | null;
  /** Key replace_down_after_seconds: a pool worker lost for this long is replaced; default 60 s. */
  readonly replaceDownAfterMs: number;
  /** Key reap_idle_after_seconds: an idle worker above the minimum is drained and stopped; default 300 s. */
  readonly reapIdleAfterMs: number;
  /** Key start_timeout_seconds: a start that has not connected within this failed; default 120 s. */
  readonly startTimeoutMs: number;
}

export interface PoolEntry {
  readonly pool: string;
  readonly key: string;
  /** null for an empty value or None. */
  readonly value: string | null;
  /** "<file> line N", for messages. */
  readonly where: string;
}

export const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const MAX_LABELS = 32;
/** A pool is bounded too: a typo of an extra zero must not fork thousands of workers. */
const MAX_POOL_WORKERS = 1000;

const integer = (min: number, max: number) => z.string().regex(/^\+?\d+$/).pipe(z.coerce.number<string>().int().min(min).max(max));
const seconds = z.string().regex(/^\+?(\d+(\.\d*)?|\.\d+)$/).pipe(z.coerce.number<string>().positive().max(7 * 86_400));
const command = z.string().min(1).max(8192);
const labels = z.string().transform((text) => text.split(',').map((label) => label.trim()).filter((label) => label !== ''))
  .pipe(z.array(z.string().regex(LABEL)).max(MAX_LABELS));

const KEYS = {
  provider: [z.enum(POOL_PROVIDERS), `one of ${POOL_PROVIDERS.join(', ')}`],
  min_workers: [integer(0, MAX_POOL_WORKERS), `an integer from 0 to ${MAX_POOL_WORKERS}`],
  max_workers: [integer(1, MAX_POOL_WORKERS), `an integer from 1 to ${MAX_POOL_WORKERS}`],
  executors_per_worker: [integer(1, 1024), 'an integer from 1 to 1024'],
  labels: [labels, `a comma-separated list of at most ${MAX_LABELS} labels (letters, digits, _ . : -)`],
  start_command: [command, 'a shell command'],
  stop_command: [command, 'a shell command'],
  replace_down_after_seconds: [seconds, 'a number of seconds > 0'],
  reap_idle_after_seconds: [seconds, 'a number of seconds > 0'],
  start_timeout_seconds: [seconds, 'a number of seconds > 0'],
} as const satisfies Record<string, readonly [z.ZodType, string]>;
type PoolKey = keyof typeof KEYS;
export const POOL_KEYS: readonly PoolKey[] = Object.freeze(Object.keys(KEYS) as PoolKey[]);

function isPoolKey(key: string): key is PoolKey {
  return Object.hasOwn(KEYS, key);
}

/** Whether an INI section header names a pool; returns the pool's name (possibly invalid) or null. */
export function poolSectionName(section: string): string | null {
  const match = /^pool\s+(.*)$/.exec(section);
  return match ? match[1]!.trim() : null;
}

/** The pools, in file order; problems are appended to `problems` (the caller reports them all at once). */
export function parsePools(entries: readonly PoolEntry[], problems: string[]): readonly PoolConf[] {
  const byPool = new Map<string, PoolEntry[]>();
  for (const entry of entries) {
    const list = byPool.get(entry.pool) ?? [];
    list.push(entry);
    byPool.set(entry.pool, list);
  }
  const pools: PoolConf[] = [];
  for (const [name, poolEntries] of byPool) {
    const section = `[pool ${name}]`;
    if (!POOL_NAME.test(name)) {
      problems.push(`${poolEntries[0]!.where}: pool name ${JSON.stringify(name)} in ${section} must be 1 to 64 letters, digits, _ . or - (starting with a letter or digit)`);
      continue;
    }
    const values = new Map<PoolKey, unknown>();
    let isValid = true;
    for (const entry of poolEntries) {
      if (!isPoolKey(entry.key)) {
        problems.push(`${entry.where}: unknown key "${entry.key}" in ${section}; known keys: ${POOL_KEYS.join(', ')}`);
        isValid = false;
        continue;
      }
      const [schema, expected] = KEYS[entry.key];
      const result = (schema as z.ZodType).safeParse(entry.value);
      if (result.success) {
        values.set(entry.key, result.data);
      } else {
        const got = entry.value === null ? ' (it is empty)' : ` (got ${JSON.stringify(entry.value)})`;
        problems.push(`${entry.where}: "${entry.key}" in ${section} must be ${expected}${got}`);
        isValid = false;
      }
    }
    const at = poolEntries[0]!.where.replace(/ line \d+$/, '');
    const get = <K extends PoolKey>(key: K) => values.get(key) as z.output<(typeof KEYS)[K][0]> | undefined;
    const provider = get('provider');
    const maxWorkers = get('max_workers');
    const minWorkers = get('min_workers') ?? 0;
    if (!values.has('provider') && isValid) {
      problems.push(`${at}: "provider" is missing in ${section}; set it to ${POOL_PROVIDERS.join(' or ')}`);
      isValid = false;
    }
    if (!values.has('max_workers') && isValid) {
      problems.push(`${at}: "max_workers" is missing in ${section}; set the most workers the pool may run`);
      isValid = false;
    }
    if (maxWorkers !== undefined && minWorkers > maxWorkers) {
      problems.push(`${at}: "min_workers" (${minWorkers}) in ${section} must not be above "max_workers" (${maxWorkers})`);
      isValid = false;
    }
    if (provider === 'command' && !values.has('start_command')) {
      problems.push(`${at}: "start_command" is missing in ${section}; provider command needs it`);
      isValid = false;
    }
    if (provider === 'local') {
      for (const key of ['start_command', 'stop_command'] as const) {
        if (values.has(key)) {
          problems.push(`${at}: "${key}" in ${section} is for provider command; provider local starts clusterrunner worker itself`);
          isValid = false;
        }
      }
    }
    if (!isValid || provider === undefined || maxWorkers === undefined) continue;
    pools.push(Object.freeze({
      name,
      provider,
      minWorkers,
      maxWorkers,
      executorsPerWorker: get('executors_per_worker') ?? 1,
      labels: Object.freeze([...(get('labels') ?? [])]),
      startCommand: get('start_command') ?? null,
      stopCommand: get('stop_command') ?? null,
      replaceDownAfterMs: Math.round((get('replace_down_after_seconds') ?? 60) * 1000),
      reapIdleAfterMs: Math.round((get('reap_idle_after_seconds') ?? 300) * 1000),
      startTimeoutMs: Math.round((get('start_timeout_seconds') ?? 120) * 1000),
    }));
  }
  return Object.freeze(pools);
}
