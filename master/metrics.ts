import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The master's Prometheus metrics (SPEC §9), in a registry of their own so tests can run several masters. */
export function createMetrics() {
  const registry = new Registry();
  const buildsTotal = new Counter({ name: 'clusterrunner_builds_total', help: 'Builds that reached a terminal status.', labelNames: ['status'], registers: [registry] });
  const buildDuration = new Histogram({
    name: 'clusterrunner_build_duration_seconds',
    help: 'From queued to terminal.',
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
    registers: [registry],
  });
  const atomsTotal = new Counter({ name: 'clusterrunner_atoms_total', help: 'Atom results accepted.', labelNames: ['result'], registers: [registry] });
  const queueDepth = new Gauge({ name: 'clusterrunner_queue_depth', help: 'Builds not yet terminal.', registers: [registry] });
  const workers = new Gauge({ name: 'clusterrunner_workers', help: 'Workers by state.', labelNames: ['state'], registers: [registry] });
  const executors = new Gauge({ name: 'clusterrunner_executors', help: 'Executors by state.', labelNames: ['state'], registers: [registry] });
  const httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP requests by method, route and status.',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  // Set by the pruner (master/maintenance) after each pass.
  const resultsBytes = new Gauge({ name: 'clusterrunner_results_bytes', help: 'Disk used by build results (console output, artifacts, archives).', registers: [registry] });
  const oldestBuildTimestampSeconds = new Gauge({
    name: 'clusterrunner_oldest_build_timestamp_seconds', help: 'When the oldest build kept was queued (Unix time; 0 when none is kept).', registers: [registry],
  });
  // Set by master/pools each time it looks at the pools (SPEC §13): desired, connected, busy and idle workers.
  const poolWorkers = new Gauge({ name: 'clusterrunner_pool_workers', help: 'Workers of each pool by state.', labelNames: ['pool', 'state'], registers: [registry] });
  const workersSuspectTotal = new Counter({ name: 'clusterrunner_workers_suspect_total', help: 'Workers made suspect because their failed atoms passed on other workers (SPEC §15).', registers: [registry] });
  return { registry, poolWorkers, buildsTotal, buildDuration, atomsTotal, workersSuspectTotal, queueDepth, workers, executors, httpDuration, resultsBytes, oldestBuildTimestampSeconds };
}

export type Metrics = ReturnType<typeof createMetrics>;
