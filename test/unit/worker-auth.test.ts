import { describe, expect, it } from 'vitest';
import {
  FrameOpener, FrameSealer, createNonce, isMasterProofValid, isNonce, isRegisterProofValid, masterProof, registerProof,
  type ConnectionBinding,
} from '../../shared/worker-auth.ts';

const binding: ConnectionBinding = { challenge: createNonce(), upgradeNonce: 'a-uuid-nonce', masterNonce: createNonce() };

describe('worker-auth proofs', () => {
  it('nonces are fresh 256-bit hex', () => {
    const nonce = createNonce();
    expect(isNonce(nonce)).toBe(true);
    expect(createNonce()).not.toBe(nonce);
    expect(isNonce('zz'.repeat(32))).toBe(false);
    expect(isNonce(undefined)).toBe(false);
  });

  it('the master proof holds only for the same secret and the same connection', () => {
    const proof = masterProof('s3cret', binding);
    expect(isMasterProofValid('s3cret', binding, proof)).toBe(true);
    expect(isMasterProofValid('other', binding, proof)).toBe(false);
    for (const field of ['challenge', 'upgradeNonce', 'masterNonce'] as const) {
      expect(isMasterProofValid('s3cret', { ...binding, [field]: createNonce() }, proof)).toBe(false);
    }
    expect(isMasterProofValid('s3cret', binding, proof.toUpperCase())).toBe(false);
    expect(isMasterProofValid('s3cret', binding, 42)).toBe(false);
  });

  it('a proof for one step is never valid for the other', () => {
    expect(isRegisterProofValid('s3cret', binding, masterProof('s3cret', binding))).toBe(false);
    expect(isMasterProofValid('s3cret', binding, registerProof('s3cret', binding))).toBe(false);
  });

  it('a login proof for one master nonce is refused under another (a replayed login)', () => {
    const captured = registerProof('s3cret', binding);
    expect(isRegisterProofValid('s3cret', binding, captured)).toBe(true);
    expect(isRegisterProofValid('s3cret', { ...binding, masterNonce: createNonce() }, captured)).toBe(false);
  });
});

describe('sealed frames', () => {
  const body = (n: number) => JSON.stringify({ type: 'cancel_build', build_id: n });

  it('open in order, once each', () => {
    const sealer = new FrameSealer('s3cret', binding);
    const opener = new FrameOpener('s3cret', binding);
    expect(opener.open(sealer.seal(body(1)))).toEqual({ ok: true, body: body(1) });
    expect(opener.open(sealer.seal(body(2)))).toEqual({ ok: true, body: body(2) });
  });

  it('refuses a replayed frame', () => {
    const sealer = new FrameSealer('s3cret', binding);
    const opener = new FrameOpener('s3cret', binding);
    const frame = sealer.seal(body(1));
    expect(opener.open(frame).ok).toBe(true);
    expect(opener.open(frame)).toEqual({ ok: false, error: expect.stringMatching(/replayed or reordered/) });
  });

  it('refuses frames out of order', () => {
    const sealer = new FrameSealer('s3cret', binding);
    const opener = new FrameOpener('s3cret', binding);
    sealer.seal(body(1));
    expect(opener.open(sealer.seal(body(2)))).toEqual({ ok: false, error: expect.stringMatching(/out of order/) });
  });

  it('refuses a frame of another connection, another secret, an altered body or sequence number', () => {
    const opener = () => new FrameOpener('s3cret', binding);
    expect(opener().open(new FrameSealer('s3cret', { ...binding, masterNonce: createNonce() }).seal(body(1))).ok).toBe(false);
    expect(opener().open(new FrameSealer('other', binding).seal(body(1))).ok).toBe(false);
    const frame = JSON.parse(new FrameSealer('s3cret', binding).seal(body(1))) as Record<string, unknown>;
    expect(opener().open(JSON.stringify({ ...frame, body: body(2) }))).toEqual({ ok: false, error: 'sealed frame has a wrong MAC' });
    expect(opener().open(JSON.stringify({ ...frame, seq: 1 }))).toEqual({ ok: false, error: 'sealed frame has a wrong MAC' });
  });

  it('refuses anything unsealed or malformed', () => {
    const opener = new FrameOpener('s3cret', binding);
    expect(opener.open(body(1))).toEqual({ ok: false, error: 'frame is not sealed' });
    expect(opener.open('not json')).toEqual({ ok: false, error: 'frame is not valid JSON' });
    expect(opener.open('null')).toEqual({ ok: false, error: 'frame is not sealed' });
    expect(opener.open('{"type":"sealed","seq":"0","mac":"00","body":"{}"}')).toEqual({ ok: false, error: 'sealed frame is malformed' });
  });
});
