import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

interface SseEvent {
  id: number | null;
  event: string;
  data: any;
}

/** A real EventSource-like reader over fetch: collects events until stopped. */
function openStream(url: string, headers: Record<string, string> = {}) {
  const events: SseEvent[] = [];
  const controller = new AbortController();
  const done = (async () => {
    const response = await fetch(url, { headers, signal: controller.signal });
    if (response.status !== 200) throw new Error(`stream answered ${response.status}: ${await response.text()}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = Object.fromEntries(block.split('\n').filter((l) => !l.startsWith(':') && l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trimStart()]));
        if (fields['event'] === undefined) continue;
        events.push({ id: fields['id'] === undefined ? null : Number(fields['id']), event: fields['event'], data: JSON.parse(fields['data'] ?? 'null') });
      }
    }
  })().catch((error: unknown) => {
    if (!controller.signal.aborted) throw error;
  });
  return { events, close: () => controller.abort(), done };
}

const logIds = (events: SseEvent[]) => events.filter((e) => e.id !== null && e.event !== 'BUILD_STATUS').map((e) => e.id!);

describe('GET /v2/events', () => {
  it('streams a build: status changes, its events and live console lines, filtered to the build', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const first = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] } });
    await waitForBuild(master, first);

    const id = await postBuild(master, {
      type: 'directory', project_directory: tempDir(),
      config: { commands: ['for i in 1 2 3; do echo "line $i of $X"; sleep 0.3; done'], atomizers: [{ X: 'seq 1 2' }] },
    });
    const stream = openStream(`${master.url}/v2/events?build_id=${id}&console=true&since_id=0`);
    const statuses = openStream(`${master.url}/v2/events?tags=build_status,BUILD_FINISHED&since_id=0`);
    await waitForBuild(master, id);
    await expect.poll(() => stream.events.filter((e) => e.event === 'BUILD_STATUS').map((e) => e.data.status), { timeout: 20_000 })
      .toEqual(['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS']);
    expect(stream.events.every((e) => e.event === 'STREAM_CLOSED' || e.data.build_id === id)).toBe(true);
    const consoleText = stream.events.filter((e) => e.event === 'CONSOLE').map((e) => e.data.data).join('');
    expect(consoleText).toContain('line 3 of 1');
    expect(consoleText).toContain('line 3 of 2');
    stream.close();
    // Both builds, from the start of the log, and nothing but the tags asked for.
    await expect.poll(() => statuses.events.filter((e) => e.event === 'BUILD_FINISHED').length, { timeout: 10_000 }).toBe(2);
    expect(new Set(statuses.events.map((e) => e.event))).toEqual(new Set(['BUILD_STATUS', 'BUILD_FINISHED']));
    expect(statuses.events.filter((e) => e.event === 'BUILD_STATUS').map((e) => `${e.data.build_id}:${e.data.status}`))
      .toEqual([`${first}:QUEUED`, `${first}:PREPARING`, `${first}:BUILDING`, `${first}:SUCCESS`, `${id}:QUEUED`, `${id}:PREPARING`, `${id}:BUILDING`, `${id}:SUCCESS`]);
    statuses.close();
  });

  it('resumes with Last-Event-ID after a dropped connection and after a master restart: every event exactly once', async () => {
    const base = tempDir('cr-master-');
    let master = await startTestMaster({ base });
    const secret = master.secret;
    const worker = await startTestWorker(master, { executors: 2 });
    const one = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo $X'], atomizers: [{ X: 'seq 1 6' }] } });

    const first = openStream(`${master.url}/v2/events?since_id=0`);
    await expect.poll(() => first.events.length, { timeout: 20_000 }).toBeGreaterThan(3);
    first.close();
    await waitForBuild(master, one);
    const seen = logIds(first.events);
    const lastSeen = seen[seen.length - 1]!;

    // The rest of the first build's events arrive on the resumed stream, and nothing twice.
    const second = openStream(`${master.url}/v2/events`, { 'Last-Event-ID': String(lastSeen) });
    const all = (await api(master, 'GET', '/v1/eventlog')).body.events.map((e: any) => e.__id__ as number);
    await expect.poll(() => logIds(second.events).length, { timeout: 20_000 }).toBe(all.filter((i: number) => i > lastSeen).length);
    second.close();
    const afterSecond = [...seen, ...logIds(second.events)];

    await worker.stop();
    await master.close();
    master = await startTestMaster({ base, secret });
    await startTestWorker(master, { executors: 1 });
    const two = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['echo $X'], atomizers: [{ X: 'seq 1 2' }] } });
    await waitForBuild(master, two);
    const third = openStream(`${master.url}/v2/events`, { 'Last-Event-ID': String(afterSecond[afterSecond.length - 1]) });
    const everything = (await api(master, 'GET', '/v1/eventlog')).body.events.map((e: any) => e.__id__ as number);
    await expect.poll(() => [...afterSecond, ...logIds(third.events)], { timeout: 20_000 }).toEqual(everything);
    third.close();
  });

  it('replays one build from the start of a long log: its events only, in order, over several pages, then live', async () => {
    const master = await startTestMaster();
    await startTestWorker(master, { executors: 1 });
    const other = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['true'], atomizers: [{ X: 'echo 1' }] } });
    await waitForBuild(master, other);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['sleep 2'], atomizers: [{ X: 'echo 1' }] } });
    // Another build's events around this one's, and more of this one's than a replay reads per turn (REPLAY_PAGE_EVENTS).
    const { events } = master.server.store;
    for (let i = 0; i < 2500; i++) {
      events.append('WORKER_HEALTH_CHANGED', { build_id: other, n: i });
      if (i % 2 === 0) events.append('WORKER_HEALTH_CHANGED', { build_id: id, n: i });
    }
    const whole = openStream(`${master.url}/v2/events?build_id=${id}&since_id=0`);
    const statuses = openStream(`${master.url}/v2/events?build_id=${id}&tags=BUILD_STATUS&since_id=0`);
    await waitForBuild(master, id);
    const ofBuild = (await api(master, 'GET', '/v1/eventlog')).body.events.filter((e: any) => e.build_id === id).map((e: any) => e.__id__ as number);
    expect(ofBuild.length).toBeGreaterThan(1250);
    await expect.poll(() => logIds(whole.events), { timeout: 20_000 }).toEqual(ofBuild);
    expect(whole.events.filter((e) => e.event === 'BUILD_STATUS').map((e) => e.data.status)).toEqual(['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS']);
    await expect.poll(() => statuses.events.map((e) => `${e.event}:${e.data.build_id}:${e.data.status}`), { timeout: 20_000 })
      .toEqual(['QUEUED', 'PREPARING', 'BUILDING', 'SUCCESS'].map((status) => `BUILD_STATUS:${id}:${status}`));
    whole.close();
    statuses.close();
  });

  it('drops a reader that never reads, with a last event, instead of buffering for it', async () => {
    const master = await startTestMaster();
    const { port } = new URL(master.url);
    const socket = connect(Number(port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.pause();
    socket.write('GET /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await new Promise((resolve) => setTimeout(resolve, 200)); // let the stream open before the flood
    const filler = 'x'.repeat(1000);
    const total = 60_000;
    for (let i = 0; i < total; i++) {
      master.server.store.events.append('WORKER_CONNECTED', { worker: `w${i}`, filler });
      if (i % 5000 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    master.server.store.batcher.flush();
    await new Promise((resolve) => setImmediate(resolve));
    // Now read what the master kept for us: far less than it produced, and ending with why.
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => { received += text; });
    socket.resume();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const produced = total * 1100;
    expect(received.length).toBeLessThan(produced / 4);
    expect(received).toContain('event: STREAM_CLOSED');
    expect(received).toContain('"reason":"slow_reader"');
  });

  it('refuses bad filters naming the field, and too many streams from one address', async () => {
    const master = await startTestMaster();
    expect((await api(master, 'GET', '/v2/events?build_id=x')).text).toContain('build_id');
    expect((await api(master, 'GET', '/v2/events?tags=NOPE')).text).toContain('tags');
    expect((await api(master, 'GET', '/v2/events?console=true')).text).toContain('build_id');
    expect((await api(master, 'GET', '/v2/events', { headers: { 'Last-Event-ID': '-1' } })).text).toContain('Last-Event-ID');
    expect((await api(master, 'GET', '/v2/events?color=red')).status).toBe(400);
    const streams = Array.from({ length: 8 }, () => openStream(`${master.url}/v2/events`));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const refused = await fetch(`${master.url}/v2/events`);
    expect(refused.status).toBe(429);
    for (const stream of streams) stream.close();
  });
});
