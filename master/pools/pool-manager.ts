/**
 * The master's pools (SPEC §13): each tick it compares what a pool runs with its desired size, starts
 * workers when work waits, replaces pool workers lost for replace_down_after_seconds, drains idle workers
 * above the desired size after reap_idle_after_seconds (never a busy one), and backs off on failed starts.
 * The workers it started are remembered in SQLite, so a restarted master finds them again. So is a size set
 * by PUT /v2/pools/:name: it holds across restarts until a PUT with {"reset": true}, or until the conf's
 * min_workers or max_workers for that pool change (an edited conf is the operator's newer word).
 *
 * An instance (one worker this master started) moves: starting -> running <-> lost; starting | running |
 * lost -> stopping (failed start, replaced, reaped, resized); running -> draining -> stopping. Stopping ends
 * with the row and the folder removed.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Logger } from '../../shared/log.ts';
import { badRequest, conflict, errorMessage } from '../../shared/errors.ts';
import type { PoolConf } from '../../shared/pool-conf.ts';
import type { EventStore } from '../store/event-store.ts';
import type { WorkerEntry, WorkerRegistry } from '../workers/worker-registry.ts';
import { drainWorker } from '../workers/worker-session.ts';
import { desiredSizes, type Demand, type OtherWorker } from './desired-size.ts';
import type { PoolStore } from './pool-store.ts';
import type { PoolSizeStore } from '../store/pool-size-store.ts';
import { isOurs, startPoolWorker, stopPoolWorker, type ProviderContext, type StartedWorker } from './providers.ts';

export const INSTANCE_STATES = ['starting', 'running', 'lost', 'draining', 'stopping'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

interface Instance {
  readonly name: string;
  state: InstanceState;
  started: StartedWorker | null;
  startedAtMs: number;
  workerId: number | null;
  lostSinceMs: number | null;
  idleSinceMs: number | null;
  drainingSinceMs: number | null;
}

interface PoolState {
  conf: PoolConf;
  /** The conf file's sizes, which a PUT overrides and a reset restores. */
  readonly confSize: { readonly minWorkers: number; readonly maxWorkers: number };
  /** When a PUT set the size in use (epoch seconds); null while the conf's sizes hold. */
  resizedAt: number | null;
  readonly instances: Map<string, Instance>;
  desired: number;
  consecutiveFailures: number;
  nextStartAtMs: number;
  lastError: { message: string; at: number } | null;
}

/** What GET /v2/pools shows of one pool (SPEC §13), plus its workers and its last failure. */
export interface PoolView {
  name: string;
  provider: string;
  labels: string[];
  min_workers: number;
  max_workers: number;
  desired_workers: number;
  connected_workers: number;
  busy_workers: number;
  idle_workers: number;
  starting_workers: number;
  executors: { total: number; in_use: number };
  /** The master's host for a local pool; null where the pool's machines are elsewhere. */
  cpu: { cores: number; load1: number } | null;
  memory: { total_bytes: number; available_bytes: number } | null;
  consecutive_failures: number;
  next_start_at: number | null;
  last_error: { message: string; at: number } | null;
  /** When PUT /v2/pools/:name set min_workers and max_workers (epoch seconds); null: they are the conf's. */
  resized_at: number | null;
  workers: { name: string; state: InstanceState; worker_id: number | null; pid: number | null; started_at: number }[];
}

export interface PoolGauges {
  readonly poolWorkers: { set(labels: { pool: string; state: string }, value: number): void };
}

export interface PoolManagerDeps {
  readonly pools: readonly PoolConf[];
  readonly registry: WorkerRegistry;
  /** Executors that queued and running work can use now, by the labels they require (BuildManager.executorDemand). */
  readonly demand: () => readonly Demand[];
  readonly store: PoolStore;
  /** Sizes set by PUT, kept across restarts. */
  readonly sizes: PoolSizeStore;
  readonly events: EventStore;
  readonly gauges: PoolGauges;
  /** Where a pool's workers live and connect to. */
  readonly provider: (pool: PoolConf) => ProviderContext;
  readonly log: Logger;
  /** How often the pools are looked at; default 250 ms. */
  readonly tickMs?: number;
}

const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 60_000;

export class PoolManager {
  readonly #deps: PoolManagerDeps;
  readonly #pools = new Map<string, PoolState>();
  #timer: NodeJS.Timeout | null = null;
  #closing: Promise<void> | null = null;
  readonly #stops = new Set<Promise<void>>();

