import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { IngestQueue } from '../../master/workers/ingest-queue.ts';

/** Stands in for a ws socket: the queue only pauses and resumes it. */
function fakeSocket(): WebSocket & { pauses: number; resumes: number } {
  const socket = { pauses: 0, resumes: 0, pause() { socket.pauses += 1; }, resume() { socket.resumes += 1; } };
  return socket as unknown as WebSocket & { pauses: number; resumes: number };
}

function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* a handler that takes ms of CPU */ }
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
const settled = async (queue: IngestQueue) => {
  while (queue.length > 0) await nextTurn();
};

/**
 * 40 messages, each 1 ms of work that `handle` runs (at once, or later), in a queue of 2 ms steps, and a timer set
 * beside them (what an HTTP request is to the master): how many messages ran, and how many before the timer.
 */
async function timerAmongMessages(handle: (work: () => void) => void): Promise<{ messages: number; timerAt: number }> {
  const queue = new IngestQueue(() => undefined, 2);
  const socket = fakeSocket();
  const order: string[] = [];
  for (let i = 0; i < 40; i += 1) {
    queue.push(socket, () => handle(() => {
      busyFor(1);
      order.push('message');
    }));
  }
  setTimeout(() => order.push('timer'), 0);
  await settled(queue);
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { messages: order.filter((entry) => entry === 'message').length, timerAt: order.indexOf('timer') };
}

describe('IngestQueue', () => {
  it('handles every message once, in the order they came, across sockets', async () => {
    const queue = new IngestQueue(() => undefined);
    const a = fakeSocket();
    const b = fakeSocket();
    const seen: string[] = [];
    for (let i = 0; i < 50; i += 1) {
      queue.push(a, () => seen.push(`a${i}`));
      queue.push(b, () => seen.push(`b${i}`));
    }
    expect(seen).toEqual([]); // nothing runs in the turn that read it
    await settled(queue);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => [`a${i}`, `b${i}`]).flat());
  });

  it('lets the rest of the loop run between steps while a long queue drains', async () => {
    const { messages, timerAt } = await timerAmongMessages((work) => work());
    expect(messages).toBe(40);
    expect(timerAt).toBeGreaterThan(0);
    expect(timerAt).toBeLessThan(40); // before the queue had drained: it did not wait for all 40 ms of messages
  });

  it('counts in its step the work a message continues after an await, so that work too leaves room for the loop', async () => {
    // The master's handlers look like this: quick to return, their work going on in a promise's continuation.
    const { messages, timerAt } = await timerAmongMessages((work) => void Promise.resolve().then(work));
    expect(messages).toBe(40);
    expect(timerAt).toBeGreaterThan(0);
    expect(timerAt).toBeLessThan(40); // counted only up to the handlers' return, all 40 ms ran before the timer
  });

  it('takes a message added by a handler in a later step, and a step with nothing left does nothing', async () => {
    const errors: unknown[] = [];
    const queue = new IngestQueue((error) => errors.push(error));
    const socket = fakeSocket();
    const seen: string[] = [];
    queue.push(socket, () => {
      seen.push('first');
      queue.push(socket, () => seen.push('added by the first'));
    });
    queue.push(socket, () => seen.push('second'));
    await settled(queue);
    await nextTurn();
    await nextTurn();
    expect(seen).toEqual(['first', 'second', 'added by the first']);
    expect(errors).toEqual([]);
  });

  it('pauses the sockets that add messages past the high mark and resumes them below the low mark', async () => {
    const queue = new IngestQueue(() => undefined, 2, 10, 4);
    const flooding = fakeSocket();
    const quiet = fakeSocket();
    let handled = 0;
    queue.push(quiet, () => { handled += 1; });
    for (let i = 0; i < 30; i += 1) queue.push(flooding, () => { handled += 1; });
    expect(flooding.pauses).toBe(1); // once, however many it adds while paused
    expect(quiet.pauses).toBe(0);
    expect(queue.pausedSockets).toBe(1);
    await settled(queue);
    expect(handled).toBe(31);
    expect(flooding.resumes).toBe(1);
    expect(queue.pausedSockets).toBe(0);
  });

  it('goes on after a handler throws, and reports the error', async () => {
    const errors: unknown[] = [];
    const queue = new IngestQueue((error) => errors.push(error));
    const socket = fakeSocket();
    const seen: number[] = [];
    queue.push(socket, () => seen.push(1));
    queue.push(socket, () => { throw new Error('bad frame'); });
    queue.push(socket, () => seen.push(3));
    await settled(queue);
    expect(seen).toEqual([1, 3]);
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe('bad frame');
  });

  it('drops what is queued when closed, and takes nothing after', async () => {
    const queue = new IngestQueue(() => undefined);
    const socket = fakeSocket();
    let handled = 0;
    queue.push(socket, () => { handled += 1; });
    queue.close();
    queue.push(socket, () => { handled += 1; });
    await nextTurn();
    await nextTurn();
    expect(handled).toBe(0);
    expect(queue.length).toBe(0);
  });
});
