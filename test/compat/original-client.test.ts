/**
 * Issue 17: the original ClusterRunner's client against our master. fixtures/original-client.json holds its
 * requests (as its client sends them: /v1 paths, the body-only digest, `"job_name": null`, worker ids as
 * strings, the Accept header and the unversioned v2 tree) and the answers it needs; they are replayed in
 * order against a real master with a real worker, once with the default vocabulary and once with
 * `compatibility = original`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { api, cleanupAll, startTestMaster, startTestWorker, tempDir, type ApiResponse, type TestMaster } from '../support/cluster.ts';
import { signRequest } from '../../shared/auth.ts';

type Mode = 'default' | 'original';
type Json = Record<string, unknown>;

interface Expectation {
  readonly status?: number;
  readonly headers?: Record<string, string>;
  readonly body?: Json;
  /** Dotted paths that must not be in the body. */
  readonly absent?: readonly string[];
}

interface Exchange extends Partial<Record<'both' | Mode, Expectation>> {
  readonly name: string;
  readonly request: { method: string; path: string; headers?: Record<string, string>; body?: unknown; sign?: 'body' };
  readonly until?: Partial<Record<Mode, Json>>;
  readonly save?: Record<string, string>;
  readonly bodyLength?: Record<string, number>;
}

const FIXTURE = JSON.parse(readFileSync(new URL('./fixtures/original-client.json', import.meta.url), 'utf8')) as { exchanges: Exchange[] };
const PLACEHOLDER = /^\$\{(\w+)\}$/;

afterAll(cleanupAll);

/** In a request every `${NAME}` becomes text, as a client writes it; worker ids stay strings on purpose. */
function requestValue(value: unknown, known: Map<string, unknown>): unknown {
  if (typeof value === 'string') return value.replace(/\$\{(\w+)\}/g, (_all, name: string) => String(lookup(known, name)));
  if (Array.isArray(value)) return value.map((item) => requestValue(item, known));
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, requestValue(v, known)]));
  return value;
}

/** In an expectation `${NAME}` is the value itself (a number stays a number); `<number>`, `<array>` match a type. */
function expectedValue(value: unknown, known: Map<string, unknown>): unknown {
  if (value === '<number>') return expect.any(Number);
  if (value === '<array>') return expect.any(Array);
  if (typeof value === 'string') {
    const whole = PLACEHOLDER.exec(value);
    return whole ? lookup(known, whole[1]!) : requestValue(value, known);
  }
  if (Array.isArray(value)) return value.map((item) => expectedValue(item, known));
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expectedValue(v, known)]));
  return value;
}

function lookup(known: Map<string, unknown>, name: string): unknown {
  if (!known.has(name)) throw new Error(`the fixture uses \${${name}} before it is known`);
  return known.get(name);
}

/** `a.b.0.c`, and `list[key=value]` for the first item of a list whose key has that value (as text). */
function at(body: unknown, dotted: string): unknown {
  let value: unknown = body;
  for (const segment of dotted.split('.')) {
    const filter = /^(\w+)\[(\w+)=([^\]]*)\]$/.exec(segment);
    const key = filter ? filter[1]! : segment;
    value = typeof value === 'object' && value !== null ? (value as Json)[key] : undefined;
    if (filter) value = Array.isArray(value) ? value.find((item: unknown) => String((item as Json)?.[filter[2]!]) === filter[3]) : undefined;
  }
  return value;
}

function matches(body: unknown, expected: Json): boolean {
  try {
    expect(body).toMatchObject(expected);
    return true;
  } catch {
    return false;
  }
}

async function send(master: TestMaster, exchange: Exchange, known: Map<string, unknown>): Promise<ApiResponse> {
  const { method, headers } = exchange.request;
  const path = requestValue(exchange.request.path, known) as string;
  const json = exchange.request.body === undefined ? undefined : requestValue(exchange.request.body, known);
  // The original's client signs bodies with the body-only digest, and GETs not at all.
  return api(master, method, path, { ...(json === undefined ? {} : { json }), sign: exchange.request.sign === 'body', ...(headers ? { headers } : {}) });
}