  constructor(deps: PoolManagerDeps) {
    this.#deps = deps;
    for (const conf of deps.pools) {
      this.#pools.set(conf.name, {
        conf, confSize: { minWorkers: conf.minWorkers, maxWorkers: conf.maxWorkers }, resizedAt: null,
        instances: new Map(), desired: conf.minWorkers, consecutiveFailures: 0, nextStartAtMs: 0, lastError: null,
      });
    }
    for (const saved of deps.sizes.all()) {
      const pool = this.#pools.get(saved.pool);
      if (pool && pool.confSize.minWorkers === saved.confMinWorkers && pool.confSize.maxWorkers === saved.confMaxWorkers) {
        pool.conf = Object.freeze({ ...pool.conf, minWorkers: saved.minWorkers, maxWorkers: saved.maxWorkers });
        pool.resizedAt = saved.setAt;
        deps.log.info({ pool: saved.pool, minWorkers: saved.minWorkers, maxWorkers: saved.maxWorkers }, 'pool size set by PUT kept');
      } else {
        // The pool is gone from the conf, or its sizes there were edited since the PUT: the conf wins.
        deps.sizes.remove(saved.pool);
        deps.log.info({ pool: saved.pool }, 'pool size set by PUT dropped: the conf changed since');
      }
    }
  }

  /** Finds the workers a previous master process started, then follows the desired sizes. */
  start(): void {
    const now = Date.now();
    for (const row of this.#deps.store.all()) {
      const pool = this.#pools.get(row.pool);
      if (!pool || pool.conf.provider !== row.provider) {
        // Its pool is gone from the conf (or changed provider): stop what it left behind.
        this.#deps.log.info({ pool: row.pool, worker: row.name }, 'stopping a worker of a pool no longer configured');
        const conf = { name: row.pool, provider: row.provider as PoolConf['provider'], startCommand: null, stopCommand: null } as PoolConf;
        const started: StartedWorker | null = row.pid === null ? null : { pid: row.pid, ended: null, group: null };
        this.#deps.registry.beingStopped.add(row.name);
        this.#track(stopPoolWorker(this.#deps.provider(conf), conf, row.name, started).then(() => {
          this.#deps.store.remove(row.name);
          this.#deps.registry.beingStopped.delete(row.name);
        }));
        continue;
      }
      const isAlive = row.pid !== null && isOurs(pool.conf, row.name, row.pid);
      if (row.isStopping) {
        // The master before decided to stop it and stopped first: the stop is finished, the worker never taken
        // back (it might be busy counting above max_workers, and have a busy worker stopped in its place).
        this.#deps.log.info({ pool: row.pool, worker: row.name }, 'finishing the stop of a pool worker begun before the restart');
        const started: StartedWorker | null = isAlive ? { pid: row.pid, ended: null, group: null } : null;
        this.#deps.registry.beingStopped.add(row.name);
        this.#track(stopPoolWorker(this.#deps.provider(pool.conf), pool.conf, row.name, started).then((problem) => {
          this.#deps.store.remove(row.name);
          this.#deps.registry.beingStopped.delete(row.name);
          this.#deps.events.append('POOL_WORKER_STOPPED', {
            pool: row.pool, worker: row.name, reason: 'restart', why: 'its stop was under way when the master stopped', ...(problem === null ? {} : { error: problem }),
          });
        }));
        continue;
      }
      if (pool.conf.provider === 'local' && !isAlive) {
        // It died while no master watched: its folder (a whole worker base directory) goes too, and the
        // event log says so, as for a worker replaced while the master ran.
        this.#track(stopPoolWorker(this.#deps.provider(pool.conf), pool.conf, row.name, null).then(() => this.#deps.store.remove(row.name)));
        this.#deps.events.append('POOL_WORKER_STOPPED', { pool: row.pool, worker: row.name, reason: 'down', why: 'gone when the master started' });
        continue;
      }
      // It has start_timeout_seconds to come back to this master, as a fresh start would.
      pool.instances.set(row.name, {
        name: row.name, state: 'starting', startedAtMs: now, workerId: null, lostSinceMs: null, idleSinceMs: null, drainingSinceMs: null,
        started: { pid: isAlive ? row.pid : null, ended: null, group: null },
      });
      this.#deps.log.info({ pool: row.pool, worker: row.name, pid: row.pid }, 'found a pool worker started before the restart');
    }
    this.#timer = setInterval(() => this.#tick(), this.#deps.tickMs ?? 250);
    this.#timer.unref();
    this.#tick();
  }

  /** Stops following the pools; the workers go on (a restarted master finds them again). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#timer) clearInterval(this.#timer);
      await Promise.allSettled([...this.#stops]);
    })();
    return this.#closing;
  }

  names(): string[] {
    return [...this.#pools.keys()];
  }

  view(name: string): PoolView | null {
    const pool = this.#pools.get(name);
    return pool ? this.#view(pool) : null;
  }

  desired(name: string): number | null {
    return this.#pools.get(name)?.desired ?? null;
  }

  /**
   * PUT /v2/pools/:name: a new size, live and saved (the conf file stays as written); `reset` goes back to
   * the conf's sizes. A key left out keeps the size in use.
   */
  resize(name: string, size: { min_workers?: number | undefined; max_workers?: number | undefined; reset?: true | undefined }): PoolView | null {
    const pool = this.#pools.get(name);
    if (!pool) return null;
    const isReset = size.reset === true;
    const minWorkers = isReset ? pool.confSize.minWorkers : size.min_workers ?? pool.conf.minWorkers;
    const maxWorkers = isReset ? pool.confSize.maxWorkers : size.max_workers ?? pool.conf.maxWorkers;
    if (maxWorkers < 1) throw badRequest('"max_workers" must be at least 1.');
    if (minWorkers > maxWorkers) throw conflict(`"min_workers" (${minWorkers}) must not be above "max_workers" (${maxWorkers}).`);
    const now = Date.now() / 1000;
    if (isReset) {
      this.#deps.sizes.remove(name);
    } else {
      this.#deps.sizes.set({
        pool: name, minWorkers, maxWorkers, confMinWorkers: pool.confSize.minWorkers, confMaxWorkers: pool.confSize.maxWorkers, setAt: now,
      });
    }
    pool.conf = Object.freeze({ ...pool.conf, minWorkers, maxWorkers });
    pool.resizedAt = isReset ? null : now;
    this.#deps.log.info({ pool: name, minWorkers, maxWorkers, reset: isReset }, 'pool resized');
    this.#tick();
    return this.#view(pool);
  }

  #tick(): void {
    if (this.#closing) return;
    try {
      this.#follow(Date.now());
    } catch (error) {
      this.#deps.log.error({ err: error }, 'following the pools failed');
    }
  }

  #follow(now: number): void {
    const byName = new Map<string, WorkerEntry>();
    const others: OtherWorker[] = [];
    const poolOf = new Map<string, string>();
    for (const pool of this.#pools.values()) for (const name of pool.instances.keys()) poolOf.set(name, pool.conf.name);
    for (const worker of this.#deps.registry.all()) {
      if (!worker.isAlive || !worker.isConnected) continue;
      byName.set(worker.name, worker);
      if (!worker.isDraining && !poolOf.has(worker.name) && (worker.pool === null || !this.#pools.has(worker.pool))) {
        others.push({ executors: worker.numExecutors, labels: worker.labels });
      }
    }
    const sizes = desiredSizes([...this.#pools.values()].map((pool) => pool.conf), this.#deps.demand(), others);
    for (const pool of this.#pools.values()) {
      pool.desired = sizes.get(pool.conf.name) ?? pool.conf.minWorkers;
      this.#followPool(pool, byName, now);
      this.#setGauges(pool);
    }
  }

  #followPool(pool: PoolState, byName: Map<string, WorkerEntry>, now: number): void {
    const { conf } = pool;
    for (const instance of pool.instances.values()) {
      const worker = byName.get(instance.name);
      const isConnected = worker !== undefined && !worker.isDraining;
      switch (instance.state) {
        case 'starting':
          if (isConnected) {
            instance.state = 'running';
            instance.workerId = worker.id;
            instance.idleSinceMs = now;
            pool.consecutiveFailures = 0;
          } else if (instance.started?.ended && instance.started.ended.code !== 0 && conf.provider === 'command') {
            this.#failStart(pool, instance, `start command exited with ${instance.started.ended.code}: ${instance.started.ended.tail.trim()}`, now);
          } else if (instance.started?.ended && conf.provider === 'local') {
            this.#failStart(pool, instance, `worker exited with ${instance.started.ended.code} before connecting: ${instance.started.ended.tail.trim()}`, now);
          } else if (now - instance.startedAtMs >= conf.startTimeoutMs) {
            this.#failStart(pool, instance, `no connection within start_timeout_seconds (${conf.startTimeoutMs / 1000} s)`, now);
          }
          break;
        case 'running':
          if (!isConnected) {
            instance.state = 'lost';
            instance.lostSinceMs = now;
            this.#deps.log.warn({ pool: conf.name, worker: instance.name }, 'pool worker lost');
          } else if (worker.executorsInUse > 0 || worker.leases.size > 0) {
            instance.idleSinceMs = null;
          } else {
            instance.idleSinceMs ??= now;
          }
          break;
        case 'lost':
          if (isConnected) {
            instance.state = 'running';
            instance.workerId = worker.id;
            instance.lostSinceMs = null;
            instance.idleSinceMs = now;
          } else if (now - instance.lostSinceMs! >= conf.replaceDownAfterMs) {
            this.#stop(pool, instance, 'down', `lost for replace_down_after_seconds (${conf.replaceDownAfterMs / 1000} s)`);
          }
          break;
        case 'draining': {
          // A drained worker finishes, tears down and exits; a stop after that only cleans up.
          const hasExited = conf.provider === 'local' ? instance.started?.pid == null || !isOurs(conf, instance.name, instance.started.pid) : worker === undefined;
          if (hasExited || now - instance.drainingSinceMs! >= conf.startTimeoutMs) this.#stop(pool, instance, 'idle', 'idle above the desired size');
          break;
        }
        case 'stopping':
          // Being stopped, yet connected: a worker replaced as down that came back (a frozen process thawed,
          // a network healed). It takes no new work and does not count; its stop goes on.
          if (worker !== undefined && !worker.isDraining) drainWorker(worker);
          break;
        default: {
          const never: never = instance.state;
          throw new Error(`unknown instance state ${String(never)}`);
        }
      }
    }

    // Hand-started workers that name this pool count towards it; the pool never stops them.
    let handStarted = 0;
    for (const worker of byName.values()) if (worker.pool === conf.name && !worker.isDraining && !pool.instances.has(worker.name)) handStarted++;
    const active = () => handStarted + [...pool.instances.values()].filter((instance) => ['starting', 'running', 'lost'].includes(instance.state)).length;

    if (active() > pool.desired) this.#shrink(pool, active() - pool.desired, byName, now);
    const missing = pool.desired - active();
    if (missing > 0 && now >= pool.nextStartAtMs) for (let i = 0; i < missing; i++) this.#start(pool, now);
  }

  /** Idle workers go first, longest idle first; above max_workers at once, else after reap_idle_after_seconds. */
  #shrink(pool: PoolState, surplus: number, byName: Map<string, WorkerEntry>, now: number): void {
    const { conf } = pool;
    // Above max_workers (a resize made the pool smaller) there is no idle window to wait out.
    let aboveMax = Math.max(0, [...pool.instances.values()].filter((i) => ['starting', 'running', 'lost'].includes(i.state)).length - conf.maxWorkers);
    // A resize below what runs: workers still starting are not busy, so they go first.
    for (const instance of [...pool.instances.values()].filter((i) => i.state === 'starting')) {
      if (aboveMax <= 0 || surplus <= 0) break;
      this.#stop(pool, instance, 'resized', 'the pool was made smaller');
      aboveMax--;
      surplus--;
    }
    const idle = [...pool.instances.values()]
      .filter((instance) => instance.state === 'running' && instance.idleSinceMs !== null)
      .sort((a, b) => a.idleSinceMs! - b.idleSinceMs!);
    for (const instance of idle) {
      if (surplus <= 0) break;
      const isDue = aboveMax > 0 || now - instance.idleSinceMs! >= conf.reapIdleAfterMs;
      const worker = byName.get(instance.name);
      if (!isDue || !worker || worker.executorsInUse > 0 || worker.leases.size > 0) continue;
      instance.state = 'draining';
      instance.drainingSinceMs = now;
      drainWorker(worker);
      this.#deps.log.info({ pool: conf.name, worker: instance.name }, 'draining an idle pool worker');
      aboveMax--;
      surplus--;
    }
  }

  #start(pool: PoolState, now: number): void {
    const name = `${pool.conf.name}-${randomBytes(4).toString('hex')}`;
    const started = startPoolWorker(this.#deps.provider(pool.conf), pool.conf, name);
    const instance: Instance = { name, state: 'starting', started, startedAtMs: now, workerId: null, lostSinceMs: null, idleSinceMs: null, drainingSinceMs: null };
    pool.instances.set(name, instance);
    this.#deps.store.insert({ name, pool: pool.conf.name, provider: pool.conf.provider, pid: started.pid, startedAt: now / 1000 });
    this.#deps.events.append('POOL_WORKER_STARTED', { pool: pool.conf.name, worker: name, pid: started.pid });
    this.#deps.log.info({ pool: pool.conf.name, worker: name, pid: started.pid }, 'starting a pool worker');
  }

  #failStart(pool: PoolState, instance: Instance, message: string, now: number): void {
    pool.consecutiveFailures++;
    const backoffMs = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(16, pool.consecutiveFailures - 1));
    pool.nextStartAtMs = now + backoffMs;
    pool.lastError = { message: `${instance.name}: ${message}`.slice(0, 4096), at: now / 1000 };
    this.#deps.events.append('POOL_WORKER_START_FAILED', { pool: pool.conf.name, worker: instance.name, error: pool.lastError.message, retry_in_seconds: backoffMs / 1000 });
    this.#deps.log.warn({ pool: pool.conf.name, worker: instance.name, error: message, backoffMs }, 'a pool worker failed to start');
    this.#stop(pool, instance, 'failed_start', message);
  }

  #stop(pool: PoolState, instance: Instance, reason: string, why: string): void {
    instance.state = 'stopping';
    this.#deps.store.markStopping(instance.name);
    this.#deps.registry.beingStopped.add(instance.name);
    this.#track((async () => {
      let problem: string | null = null;
      try {
        problem = await stopPoolWorker(this.#deps.provider(pool.conf), pool.conf, instance.name, instance.started);
      } catch (error) {
        problem = errorMessage(error);
      }
      if (problem !== null) {
        pool.lastError = { message: `${instance.name}: ${problem}`.slice(0, 4096), at: Date.now() / 1000 };
        this.#deps.log.warn({ pool: pool.conf.name, worker: instance.name, error: problem }, 'stopping a pool worker went wrong');
      }
      pool.instances.delete(instance.name);
      this.#deps.registry.beingStopped.delete(instance.name);
      // Also while closing (close() waits for this before the store closes): the worker is stopped, and a
      // row left behind made the next master take a stopped worker back (a command pool ran its stop twice).
      this.#deps.store.remove(instance.name);
      this.#deps.events.append('POOL_WORKER_STOPPED', { pool: pool.conf.name, worker: instance.name, reason, why, ...(problem === null ? {} : { error: problem }) });
    })());
  }

  #track(promise: Promise<void>): void {
    const tracked = promise.catch((error: unknown) => this.#deps.log.error({ err: error }, 'a pool worker stop failed')).finally(() => this.#stops.delete(tracked));
    this.#stops.add(tracked);
  }

  #view(pool: PoolState): PoolView {
    const { conf } = pool;
    let connected = 0;
    let busy = 0;
    let total = 0;
    let inUse = 0;
    for (const worker of this.#members(pool)) {
      connected++;
      total += worker.numExecutors;
      inUse += worker.executorsInUse;
      if (worker.executorsInUse > 0) busy++;
    }
    const instances = [...pool.instances.values()];
    const isLocal = conf.provider === 'local';
    return {
      name: conf.name,
      provider: conf.provider,
      labels: [...conf.labels],
      min_workers: conf.minWorkers,
      max_workers: conf.maxWorkers,
      desired_workers: pool.desired,
      connected_workers: connected,
      busy_workers: busy,
      idle_workers: connected - busy,
      starting_workers: instances.filter((instance) => instance.state === 'starting').length,
      executors: { total, in_use: inUse },
      cpu: isLocal ? { cores: os.cpus().length, load1: os.loadavg()[0]! } : null,
      memory: isLocal ? { total_bytes: os.totalmem(), available_bytes: os.freemem() } : null,
      consecutive_failures: pool.consecutiveFailures,
      next_start_at: pool.nextStartAtMs > Date.now() ? pool.nextStartAtMs / 1000 : null,
      last_error: pool.lastError,
      resized_at: pool.resizedAt,
      workers: instances.map((instance) => ({
        name: instance.name, state: instance.state, worker_id: instance.workerId, pid: instance.started?.pid ?? null, started_at: instance.startedAtMs / 1000,
      })),
    };
  }

  /** Connected, not draining workers of the pool: those it started and those started by hand with --pool. */
  *#members(pool: PoolState): Generator<WorkerEntry> {
    for (const worker of this.#deps.registry.all()) {
      if (!worker.isAlive || !worker.isConnected || worker.isDraining) continue;
      if (pool.instances.get(worker.name)?.state === 'stopping') continue;
      if (pool.instances.has(worker.name) || worker.pool === pool.conf.name) yield worker;
    }
  }

  #setGauges(pool: PoolState): void {
    const view = this.#view(pool);
    const set = (state: string, value: number) => this.#deps.gauges.poolWorkers.set({ pool: view.name, state }, value);
    set('desired', view.desired_workers);
    set('connected', view.connected_workers);
    set('busy', view.busy_workers);
    set('idle', view.idle_workers);
  }
}
