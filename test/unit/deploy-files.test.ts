/**
 * What cannot run here (Docker, Kubernetes, systemd as PID 1) is checked against the fields each engine
 * requires: the manifests parse and hang together (selectors, Service ports, the Secret, the pool KEDA
 * follows), the systemd units have their sections, hardening and an ExecStart of this repository's layout,
 * and the Dockerfile copies what exists. systemd-analyze verifies the units where it is installed.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConf } from '../../shared/conf.ts';
import { LABEL_PATTERN } from '../../shared/protocol.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const K8S = join(ROOT, 'deploy', 'kubernetes');
const SYSTEMD = join(ROOT, 'deploy', 'systemd');
/** Where the units expect the repository (README "Deploying workers"). */
const INSTALL_DIR = '/opt/clusterrunner';

type Manifest = Record<string, any>;

function readManifests(): Manifest[] {
  const manifests: Manifest[] = [];
  for (const file of readdirSync(K8S).filter((name) => name.endsWith('.yaml') && name !== 'kustomization.yaml')) {
    for (const document of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      expect(document.errors, file).toEqual([]);
      const value = document.toJS() as Manifest | null;
      if (value !== null) manifests.push({ ...value, __file: file });
    }
  }
  return manifests;
}

function one(manifests: Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((manifest) => manifest['kind'] === kind && (name === undefined || manifest['metadata']?.name === name));
  expect(found, `${kind} ${name ?? ''}`).toHaveLength(1);
  return found[0]!;
}

/** Every selector label is on the pod template: otherwise the API server refuses the workload. */
function expectSelectorMatchesTemplate(workload: Manifest): void {
  const selector = workload['spec'].selector.matchLabels as Record<string, string>;
  expect(Object.keys(selector).length).toBeGreaterThan(0);
  expect(workload['spec'].template.metadata.labels).toMatchObject(selector);
}

function expectSecretRefs(container: Manifest, secret: Manifest): void {
  const refs = (container['env'] as Manifest[]).filter((entry) => entry['valueFrom']?.secretKeyRef);
  expect(refs.map((entry) => entry['name'])).toContain('CLUSTERRUNNER_SECRET');
  for (const entry of refs) {
    expect(entry['valueFrom'].secretKeyRef.name).toBe(secret['metadata'].name);
    expect(Object.keys(secret['stringData'] ?? secret['data'])).toContain(entry['valueFrom'].secretKeyRef.key);
  }
}

