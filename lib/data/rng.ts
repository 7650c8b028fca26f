// A small seeded random generator for the data pipeline (shuffling, window sampling): xoshiro128**
// seeded through a murmur3 mix of (seed, stream), so each (seed, epoch) pair gives its own
// repeatable sequence, and its state can be saved and restored.
import { ValueError } from '../errors';

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

function checkSeed(op: string, name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new ValueError(op, `${name} must be a non-negative safe integer, got ${v}`);
}

/** Seeded pseudo-random numbers (xoshiro128**): the same seed and stream give the same sequence. */
export class Rng {
  private s = new Uint32Array(4);

  /** seed and stream are non-negative integers below 2^53; streams of one seed are independent. */
  constructor(seed = 0, stream = 0) {
    checkSeed('Rng', 'seed', seed);
    checkSeed('Rng', 'stream', stream);
    let x = 0;
    for (const word of [seed >>> 0, Math.floor(seed / 2 ** 32), stream >>> 0, Math.floor(stream / 2 ** 32)]) x = mix32((x ^ word) + 0x9e3779b9);
    for (let k = 0; k < 4; k++) this.s[k] = x = mix32(x + 0x9e3779b9 * (k + 1));
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
  }

  /** A uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  next(): number {
    return ((this.nextUint32() >>> 5) * 2 ** 26 + (this.nextUint32() >>> 6)) / 2 ** 53;
  }

  /** A uniform integer in [0, n) without modulo bias, for 1 <= n <= 2^53. */
  below(n: number): number {
    if (!Number.isSafeInteger(n) || n < 1) throw new ValueError('Rng.below', `n must be an integer in [1, 2^53), got ${n}`);
    if (n <= 2 ** 32) {
      const limit = 2 ** 32 - (2 ** 32 % n);
      for (;;) {
        const r = this.nextUint32();
        if (r < limit) return r % n;
      }
    }
    const limit = 2 ** 53 - (2 ** 53 % n);
    for (;;) {
      const r = (this.nextUint32() >>> 11) * 2 ** 32 + this.nextUint32();
      if (r < limit) return r % n;
    }
  }

  /** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Uint32Array {
    if (!Number.isInteger(n) || n < 0 || n > 2 ** 32) throw new ValueError('Rng.permutation', `n must be an integer in [0, 2^32], got ${n}`);
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = out[i];
      out[i] = out[j];
      out[j] = tmp;
    }
    return out;
  }

  /** The generator's state, to restore with setState(). */
  getState(): number[] {
    return Array.from(this.s);
  }

  /**
   * Restores a state from getState() (four 32-bit unsigned integers, not all zero; a ValueError
   * otherwise).
   */
  setState(state: readonly number[]): void {
    if (!Array.isArray(state) || state.length !== 4 || !state.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32) || state.every((w) => w === 0)) {
      throw new ValueError('Rng.setState', 'expected four 32-bit unsigned integers, not all zero');
    }
    this.s.set(state);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
