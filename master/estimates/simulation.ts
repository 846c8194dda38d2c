import { groupAtoms } from '../builds/grouping.ts';
import { planDispatch, type RunSnapshot, type WorkerSnapshot } from '../scheduling/dispatcher.ts';
import type { WorkItem } from '../model/work-item.ts';
import type { WorkerBuildState } from '../model/worker-build-state.ts';
import { DEFAULT_OVERHEADS, type Overheads } from './overheads.ts';
import { NumberHeap } from '../model/number-heap.ts';

/**
 * Predictions made by running the scheduler's own code on the timing history: grouping.ts groups the atoms
 * for the executors given, exactly as a new build would be planned, and the dispatcher's planDispatch hands
 * the subjobs to the simulated executors, pass by pass, as the dispatch loop does. So a prediction follows
 * whatever the scheduler does, also when its grouping changes.
 *
 * Around the dispatch come the costs the job's last builds showed (overheads.ts), where the scheduler meets
 * them: preparing before anything, each worker's setup before its first subjob, per subjob and per atom on
 * the executor that runs it, and the archive after the last result.
 */

export interface SimulatedSubjob {
  readonly id: number;
  /** Seconds its atoms take, one after another. */
  readonly seconds: number;
  /** Atoms in it: each costs DispatchCosts.atomS on top. */
  readonly numAtoms: number;
}

/** What dispatching costs beyond the atoms' seconds (Overheads, learned per job). */
export type DispatchCosts = Pick<Overheads, 'setupS' | 'subjobS' | 'atomS' | 'lastSubjobS'>;

export interface ExecutorLayout {
  readonly executors: number;
  readonly maxExecutors: number | null;
  readonly maxExecutorsPerWorker: number | null;
}

/**
 * Wall seconds from the first worker's setup start to the last result for these subjobs, in this order, on
 * `executors` executors (spread over workers of maxExecutorsPerWorker each when the job sets it, else one
 * worker). Every worker is ready `setupS` in; a subjob holds its executor for its seconds, atomS per atom and
 * subjobS (the round trip to the next lease there); its result is in lastSubjobS after its atoms.
 */
export function simulateDispatch(subjobs: readonly SimulatedSubjob[], layout: ExecutorLayout, costs: DispatchCosts = DEFAULT_OVERHEADS): number {
  if (subjobs.length === 0) return 0;
  const perWorker = layout.maxExecutorsPerWorker ?? layout.executors;
  if (perWorker >= layout.executors) return simulateOneWorker(subjobs, Math.min(layout.executors, layout.maxExecutors ?? layout.executors), costs);
  return simulateByPasses(subjobs, layout, costs);
}

/** simulateDispatch through the dispatcher's own planDispatch, pass by pass (exported for the test that compares). */
export function simulateByPasses(subjobs: readonly SimulatedSubjob[], layout: ExecutorLayout, costs: DispatchCosts = DEFAULT_OVERHEADS): number {
  if (subjobs.length === 0) return 0;
  const perWorker = layout.maxExecutorsPerWorker ?? layout.executors;
  const workers: { id: number; free: number }[] = [];
  for (let left = layout.executors, id = 1; left > 0; left -= perWorker, id++) workers.push({ id, free: Math.min(perWorker, left) });
  const byId = new Map(subjobs.map((subjob) => [subjob.id, subjob]));
  const queue: WorkItem[] = subjobs.map((subjob) => ({ subjobId: subjob.id, atomIds: [], avoidWorkerId: null }));
  let head = 0;
  let inUse = 0;
  const perWorkerInUse = new Map<number, number>();
  /** Running subjobs by end time: [end, workerId]. A binary heap would do for huge builds; a sorted array is plenty here. */
  const running: [number, number][] = [];
  const ready = new Map<number, WorkerBuildState>([[0, 'ready']]);
  let now = costs.setupS;
  let end = now;
  for (;;) {
    const run: RunSnapshot = {
      id: 0, maxExecutors: layout.maxExecutors, maxExecutorsPerWorker: layout.maxExecutorsPerWorker, executorsInUse: inUse,
      executorsPerWorker: perWorkerInUse, front: [], queue: queue.slice(head, head + layout.executors), pendingCount: queue.length - head,
    };
    const snapshot: WorkerSnapshot[] = workers.map((worker) => ({
      id: worker.id, isUsable: true, isConnected: true, freeExecutors: worker.free, builds: ready,
    }));
    for (const step of planDispatch({ workers: snapshot, runs: [run] })) {
      if (step.kind !== 'run') continue;
      const subjob = byId.get(step.item.subjobId)!;
      head++;
      inUse++;
      perWorkerInUse.set(step.workerId, (perWorkerInUse.get(step.workerId) ?? 0) + 1);
      workers.find((worker) => worker.id === step.workerId)!.free--;
      const own = now + subjob.seconds + subjob.numAtoms * costs.atomS;
      const finish = own + costs.subjobS;
      end = Math.max(end, own + costs.lastSubjobS);
      const at = running.findIndex(([time]) => time > finish);
      running.splice(at < 0 ? running.length : at, 0, [finish, step.workerId]);
    }
    const next = running.shift();
    if (next === undefined) break;
    [now] = next;
    inUse--;
    perWorkerInUse.set(next[1], perWorkerInUse.get(next[1])! - 1);
    workers.find((worker) => worker.id === next[1])!.free++;
  }
  return end;
}

