import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUILD_STATUSES, BUILD_STATUS_MOVES, transitionBuildStatus } from '../../master/model/build-status.ts';
import { RUN_PHASES, RUN_PHASE_MOVES, transitionRunPhase } from '../../master/model/run-phase.ts';
import { WORKER_BUILD_MOVES, WORKER_BUILD_STATES, transitionWorkerBuild } from '../../master/model/worker-build-state.ts';
import { IllegalTransitionError } from '../../master/model/illegal-transition.ts';
import { openStore, type Store } from '../../master/store/index.ts';

/** Every (from, to) pair of a machine, split into the moves its table allows and the rest. */
function pairs<S extends string>(states: readonly S[], table: Readonly<Record<S, readonly S[]>>) {
  const legal: [S, S][] = [];
  const illegal: [S, S][] = [];
  for (const from of states) for (const to of states) (table[from].includes(to) ? legal : illegal).push([from, to]);
  return { legal, illegal };
}

describe.each([
  ['build status', BUILD_STATUSES, BUILD_STATUS_MOVES, (from: string, to: string) => transitionBuildStatus(7, from as never, to as never)],
  ['run phase', RUN_PHASES, RUN_PHASE_MOVES, (from: string, to: string) => transitionRunPhase(7, from as never, to as never)],
  ['worker build state', WORKER_BUILD_STATES, WORKER_BUILD_MOVES, (from: string, to: string) => transitionWorkerBuild('worker 1, build 7', from as never, to as never)],
] as const)('%s machine', (_name, states, table, transition) => {
  const { legal, illegal } = pairs<string>(states, table as Readonly<Record<string, readonly string[]>>);

  it.each(legal)('allows %s -> %s', (from, to) => {
    expect(transition(from, to)).toBe(to);
  });

  it.each(illegal)('refuses %s -> %s', (from, to) => {
    expect(() => transition(from, to)).toThrow(IllegalTransitionError);
    expect(() => transition(from, to)).toThrow(`cannot move from ${from} to ${to}`);
  });
});

describe('build status in SQL', () => {
  let dir: string;
  let store: Store;

  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function newBuild(): number {
    dir = mkdtempSync(join(tmpdir(), 'cr-status-'));
    store = openStore(join(dir, 'master.db'));
    return store.builds.insert({ requestParams: {}, request: {}, projectType: 'directory', jobName: null, priority: 0 });
  }

  it('records a legal move', () => {
    const id = newBuild();
    store.builds.setStatus(id, 'PREPARING');
    store.builds.setStatus(id, 'BUILDING');
    store.builds.setStatus(id, 'FAILURE');
    expect(store.builds.get(id)?.status).toBe('FAILURE');
  });

  it('refuses a move the table does not allow, whatever the caller believes', () => {
    const id = newBuild();
    expect(() => store.builds.setStatus(id, 'BUILDING')).toThrow('build status cannot move from QUEUED to BUILDING');
    store.builds.setStatus(id, 'CANCELED');
    // A late result must not turn a canceled build into a success.
    expect(() => store.builds.setStatus(id, 'SUCCESS', null)).toThrow(IllegalTransitionError);
    expect(() => store.builds.setStatus(id, 'ERROR', 'late')).toThrow('from CANCELED to ERROR');
    const record = store.builds.get(id)!;
    expect(record.status).toBe('CANCELED');
    expect(record.errorMessage).toBeNull();
  });
});