function writeProjects(known: Map<string, unknown>): void {
  const passing = tempDir('cr-compat-pass-');
  writeFileSync(join(passing, 'clusterrunner.yaml'), [
    'Tests:', '  commands:', '    - echo "ran $WORD" > "$ARTIFACT_DIR/out.txt"', '  atomizers:', '    - WORD: echo hello', '',
  ].join('\n'));
  const failing = tempDir('cr-compat-fail-');
  writeFileSync(join(failing, 'clusterrunner.yaml'), [
    'Passing:', '  commands:', '    - "true"', '  atomizers:', '    - X: echo 1',
    'Failing:', '  commands:', '    - exit 1', '  atomizers:', '    - X: echo 1', '',
  ].join('\n'));
  known.set('PASSING_PROJECT', passing);
  known.set('FAILING_PROJECT', failing);
}

for (const mode of ['default', 'original'] as const) {
  describe(`the original client's exchanges, compatibility = ${mode}`, () => {
    const known = new Map<string, unknown>();
    let master: TestMaster;

    it('starts a master and a worker', async () => {
      master = await startTestMaster({ conf: { compatibility: mode } });
      await startTestWorker(master, { executors: 1 });
      writeProjects(known);
      await expect.poll(async () => (await api(master, 'GET', '/v1/worker')).body.workers.length, { timeout: 20_000 }).toBe(1);
    });

    for (const exchange of FIXTURE.exchanges) {
      it(exchange.name, async () => {
        let response = await send(master, exchange, known);
        const until = exchange.until?.[mode];
        if (until !== undefined) {
          const wanted = expectedValue(until, known) as Json;
          await expect.poll(async () => {
            response = await send(master, exchange, known);
            return matches(response.body, wanted);
          }, { timeout: 60_000, interval: 100 }).toBe(true);
        }
        const context = `${exchange.request.method} ${exchange.request.path} answered ${response.status}: ${response.text.slice(0, 2000)}`;
        for (const expectation of [exchange.both, exchange[mode]]) {
          if (expectation === undefined) continue;
          if (expectation.status !== undefined) expect(response.status, context).toBe(expectation.status);
          for (const [name, value] of Object.entries(expectation.headers ?? {})) {
            expect(response.headers.get(name), `${context}\nheader ${name}`).toContain(value);
          }
          if (expectation.body !== undefined) expect(response.body, context).toMatchObject(expectedValue(expectation.body, known) as Json);
          for (const path of expectation.absent ?? []) expect(at(response.body, path), `${context}\n${path} must be absent`).toBeUndefined();
        }
        for (const [key, length] of Object.entries(exchange.bodyLength ?? {})) expect(at(response.body, key), context).toHaveLength(length);
        for (const [name, path] of Object.entries(exchange.save ?? {})) known.set(name, at(response.body, path));
      });
    }

    it("answers our own signed clients in SPEC §2.1's vocabulary in this mode too", async () => {
      const path = `/v1/build/${String(known.get('PASSING_BUILD'))}`;
      const response = await fetch(`${master.url}${path}`, { headers: signRequest(master.secret, 'GET', path) });
      const body = (await response.json()) as { build: Json };
      expect(body.build).toMatchObject({ status: 'SUCCESS', result: 'SUCCESS' });
    });

    it("answers the dashboard (a browser's same-origin calls) in SPEC §2.1's vocabulary in this mode too", async () => {
      const response = await api(master, 'GET', `/v1/build/${String(known.get('PASSING_BUILD'))}`, { headers: { 'Sec-Fetch-Site': 'same-origin' } });
      expect(response.body.build).toMatchObject({ status: 'SUCCESS', result: 'SUCCESS' });
    });
  });
}
