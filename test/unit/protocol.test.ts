import { describe, expect, it } from 'vitest';
import { decodeArtifactChunk, encodeArtifactChunk, masterMessage, parseFrame, workerMessage } from '../../shared/protocol.ts';

describe('protocol', () => {
  it('accepts a valid register message', () => {
    const parsed = parseFrame(workerMessage, JSON.stringify({
      type: 'register', protocol_version: 1, name: 'w', num_executors: 2, session_id: 's', heartbeat_interval_ms: 1000,
      heartbeat_failure_threshold: 3, resume: null, proof: 'ab'.repeat(32),
    }));
    expect(parsed.ok).toBe(true);
  });

  it.each([
    ['not json', /not valid JSON/],
    ['{"type":"nope"}', /invalid message/],
    ['{"type":"heartbeat","extra":1}', /invalid message/],
    ['{"type":"atom_finished","lease_id":"x","build_id":-1,"subjob_id":0,"atom_id":0,"exit_code":0,"time_s":0,"stop_reason":null,"has_artifacts":false}', /build_id/],
    ['{"type":"register","protocol_version":1,"name":"w","num_executors":0,"session_id":"s","heartbeat_interval_ms":1000,"heartbeat_failure_threshold":3,"resume":null}', /num_executors/],
  ])('refuses %s with a reason', (raw, reason) => {
    const parsed = parseFrame(workerMessage, raw);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error).toMatch(reason);
  });

  it('refuses environment names that are not shell variable names', () => {
    const parsed = parseFrame(masterMessage, JSON.stringify({
      type: 'run_subjob', lease_id: 'l', build_id: 1, subjob_id: 0, executor_index: 0, build_executor_index: 0,
      atoms: [{ atom_id: 0, command_string: 'x', env: { 'A;rm -rf /': 'v' } }],
    }));
    expect(parsed.ok).toBe(false);
  });

  it('frames artifact chunks and reads them back', () => {
    const header = { type: 'artifact_chunk' as const, lease_id: 'l1', build_id: 3, subjob_id: 2, atom_id: 1, final: true };
    const bytes = Buffer.from([0, 1, 2, 255]);
    const decoded = decodeArtifactChunk(encodeArtifactChunk(header, bytes));
    expect(decoded.header).toEqual(header);
    expect([...decoded.bytes]).toEqual([0, 1, 2, 255]);
  });

  it('refuses truncated or oversized binary frame headers', () => {
    expect(() => decodeArtifactChunk(Buffer.from([0, 0]))).toThrow();
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(100_000);
    expect(() => decodeArtifactChunk(bad)).toThrow(/out of range/);
  });
});