describe('deploy/kubernetes', () => {
  const manifests = readManifests();
  const secret = one(manifests, 'Secret');
  const service = one(manifests, 'Service');
  const master = one(manifests, 'StatefulSet');
  const worker = one(manifests, 'Deployment');
  const scaler = one(manifests, 'ScaledObject');
  const masterConf = one(manifests, 'ConfigMap');

  it('gives every object an apiVersion, a kind and a DNS-1123 name', () => {
    for (const manifest of manifests) {
      expect(manifest['apiVersion'], manifest['__file']).toMatch(/^([a-z0-9.-]+\/)?v\d+(alpha\d+|beta\d+)?$/);
      expect(manifest['metadata']?.name, manifest['__file']).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    expect(master['apiVersion']).toBe('apps/v1');
    expect(worker['apiVersion']).toBe('apps/v1');
    expect(scaler['apiVersion']).toBe('keda.sh/v1alpha1');
  });

  it('lists every manifest in kustomization.yaml, and only files that exist', () => {
    const kustomization = parseAllDocuments(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Manifest;
    const files = new Set(manifests.map((manifest) => manifest['__file'] as string));
    expect(new Set(kustomization['resources'])).toEqual(files);
    expect(kustomization['images'].map((image: Manifest) => image['name'])).toContain('clusterrunner');
  });

  it('runs the master as one StatefulSet replica with a volume claim for SQLite, behind its Service', () => {
    expectSelectorMatchesTemplate(master);
    expect(master['spec'].replicas).toBe(1);
    expect(master['spec'].serviceName).toBe(service['metadata'].name);
    const container = master['spec'].template.spec.containers[0] as Manifest;
    expect(container['image']).toBe('clusterrunner');
    expect(container['args'][0]).toBe('master');
    const port = (container['ports'] as Manifest[]).find((entry) => entry['name'] === service['spec'].ports[0].targetPort);
    expect(port?.['containerPort']).toBe(43000);
    expect(service['spec'].selector).toEqual(master['spec'].selector.matchLabels);
    const claims = (master['spec'].volumeClaimTemplates as Manifest[]).map((claim) => claim['metadata'].name);
    const data = (container['volumeMounts'] as Manifest[]).find((mount) => claims.includes(mount['name']));
    expect(data?.['mountPath']).toBe('/var/lib/clusterrunner');
    expect(master['spec'].volumeClaimTemplates[0].spec.resources.requests.storage).toMatch(/^\d+[MGT]i$/);
    const volumes = new Set([...claims, ...(master['spec'].template.spec.volumes as Manifest[]).map((volume) => volume['name'])]);
    for (const mount of container['volumeMounts'] as Manifest[]) expect(volumes).toContain(mount['name']);
    expectSecretRefs(container, secret);
  });

  it('gives the master a conf it loads, with the pool KEDA follows', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cr-deploy-'));
    try {
      const file = join(dir, 'clusterrunner.conf');
      writeFileSync(file, masterConf['data']['clusterrunner.conf'] as string, { mode: 0o600 });
      const conf = loadConf({ file, role: 'master', env: { CLUSTERRUNNER_SECRET: 'a-test-secret-of-enough-length' } });
      expect(conf.baseDirectory).toBe('/var/lib/clusterrunner');
      expect(conf.pools.map((pool) => pool.name)).toContain('kubernetes');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const mount = (master['spec'].template.spec.volumes as Manifest[]).find((volume) => volume['configMap']);
    expect(mount?.['configMap'].name).toBe(masterConf['metadata'].name);
  });

  it('runs workers as a Deployment in that pool, pointed at the master Service', () => {
    expectSelectorMatchesTemplate(worker);
    const container = worker['spec'].template.spec.containers[0] as Manifest;
    expect(container['image']).toBe('clusterrunner');
    const args = container['args'] as string[];
    expect(args[0]).toBe('worker');
    expect(args[args.indexOf('--pool') + 1]).toBe('kubernetes');
    for (const label of args[args.indexOf('--labels') + 1]!.split(',')) expect(label).toMatch(LABEL_PATTERN);
    const env = Object.fromEntries((container['env'] as Manifest[]).map((entry) => [entry['name'], entry['value']]));
    expect(env['CLUSTERRUNNER_MASTER_URL']).toBe(`http://${service['metadata'].name}:${service['spec'].ports[0].port}`);
    expectSecretRefs(container, secret);
    // Draining finishes running atoms: the pod must be given time for it.
    expect(worker['spec'].template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(60);
  });

  it('scales the workers with a KEDA metrics-api trigger on the pool\'s desired figure', () => {
    expect(scaler['spec'].scaleTargetRef).toMatchObject({ kind: 'Deployment', name: worker['metadata'].name });
    const [trigger] = scaler['spec'].triggers as Manifest[];
    expect(trigger!['type']).toBe('metrics-api');
    const url = new URL(trigger!['metadata'].url as string);
    expect(url.pathname).toBe('/v2/pools/kubernetes/desired');
    expect(url.hostname.split('.')[0]).toBe(service['metadata'].name);
    expect(url.port).toBe(String(service['spec'].ports[0].port));
    expect(trigger!['metadata'].valueLocation).toBe('desired_workers');
    // KEDA reads trigger metadata as strings.
    expect(trigger!['metadata'].targetValue).toMatch(/^\d+$/);
    expect(scaler['spec'].maxReplicaCount).toBeGreaterThanOrEqual(scaler['spec'].minReplicaCount);
  });

  it('keeps the shared secret in a Secret, at least 8 characters', () => {
    expect(secret['apiVersion']).toBe('v1');
    expect(String(secret['stringData'].secret).length).toBeGreaterThanOrEqual(8);
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const lines = text.split('\n').filter((line) => !line.startsWith('#'));

  it('builds on node:20 with production dependencies only, as a non-root user', () => {
    expect(lines.find((line) => line.startsWith('FROM '))).toMatch(/^FROM node:20(-[a-z]+)?$/);
    expect(text).toMatch(/npm ci --omit=dev/);
    const user = lines.filter((line) => line.startsWith('USER ')).at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
  });

  it('copies only what exists, and nothing .dockerignore leaves out', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').filter((line) => line !== '' && !line.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.git']));
    for (const line of lines.filter((entry) => entry.startsWith('COPY '))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const source of sources) {
        expect(existsSync(join(ROOT, source)), source).toBe(true);
        expect(ignored, source).not.toContain(source);
      }
    }
  });

  it('starts bin/clusterrunner', () => {
    const entrypoint = lines.find((line) => line.startsWith('ENTRYPOINT '))!;
    const [binary] = JSON.parse(entrypoint.slice('ENTRYPOINT '.length)) as string[];
    expect(binary!.startsWith(`${INSTALL_DIR}/`)).toBe(true);
    accessSync(join(ROOT, binary!.slice(INSTALL_DIR.length + 1)), constants.X_OK);
  });
});

