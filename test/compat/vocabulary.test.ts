/**
 * Issue 17: the pieces of the compatibility layer on their own — the original's status vocabulary for every
 * one of ours (PREPARING and a canceled build cannot be caught reliably end to end), version resolution,
 * and the request normaliser's limits.
 */
import { describe, expect, it } from 'vitest';
import { originalBuild, toOriginalVocabulary } from '../../master/http/compat/original-vocabulary.ts';
import { acceptedVersion, resolveApiRoute } from '../../master/http/compat/api-version.ts';
import { normaliseBuildRequest, normaliseShutdownRequest } from '../../master/http/compat/request-normaliser.ts';

describe("the original's build vocabulary", () => {
  it.each([
    ['QUEUED', null, 'QUEUED', null],
    ['PREPARING', null, 'QUEUED', null],
    ['BUILDING', null, 'BUILDING', null],
    ['SUCCESS', 'SUCCESS', 'FINISHED', 'NO_FAILURES'],
    ['FAILURE', 'FAILURE', 'FINISHED', 'FAILURE'],
    ['ERROR', 'ERROR', 'ERROR', 'FAILURE'],
    ['CANCELED', 'CANCELED', 'CANCELED', 'FAILURE'],
  ])('%s (result %s) is status %s, result %s', (status, result, originalStatus, originalResult) => {
    expect(originalBuild({ id: 1, status, result, details: null })).toEqual({ id: 1, status: originalStatus, result: originalResult, details: null });
  });

  it('translates builds in build, builds and queue, adds status beside STATUS, and master.slaves', () => {
    const body = toOriginalVocabulary({
      STATUS: 'SUCCESS',
      build: { status: 'PREPARING', result: null },
      builds: [{ status: 'SUCCESS', result: 'SUCCESS' }],
      queue: [{ status: 'BUILDING', result: null }],
    });
    expect(body).toEqual({
      STATUS: 'SUCCESS', status: 'SUCCESS',
      build: { status: 'QUEUED', result: null },
      builds: [{ status: 'FINISHED', result: 'NO_FAILURES' }],
      queue: [{ status: 'BUILDING', result: null }],
    });
    expect(toOriginalVocabulary({ master: { status: 'Master service is up.', workers: [] }, child_routes: { build: '/v1/build', worker: '/v1/worker', queue: '/v1/queue' } }))
      .toEqual({ master: { status: 'Master service is up.', workers: [], slaves: [] }, child_routes: { builds: '/v1/build', worker: '/v1/worker', queue: '/v1/queue', slaves: '/v1/slave' } });
  });

  it('leaves what is not a JSON object as it is', () => {
    for (const body of [null, 'text', 3, [{ status: 'SUCCESS' }]]) expect(toOriginalVocabulary(body)).toEqual(body);
  });
});

describe('API version negotiation', () => {
  it('reads the version from the Accept media type, ignoring unknown versions', () => {
    expect(acceptedVersion('application/vnd.clusterrunner.v2+json')).toBe(2);
    expect(acceptedVersion('text/html, application/VND.ClusterRunner.v1+JSON;q=0.9')).toBe(1);
    expect(acceptedVersion('application/vnd.clusterrunner.v3+json')).toBeNull();
    expect(acceptedVersion(undefined)).toBeNull();
  });

  it.each([
    ['/v1/build/3/subjob/0/atom', undefined, 'default', '/v1/build/3/subjob/0/atom', 1],
    ['/v1/build/3/subjob/0/atom', 'application/vnd.clusterrunner.v2+json', 'default', '/v2/builds/3/subjobs/0/atoms', 2],
    ['/build/3', 'application/vnd.clusterrunner.v2+json', 'default', '/v2/builds/3', 2],
    ['/v1', 'application/vnd.clusterrunner.v2+json', 'default', '/v2', 2],
    ['/builds/3/subjobs', undefined, 'default', '/v2/builds/3/subjobs', 2],
    ['/slaves/shutdown', undefined, 'default', '/v2/slaves/shutdown', 2],
    ['/version', undefined, 'default', '/version', 1],
    ['/version', undefined, 'original', '/v2/version', 2],
    ['/version', 'application/vnd.clusterrunner.v1+json', 'original', '/version', 1],
    ['/v2/builds', 'application/vnd.clusterrunner.v1+json', 'default', '/v2/builds', 1],
    ['/queue', undefined, 'original', '/queue', 1],
  ] as const)('%s (Accept %s, %s) is routed to %s as v%s', (path, accept, mode, routed, version) => {
    expect(resolveApiRoute(path, accept, mode)).toEqual({ path: routed, version });
  });
});

describe("the request normaliser", () => {
  it('drops null fields of a build request, and changes nothing without one', () => {
    expect(normaliseBuildRequest({ type: 'directory', job_name: null, remote_files: null, project_directory: '/p' }))
      .toEqual({ type: 'directory', project_directory: '/p' });
    expect(normaliseBuildRequest({ type: 'directory', job_name: 'x' })).toBeNull();
  });

  it('turns digit-string worker ids into numbers and leaves anything else for the route to refuse', () => {
    expect(normaliseShutdownRequest({ slaves: ['1', 2] })).toEqual({ slaves: [1, 2] });
    expect(normaliseShutdownRequest({ workers: ['12'] })).toEqual({ workers: [12] });
    expect(normaliseShutdownRequest({ slaves: ['-1', '1.5', ' 1', 'x'] })).toBeNull();
    expect(normaliseShutdownRequest({ shutdown_all: true })).toBeNull();
  });
});
