/**
 * Mutual authentication of worker and master, and the MAC on every frame the master sends (issue 10 item 2).
 *
 * The signed upgrade proves the worker holds the secret; it says nothing about the master. So the worker
 * also sends a fresh random challenge with the upgrade, and the master's first frame (`hello`) must answer
 * it with HMAC(secret, challenge + the upgrade's nonce + a nonce of the master's own): whoever answers for
 * the master's URL without the secret cannot, and the worker closes before it runs anything. The worker's
 * `register` then carries a proof over the master's nonce, so a login captured by a fake master (or on the
 * path) is worthless at the real master, which picks a new nonce for every connection. Every later
 * master→worker frame is sealed with a key derived from all three values and a sequence number, so frames
 * cannot be forged, replayed into another connection, replayed within this one, or reordered.
 *
 * This authenticates; it does not hide. TLS (`https_cert_file`) is what keeps the stream itself private.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The upgrade header carrying the worker's challenge. */
export const WORKER_CHALLENGE_HEADER = 'clusterrunner-worker-challenge';

const HEX_256 = /^[0-9a-f]{64}$/;

/** What binds one connection: the worker's challenge, the nonce of its signed upgrade, the master's nonce. */
export interface ConnectionBinding {
  readonly challenge: string;
  readonly upgradeNonce: string;
  readonly masterNonce: string;
}

/** 32 random bytes as lower-case hex: the worker's challenge, or the master's nonce. */
export function createNonce(): string {
  return randomBytes(32).toString('hex');
}

export function isNonce(value: unknown): value is string {
  return typeof value === 'string' && HEX_256.test(value);
}

// Each use gets its own label, so a value computed for one step is never valid for another.
function mac(key: string | Buffer, label: string, binding: ConnectionBinding): string {
  return createHmac('sha256', key)
    .update(`clusterrunner/${label}\n${binding.challenge}\n${binding.upgradeNonce}\n${binding.masterNonce}`)
    .digest('hex');
}

function hexEquals(expected: string, received: unknown): boolean {
  if (typeof received !== 'string' || !HEX_256.test(received)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(received, 'hex'));
}

/** The master's answer to the worker's challenge, sent in `hello`. */
export function masterProof(secret: string, binding: ConnectionBinding): string {
  return mac(secret, 'master-hello', binding);
}

export function isMasterProofValid(secret: string, binding: ConnectionBinding, proof: unknown): boolean {
  return hexEquals(masterProof(secret, binding), proof);
}

/** The worker's proof in `register`: valid for this connection's master nonce only. */
export function registerProof(secret: string, binding: ConnectionBinding): string {
  return mac(secret, 'worker-register', binding);
}

export function isRegisterProofValid(secret: string, binding: ConnectionBinding, proof: unknown): boolean {
  return hexEquals(registerProof(secret, binding), proof);
}

function sessionKey(secret: string, binding: ConnectionBinding): Buffer {
  return Buffer.from(mac(secret, 'frame-key', binding), 'hex');
}

function frameMac(key: Buffer, seq: number, body: string): string {
  return createHmac('sha256', key).update(`${seq}\n`).update(body, 'utf8').digest('hex');
}

/** A sealed frame: the message's exact JSON text, its place in the connection and a MAC over both. */
interface SealedFrame {
  readonly type: 'sealed';
  readonly seq: number;
  readonly mac: string;
  readonly body: string;
}

/** The master's side: numbers and MACs each text frame it sends on one connection. */
export class FrameSealer {
  readonly #key: Buffer;
  #seq = 0;

  constructor(secret: string, binding: ConnectionBinding) {
    this.#key = sessionKey(secret, binding);
  }

  seal(body: string): string {
    const seq = this.#seq++;
    return JSON.stringify({ type: 'sealed', seq, mac: frameMac(this.#key, seq, body), body } satisfies SealedFrame);
  }
}

export type OpenResult = { ok: true; body: string } | { ok: false; error: string };

/** The worker's side: accepts each sealed frame once, in the order sent, and nothing unsealed. */
export class FrameOpener {
  readonly #key: Buffer;
  #nextSeq = 0;

  constructor(secret: string, binding: ConnectionBinding) {
    this.#key = sessionKey(secret, binding);
  }

  open(raw: string): OpenResult {
    let frame: Partial<SealedFrame>;
    try {
      frame = JSON.parse(raw) as Partial<SealedFrame>;
    } catch {
      return { ok: false, error: 'frame is not valid JSON' };
    }
    if (frame === null || typeof frame !== 'object' || frame.type !== 'sealed') return { ok: false, error: 'frame is not sealed' };
    if (typeof frame.body !== 'string' || !Number.isSafeInteger(frame.seq)) return { ok: false, error: 'sealed frame is malformed' };
    const seq = frame.seq as number;
    // The MAC first: an unauthenticated sequence number says nothing.
    if (!hexEquals(frameMac(this.#key, seq, frame.body), frame.mac)) return { ok: false, error: 'sealed frame has a wrong MAC' };
    if (seq !== this.#nextSeq) return { ok: false, error: `sealed frame ${seq} out of order (expected ${this.#nextSeq}): replayed or reordered` };
    this.#nextSeq++;
    return { ok: true, body: frame.body };
  }
}