/**
 * simulateDispatch for one simulated worker, which is what a running build's ETA asks for every few seconds:
 * there the dispatcher can only hand the queue's head to a free executor, up to `slots` at once, so the passes
 * reduce to list scheduling over a heap of finish times. The general loop builds a snapshot and plans a pass
 * for each subjob: 600 subjobs on 80 executors took 5-40 ms of the loop that answers status reads (issue 18).
 * Equal to the general loop (simulation.test.ts checks both on random builds).
 */
function simulateOneWorker(subjobs: readonly SimulatedSubjob[], slots: number, costs: DispatchCosts): number {
  let end = costs.setupS;
  if (slots <= 0) return end;
  // Executors' next free times.
  const free = new NumberHeap();
  for (let index = 0; index < subjobs.length; index++) {
    const subjob = subjobs[index]!;
    const now = index < slots ? costs.setupS : free.pop()!;
    const own = now + subjob.seconds + subjob.numAtoms * costs.atomS;
    end = Math.max(end, own + costs.lastSubjobS);
    free.push(own + costs.subjobS);
  }
  return end;
}

/** A prediction and where its seconds go. */
export interface Prediction {
  readonly seconds: number;
  readonly prepareS: number;
  /** The first worker's setup start to the last result: setup, then the subjobs on the executors. */
  readonly dispatchS: number;
  readonly archiveS: number;
}

/**
 * What a new build of these atoms would take on `executors` executors, from its request to its end: grouped
 * by grouping.ts with this history (as the preparer does, planning for the same executors), prepared,
 * dispatched, archived. Null when no atom has history: the scheduler then plans one atom per subjob with
 * nothing to say how long they take.
 */
export function predictBuild(atoms: readonly { readonly variable: string; readonly value: string }[],
  history: ReadonlyMap<string, number>, layout: ExecutorLayout, overheads: Overheads = DEFAULT_OVERHEADS): Prediction | null {
  const executors = Math.max(1, Math.min(layout.executors, layout.maxExecutors ?? layout.executors));
  const subjobs = groupAtoms(atoms, history, { executors });
  if (subjobs.some((subjob) => subjob.atoms.some((atom) => atom.expectedTime === null))) return null;
  // Grouped on the history as the scheduler groups; run as the job's atoms ran against it lately.
  const dispatchS = simulateDispatch(subjobs.map((subjob) => ({
    id: subjob.id,
    seconds: subjob.atoms.reduce((sum, atom) => sum + atom.expectedTime!, 0) * overheads.atomTimeRatio,
    numAtoms: subjob.atoms.length,
  })), { ...layout, executors }, overheads);
  return { seconds: overheads.prepareS + dispatchS + overheads.archiveS, prepareS: overheads.prepareS, dispatchS, archiveS: overheads.archiveS };
}
