import { afterEach, describe, expect, it } from 'vitest';
import { api, cleanupAll, postBuild, startTestMaster, startTestWorker, tempDir, waitForBuild } from '../support/cluster.ts';

afterEach(cleanupAll);

async function signIn(url: string, secret: string): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const response = await fetch(`${url}/ui/api/sign-in`, { method: 'POST', body: JSON.stringify({ secret }), headers: { 'Content-Type': 'application/json' } });
  expect(response.status).toBe(200);
  const setCookie = response.headers.get('set-cookie') ?? '';
  const body = await response.json() as { csrf_token: string };
  return { cookie: setCookie.split(';')[0]!, csrf: body.csrf_token, setCookie };
}

describe('the dashboard\'s operator session', () => {
  it('serves the pages with a strict CSP, signs in with the secret into an HttpOnly SameSite=Strict cookie, and rate-limits attempts', async () => {
    const master = await startTestMaster();
    const page = await fetch(`${master.url}/ui/`);
    expect(page.status).toBe(200);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect((await fetch(`${master.url}/ui`, { redirect: 'manual' })).headers.get('location')).toBe('/ui/');

    const { setCookie, csrf } = await signIn(master.url, master.secret);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    expect(setCookie).not.toContain(master.secret);
    expect(csrf).not.toContain(master.secret);

    const wrong = await api(master, 'POST', '/ui/api/sign-in', { json: { secret: 'not-the-secret' }, sign: false });
    expect(wrong.status).toBe(401);
    expect((await api(master, 'POST', '/ui/api/sign-in', { json: { secret: 1 }, sign: false })).text).toContain('secret');
    expect((await api(master, 'POST', '/ui/api/sign-in', { json: { secret: 'x', extra: 1 }, sign: false })).text).toContain('extra');
    // Five attempts a minute per address: the right secret is refused too once they are spent.
    let last = 0;
    for (let i = 0; i < 3 && last !== 429; i++) last = (await api(master, 'POST', '/ui/api/sign-in', { json: { secret: master.secret }, sign: false })).status;
    expect(last).toBe(429);
  });

  it('cancels only with the session cookie and its CSRF token', async () => {
    const master = await startTestMaster();
    await startTestWorker(master);
    const id = await postBuild(master, { type: 'directory', project_directory: tempDir(), config: { commands: ['sleep 30'], atomizers: [{ X: 'echo 1' }] } });
    await waitForBuild(master, id, (b) => b.status === 'BUILDING', 20_000);
    const { cookie, csrf } = await signIn(master.url, master.secret);
    const cancel = (headers: Record<string, string>) => api(master, 'POST', `/ui/api/builds/${id}/cancel`, { raw: '{}', sign: false, headers });
    expect((await cancel({})).status).toBe(401);
    expect((await cancel({ Cookie: cookie })).status).toBe(401);
    expect((await cancel({ Cookie: cookie, 'X-CSRF-Token': `${csrf.slice(1)}x` })).status).toBe(401);
    expect((await cancel({ 'X-CSRF-Token': csrf })).status).toBe(401);
    expect((await api(master, 'POST', '/ui/api/builds/999/cancel', { raw: '{}', sign: false, headers: { Cookie: cookie, 'X-CSRF-Token': csrf } })).status).toBe(404);
    expect((await cancel({ Cookie: cookie, 'X-CSRF-Token': csrf })).status).toBe(200);
    expect((await waitForBuild(master, id)).status).toBe('CANCELED');
  });

  it('follows authenticate_reads: the stream and the API need a digest or a dashboard session', async () => {
    const master = await startTestMaster({ conf: { authenticateReads: true } });
    expect((await fetch(`${master.url}/v2/events`)).status).toBe(401);
    expect((await fetch(`${master.url}/v2/builds`)).status).toBe(401);
    const session = await (await fetch(`${master.url}/ui/api/session`)).json() as { signed_in: boolean; authenticate_reads: boolean };
    expect(session).toMatchObject({ signed_in: false, authenticate_reads: true });
    const { cookie } = await signIn(master.url, master.secret);
    expect((await fetch(`${master.url}/v2/builds`, { headers: { Cookie: cookie } })).status).toBe(200);
    const controller = new AbortController();
    const stream = await fetch(`${master.url}/v2/events`, { headers: { Cookie: cookie }, signal: controller.signal });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toContain('text/event-stream');
    controller.abort();
  });
});
