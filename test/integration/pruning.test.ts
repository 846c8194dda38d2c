import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../master/store/database.ts';
import { cleanupAll, eventually, spawnCli, tempDir, writeConf } from '../support/cluster.ts';
import { freePort } from '../support/build-results.ts';

const DAY_S = 86_400;
const SECRET = 'pruning-test-secret';

afterEach(cleanupAll);

function metricValue(text: string, name: string): number | null {
  const line = text.split('\n').find((entry) => entry.startsWith(`${name} `));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

describe('a master process prunes old builds at start', () => {
  it('removes the files and rows of builds past keep_builds_days, keeps the rest, and shows both gauges', async () => {
    const base = tempDir('cr-prune-master-');
    const dbPath = join(base, 'clusterrunner.db');
    const nowS = Date.now() / 1000;
    // The SQLite file a master left behind: two builds finished 40 and 35 days ago, one yesterday, one running.
    const db = openDatabase(dbPath);
    const insert = db.prepare(`INSERT INTO builds (status, request_params, request, project_type, state_timestamps) VALUES (?, '{}', '{}', 'directory', ?)`);
    const addBuild = (status: string, queuedDaysAgo: number, finished: boolean): number => {
      const queued = nowS - queuedDaysAgo * DAY_S;
      const stamps = finished ? { queued, finished: queued + 60 } : { queued };
      const id = Number(insert.run(status, JSON.stringify(stamps)).lastInsertRowid);
      db.prepare(`INSERT INTO events (tag, timestamp, build_id, fields) VALUES ('BUILD_REQUEST_QUEUED', ?, ?, '{}')`).run(queued, id);
      mkdirSync(join(base, 'results', String(id), 'artifacts', 'artifact_0_0'), { recursive: true });
      writeFileSync(join(base, 'results', String(id), 'artifacts', 'artifact_0_0', 'clusterrunner_console_output'), Buffer.alloc(50_000, 'o'));
      writeFileSync(join(base, 'results', String(id), 'results.tar.gz'), Buffer.alloc(20_000, 'a'));
      return id;
    };
    const oldest = addBuild('SUCCESS', 40, true);
    const old = addBuild('FAILURE', 35, true);
    const runningSinceLongAgo = addBuild('BUILDING', 50, false);
    const recent = addBuild('SUCCESS', 1, true);
    db.close();

    const port = await freePort();
    const conf = writeConf(base, 'master', {
      general: { secret: SECRET, base_directory: base, log_level: 'info' },
      master: { port, keep_builds_days: 30, database: dbPath },
    });
    const master = spawnCli(['master', '-c', conf, '-p', String(port)]);

    const metrics = await eventually('the pruner\'s first pass in /v1/metrics', async () => {
      const response = await fetch(`http://127.0.0.1:${port}/v1/metrics`);
      const text = await response.text();
      const bytes = metricValue(text, 'clusterrunner_results_bytes');
      return bytes !== null && bytes > 0 ? text : null;
    }, 30_000);

    expect(existsSync(join(base, 'results', String(oldest)))).toBe(false);
    expect(existsSync(join(base, 'results', String(old)))).toBe(false);
    expect(existsSync(join(base, 'results', String(recent), 'results.tar.gz'))).toBe(true);
    expect(existsSync(join(base, 'results', String(runningSinceLongAgo), 'results.tar.gz'))).toBe(true);
    // The oldest build kept is the running one, queued 50 days ago: it is never pruned.
    expect(metricValue(metrics, 'clusterrunner_oldest_build_timestamp_seconds')).toBeCloseTo(nowS - 50 * DAY_S, 0);
    expect(metricValue(metrics, 'clusterrunner_results_bytes')).toBeGreaterThanOrEqual(2 * 70_000);
    expect(master.output()).toContain('pruned old builds');

    master.child.kill('SIGTERM');
    expect(await master.exited).toBe(0);
    const after = openDatabase(dbPath);
    try {
      const ids = (after.prepare('SELECT id FROM builds ORDER BY id').all() as { id: number }[]).map((row) => row.id);
      expect(ids).toEqual([runningSinceLongAgo, recent]);
      const eventBuilds = (after.prepare('SELECT build_id FROM events WHERE build_id IS NOT NULL ORDER BY build_id').all() as { build_id: number }[])
        .map((row) => row.build_id);
      expect(eventBuilds).not.toContain(oldest);
      expect(eventBuilds).not.toContain(old);
      expect(after.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      after.close();
    }
  }, 60_000);
});