/** A systemd unit as sections of key => values (a key may repeat). */
function readUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | null = null;
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const pair = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!pair || current === null) throw new Error(`line ${index + 1}: not "Key=value" inside a section: ${line}`);
    current.set(pair[1]!, [...(current.get(pair[1]!) ?? []), pair[2]!]);
  }
  return sections;
}

describe.each(['master', 'worker'])('deploy/systemd/clusterrunner-%s.service', (role) => {
  const file = join(SYSTEMD, `clusterrunner-${role}.service`);
  const unit = readUnit(readFileSync(file, 'utf8'));
  const service = unit.get('Service')!;
  const value = (key: string) => service.get(key)?.at(-1);

  it('has [Unit], [Service] and [Install]', () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(unit.get('Unit')!.get('Description')).toBeDefined();
    expect(unit.get('Install')!.get('WantedBy')).toEqual(['multi-user.target']);
  });

  it(`starts this repository's bin/clusterrunner ${role}`, () => {
    const [binary, command] = value('ExecStart')!.split(/\s+/);
    expect(binary!.startsWith(`${INSTALL_DIR}/`)).toBe(true);
    accessSync(join(ROOT, binary!.slice(INSTALL_DIR.length + 1)), constants.X_OK);
    expect(command).toBe(role);
  });

  it('runs hardened as a dedicated user, restarting on failure, drained by SIGTERM', () => {
    expect(value('User')).toBe('clusterrunner');
    expect(value('NoNewPrivileges')).toBe('true');
    expect(value('PrivateTmp')).toBe('true');
    expect(value('ProtectSystem')).toBe('strict');
    expect(value('Restart')).toBe('on-failure');
    expect(value('KillSignal')).toBe('SIGTERM');
    // The one writable place is the state directory systemd creates for the user.
    expect(value('ReadWritePaths')).toBe(`/var/lib/${value('StateDirectory')}`);
    expect(value('Environment') === undefined || service.get('Environment')!.some((entry) => entry.startsWith('HOME=/var/lib/'))).toBe(true);
  });

  it('passes systemd-analyze verify where systemd-analyze is installed', () => {
    const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
    if (which.status !== 0) return;
    const dir = mkdtempSync(join(tmpdir(), 'cr-units-'));
    try {
      // The unit as installed from this checkout, so that verify can see the binary exists.
      const copy = join(dir, `clusterrunner-${role}.service`);
      writeFileSync(copy, readFileSync(file, 'utf8').replaceAll(INSTALL_DIR, ROOT));
      const result = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', timeout: 60_000 });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).not.toContain(copy);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
