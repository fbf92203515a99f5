// Buffers for partially written blocks (dirty-blocks.ts), pooled per size. Fresh allocations of these
// sizes are slow (each is its own ArrayBuffer, and large ones fault pages on first use); allocating and
// zeroing 64 KiB per small write dominated small-file imports.

/** Buffers given back, per size; at most POOL_DEPTH of each size are kept. */
const pools = new Map<number, Buffer[]>();
const POOL_DEPTH = 256;

/** A buffer of exactly `size` bytes, contents undefined. */
export function takeBuffer(size: number): Buffer {
  return pools.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}

/** Give a buffer back for reuse (the caller must not touch it after); small ones are left to the GC. */
export function giveBuffer(b: Buffer): void {
  if (b.length < 4096) return;
  let pool = pools.get(b.length);
  if (!pool) { pool = []; pools.set(b.length, pool); }
  if (pool.length < POOL_DEPTH) pool.push(b);
}
