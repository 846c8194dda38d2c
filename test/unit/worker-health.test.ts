import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSilentLogger } from '../../shared/log.ts';
import { WorkerHealth, type WorkerHealthOptions } from '../../worker/health.ts';

const open: WorkerHealth[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((health) => health.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function startHealth(options: Partial<WorkerHealthOptions> & { onChange?: () => void }): { health: WorkerHealth; dir: string; changes: () => number } {
  const dir = mkdtempSync(join(tmpdir(), 'cr-health-'));
  dirs.push(dir);
  let changes = 0;
  const health = new WorkerHealth({
    diskPath: dir, cwd: dir, minDiskFreeBytes: 0, checkCommand: null, checkIntervalMs: 100, log: createSilentLogger(),
    ...options, onChange: () => changes++,
  });
  open.push(health);
  health.start();
  return { health, dir, changes: () => changes };
}

describe('WorkerHealth (SPEC §13)', () => {
  it('reports the machine figures with every heartbeat', async () => {
    const { health } = startHealth({});
    await health.settle();
    const report = health.report();
    expect(report.cpu_count).toBeGreaterThan(0);
    expect(report.load1).toBeGreaterThanOrEqual(0);
    expect(report.memory_total_bytes).toBeGreaterThan(0);
    expect(report.memory_available_bytes).toBeLessThanOrEqual(report.memory_total_bytes!);
    expect(report.disk_free_bytes).toBeGreaterThan(0);
    expect(report).toMatchObject({ health: 'healthy', health_reason: null });
  });

  it('is unhealthy while the check fails, with its exit code and output, and healthy again once it passes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cr-health-flag-'));
    dirs.push(dir);
    const flag = join(dir, 'broken');
    writeFileSync(flag, '');
    const { health, changes } = startHealth({ checkCommand: `if [ -e ${flag} ]; then echo "fan stopped"; exit 3; fi` });
    await expect.poll(() => health.report().health).toBe('unhealthy');
    expect(health.report().health_reason).toBe('health_check_command exited with 3: fan stopped');
    expect(changes()).toBe(1);
    rmSync(flag);
    await expect.poll(() => health.report().health).toBe('healthy');
    expect(health.report().health_reason).toBeNull();
    expect(changes()).toBe(2);
  });

  it('counts a check that does not finish within the interval as failing', async () => {
    const { health } = startHealth({ checkCommand: 'sleep 5', checkIntervalMs: 300 });
    await expect.poll(() => health.report().health_reason, { timeout: 10_000 }).toMatch(/did not finish within/);
  });

  it('is unhealthy below min_disk_free_bytes', async () => {
    const { health } = startHealth({ minDiskFreeBytes: Number.MAX_SAFE_INTEGER });
    await health.settle();
    expect(health.report().health).toBe('unhealthy');
    expect(health.report().health_reason).toMatch(/below min_disk_free_bytes/);
  });
});
