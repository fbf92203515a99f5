// Helpers shared by the ring tests.
import { RingConsumer, RingProducer, RING_CTRL_SIZE, type RingLocation } from '../../src/ring/index.js';

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deterministic content of message `seq` of `len` bytes (seq in the first 4 bytes). */
export function fill(view: Uint8Array, seq: number): void {
  for (let i = 0; i < view.length; i++) view[i] = (seq * 31 + i * 7) & 255;
  if (view.length >= 4) new DataView(view.buffer, view.byteOffset, 4).setUint32(0, seq, true);
}

/** Whether `view` is exactly fill(·, seq). */
export function matches(view: Uint8Array, seq: number): boolean {
  let from = 0;
  if (view.length >= 4) {
    if (new DataView(view.buffer, view.byteOffset, 4).getUint32(0, true) !== seq) return false;
    from = 4;
  }
  for (let i = from; i < view.length; i++) if (view[i] !== ((seq * 31 + i * 7) & 255)) return false;
  return true;
}

/** A standalone ring (control block, then data) in a fresh buffer. */
export function makeRing(size: number, shared = false): { buffer: ArrayBufferLike; loc: RingLocation; p: RingProducer; c: RingConsumer } {
  const buffer = shared ? new SharedArrayBuffer(RING_CTRL_SIZE + size) : new ArrayBuffer(RING_CTRL_SIZE + size);
  const loc: RingLocation = { ctrlOffset: 0, dataOffset: RING_CTRL_SIZE, size };
  return { buffer, loc, p: new RingProducer(buffer, loc), c: new RingConsumer(buffer, loc) };
}
