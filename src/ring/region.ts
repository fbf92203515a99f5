// One shared region per VM: a versioned header, the control blocks of 2N rings, then their data
// areas (N queue pairs: a request ring guest->host and a response ring host->guest).
// Byte layout, version 1 (all little-endian; docs/shm-layout.md is the reference):
//
//   0    u32 magic 0x4D535250 ("PRSM")      64   u32 generation (bumped by every host init/reset)
//   4    u32 version (1)                    128  host  liveness: u32 state, u32 heartbeat, u32 pid
//   8    u32 headerSize (data starts here)  192  guest liveness: u32 state, u32 heartbeat, u32 pid
//   12   u32 queuePairs N                   208  guest metadata listener: u32 applied, u32 leaseMs,
//                                                u32 fenceAck, u32 flags (bit 0: the agent polls)
//                                           256  ring control blocks, 256 bytes each:
//   16   u64 totalSize (lo, hi)                  ring 2q = request ring of queue pair q,
//   24   u32 requestRingSize                     ring 2q+1 = its response ring
//   28   u32 responseRingSize               headerSize = align4096(256 + 2N * 256)
//   32   reserved (0) up to 63              then for q in 0..N-1: request data, response data
import {
  MAX_RING_SIZE,
  MIN_RING_SIZE,
  RING_CTRL_SIZE,
  RingConsumer,
  RingCorrupt,
  RingProducer,
  type RingLocation,
  type RingOptions,
} from './ring.js';
import { futexWait, futexWake } from '../native/futex.js';

export const REGION_MAGIC = 0x4d535250; // bytes "PRSM"
export const REGION_VERSION = 1;
export const MAX_QUEUE_PAIRS = 256;
const PAGE = 4096;

// Int32 word indexes in the header.
const W_MAGIC = 0;
const W_VERSION = 1;
const W_HEADER_SIZE = 2;
const W_QUEUE_PAIRS = 3;
const W_TOTAL_LO = 4;
const W_TOTAL_HI = 5;
const W_REQ_SIZE = 6;
const W_RESP_SIZE = 7;
const W_GENERATION = 16;
const W_HOST = 32;
const W_GUEST = 48;
const W_META_APPLIED = 52;
const W_META_LEASE = 53;
const W_META_FENCE_ACK = 54;
const W_META_FLAGS = 55;
// 56 is guest.doorbell (W_BELL)
const W_META_HITS = 57;
const W_META_MISSES = 58;
/** Each side's doorbell word (docs/shm-layout.md): 1 = it takes part in the ivshmem doorbell. */
const W_BELL: Readonly<Record<'host' | 'guest', number>> = { host: W_HOST + 3, guest: W_GUEST + 8 };
/** Listener flag: the agent polls the change log (a VM guest, nothing can wake it) rather than sleeping on a futex. */
const META_POLLS = 1;
/** The guest kernel keeps its own file sizes (writeback cache without FUSE_NOTIFY_PRUNE): no other VM may change the volume. */
const META_KEEPS_SIZES = 2;
/** Byte offsets of each side's liveness state word (LIVE_*). */
export const STATE_OFFSET: Readonly<Record<'host' | 'guest', number>> = { host: W_HOST * 4, guest: W_GUEST * 4 };
/** Byte offsets of each side's pid word (liveness), e.g. to name who holds a region's lock. */
export const PID_OFFSET: Readonly<Record<'host' | 'guest', number>> = { host: (W_HOST + 2) * 4, guest: (W_GUEST + 2) * 4 };
/** Byte offset of the guest's "metadata log records applied" word (futex-woken by the guest). */
const META_APPLIED_OFFSET = W_META_APPLIED * 4;
const RINGS_OFFSET = 256;

export type Side = 'host' | 'guest';
export type Direction = 'request' | 'response';

/** Liveness state of a side. */
export const LIVE_ABSENT = 0;
export const LIVE_UP = 1;
export const LIVE_STOPPING = 2;

export interface Geometry {
  queuePairs: number;
  /** Data bytes of each request ring (power of two). */
  requestRingSize: number;
  /** Data bytes of each response ring (power of two). */
  responseRingSize: number;
}

export interface Liveness {
  state: number;
  heartbeat: number;
  pid: number;
}

const isPow2Size = (n: number): boolean =>
  Number.isInteger(n) && n >= MIN_RING_SIZE && n <= MAX_RING_SIZE && (n & (n - 1)) === 0;

function checkGeometry(g: Geometry): void {
  if (!Number.isInteger(g.queuePairs) || g.queuePairs < 1 || g.queuePairs > MAX_QUEUE_PAIRS) {
    throw new RangeError(`queuePairs must be 1..${MAX_QUEUE_PAIRS}, not ${g.queuePairs}`);
  }
  for (const k of ['requestRingSize', 'responseRingSize'] as const) {
    if (!isPow2Size(g[k])) throw new RangeError(`${k} must be a power of two in ${MIN_RING_SIZE}..${MAX_RING_SIZE}, not ${g[k]}`);
  }
}

/** Bytes before the first data area: the header and the ring control blocks, page-aligned. */
export function headerSize(queuePairs: number): number {
  return Math.ceil((RINGS_OFFSET + 2 * queuePairs * RING_CTRL_SIZE) / PAGE) * PAGE;
}

/** Bytes a region of this geometry needs. */
export function regionSize(g: Geometry): number {
  checkGeometry(g);
  return headerSize(g.queuePairs) + g.queuePairs * (g.requestRingSize + g.responseRingSize);
}

/**
 * The largest power-of-two rings that fit `totalSize` bytes (e.g. an ivshmem region, whose size is
 * a power of two): responses (which carry READ data) get twice the request size when possible.
 */
export function fitGeometry(totalSize: number, queuePairs = 1): Geometry {
  const room = Math.floor((totalSize - headerSize(queuePairs)) / queuePairs);
  let req = MAX_RING_SIZE;
  while (req >= MIN_RING_SIZE && req * 3 > room) req /= 2;
  if (req < MIN_RING_SIZE) throw new RangeError(`${totalSize} bytes are too few for ${queuePairs} queue pairs`);
  const resp = req * 2 <= MAX_RING_SIZE ? req * 2 : req;
  return { queuePairs, requestRingSize: req, responseRingSize: resp };
}

/** The smallest power of two >= n (QEMU wants ivshmem sizes that are powers of two). */
export function pow2AtLeast(n: number): number {
  let p = PAGE;
  while (p < n) p *= 2;
  return p;
}

export class Region {
  private readonly hdr: Int32Array;

  private constructor(
    readonly buffer: ArrayBufferLike,
    readonly geometry: Readonly<Geometry>,
    readonly totalSize: number,
  ) {
    this.hdr = new Int32Array(buffer, 0, RINGS_OFFSET / 4);
  }

  /**
   * Initialize a region (the host does this): writes the header and zeroes every ring's control
   * block. The generation goes up by one from a previous valid header, else starts at 1. The magic
   * is written last, so an attaching peer never accepts a half-written header.
   */
  static create(buffer: ArrayBufferLike, g: Geometry): Region {
    const need = regionSize(g);
    if (buffer.byteLength < need) throw new RangeError(`the region needs ${need} bytes, the buffer has ${buffer.byteLength}`);
    const hdr = new Int32Array(buffer, 0, RINGS_OFFSET / 4);
    const oldGen =
      Atomics.load(hdr, W_MAGIC) === REGION_MAGIC && Atomics.load(hdr, W_VERSION) === REGION_VERSION
        ? Atomics.load(hdr, W_GENERATION) >>> 0
        : 0;
    Atomics.store(hdr, W_MAGIC, 0);
    new Uint8Array(buffer, 4, headerSize(g.queuePairs) - 4).fill(0);
    const total = buffer.byteLength;
    hdr[W_VERSION] = REGION_VERSION;
    hdr[W_HEADER_SIZE] = headerSize(g.queuePairs);
    hdr[W_QUEUE_PAIRS] = g.queuePairs;
    hdr[W_TOTAL_LO] = total % 2 ** 32 | 0;
    hdr[W_TOTAL_HI] = Math.floor(total / 2 ** 32) | 0;
    hdr[W_REQ_SIZE] = g.requestRingSize;
    hdr[W_RESP_SIZE] = g.responseRingSize;
    Atomics.store(hdr, W_GENERATION, ((oldGen + 1) >>> 0 || 1) | 0);
    Atomics.store(hdr, W_MAGIC, REGION_MAGIC);
    return new Region(buffer, { ...g }, total);
  }

  /**
   * Attach to a region some other party initialized (the guest; the host after a restart). Every
   * header field is read once and validated; garbage raises RingCorrupt, a region the host has not
   * initialized yet raises RingCorrupt with "not initialized" (retry later).
   */
  static attach(buffer: ArrayBufferLike): Region {
    if (buffer.byteLength < PAGE) throw new RingCorrupt(`region of ${buffer.byteLength} bytes is smaller than its header`);
    const hdr = new Int32Array(buffer, 0, RINGS_OFFSET / 4);
    const magic = Atomics.load(hdr, W_MAGIC) >>> 0;
    if (magic === 0) throw new RingCorrupt('region not initialized (magic is 0)');
    if (magic !== REGION_MAGIC) throw new RingCorrupt(`region magic 0x${magic.toString(16)}, expected 0x${REGION_MAGIC.toString(16)}`);
    const version = hdr[W_VERSION] >>> 0;
    const hsize = hdr[W_HEADER_SIZE] >>> 0;
    const queuePairs = hdr[W_QUEUE_PAIRS] >>> 0;
    const total = (hdr[W_TOTAL_LO] >>> 0) + (hdr[W_TOTAL_HI] >>> 0) * 2 ** 32;
    const requestRingSize = hdr[W_REQ_SIZE] >>> 0;
    const responseRingSize = hdr[W_RESP_SIZE] >>> 0;
    if (version !== REGION_VERSION) throw new RingCorrupt(`region version ${version}, this build reads ${REGION_VERSION}`);
    const g = { queuePairs, requestRingSize, responseRingSize };
    try {
      checkGeometry(g);
    } catch (e) {
      throw new RingCorrupt(`region header: ${(e as Error).message}`);
    }
    if (hsize !== headerSize(queuePairs)) throw new RingCorrupt(`region header size ${hsize}, expected ${headerSize(queuePairs)}`);
    const need = regionSize(g);
    if (total < need || total > buffer.byteLength) {
      throw new RingCorrupt(`region total size ${total}: the layout needs ${need}, the mapping has ${buffer.byteLength}`);
    }
    return new Region(buffer, g, total);
  }

  /** Where ring `dir` of queue pair `qp` lives. */
  location(qp: number, dir: Direction): RingLocation {
    const g = this.geometry;
    if (!Number.isInteger(qp) || qp < 0 || qp >= g.queuePairs) throw new RangeError(`queue pair ${qp} of ${g.queuePairs}`);
    const r = 2 * qp + (dir === 'request' ? 0 : 1);
    const pairBase = headerSize(g.queuePairs) + qp * (g.requestRingSize + g.responseRingSize);
    return {
      ctrlOffset: RINGS_OFFSET + r * RING_CTRL_SIZE,
      dataOffset: dir === 'request' ? pairBase : pairBase + g.requestRingSize,
      size: dir === 'request' ? g.requestRingSize : g.responseRingSize,
    };
  }

  /** The producing end of a ring: the guest produces requests, the host responses. */
  producer(qp: number, dir: Direction, opts?: RingOptions): RingProducer {
    return new RingProducer(this.buffer, this.location(qp, dir), opts);
  }

  /** The consuming end of a ring: the host consumes requests, the guest responses. */
  consumer(qp: number, dir: Direction, opts?: RingOptions): RingConsumer {
    return new RingConsumer(this.buffer, this.location(qp, dir), opts);
  }

  /** Ends for one side of queue pair `qp`: what it sends and what it receives. */
  endpoints(side: Side, qp: number, opts?: RingOptions): { tx: RingProducer; rx: RingConsumer } {
    return side === 'guest'
      ? { tx: this.producer(qp, 'request', opts), rx: this.consumer(qp, 'response', opts) }
      : { tx: this.producer(qp, 'response', opts), rx: this.consumer(qp, 'request', opts) };
  }

  /** The generation: changes whenever the host (re)initializes or resets the region. */
  get generation(): number {
    return Atomics.load(this.hdr, W_GENERATION) >>> 0;
  }

  /**
   * Reset every ring to empty and bump the generation (the host does this to recover from a
   * corrupt ring or a restarted guest). Both sides must drop their ring objects and make new ones;
   * a peer notices by watching `generation`.
   */
  reset(): number {
    const ctrl = new Int32Array(this.buffer, RINGS_OFFSET, (2 * this.geometry.queuePairs * RING_CTRL_SIZE) / 4);
    for (let i = 0; i < ctrl.length; i++) Atomics.store(ctrl, i, 0);
    const gen = ((this.generation + 1) >>> 0) || 1;
    Atomics.store(this.hdr, W_GENERATION, gen | 0);
    return gen;
  }

  /** A side's liveness words (each read once). */
  liveness(side: Side): Liveness {
    const b = side === 'host' ? W_HOST : W_GUEST;
    return {
      state: Atomics.load(this.hdr, b) >>> 0,
      heartbeat: Atomics.load(this.hdr, b + 1) >>> 0,
      pid: Atomics.load(this.hdr, b + 2) >>> 0,
    };
  }

  /** Announce a side's state (LIVE_UP, LIVE_STOPPING, LIVE_ABSENT) and optionally its pid. */
  setLiveness(side: Side, state: number, pid?: number): void {
    const b = side === 'host' ? W_HOST : W_GUEST;
    if (pid !== undefined) Atomics.store(this.hdr, b + 2, pid | 0);
    Atomics.store(this.hdr, b, state | 0);
  }

  /**
   * The ivshmem doorbell (docs/shm-layout.md, "Doorbell"): the host says a doorbell device of this VM
   * is connected to it (it rings a guest whose sleeping flag is SLEEP_DOORBELL, and wakes when rung);
   * the guest says it rings the host's doorbell when the host's flag is SLEEP_DOORBELL.
   */
  setDoorbell(side: Side, on: boolean): void {
    Atomics.store(this.hdr, W_BELL[side], on ? 1 : 0);
  }

  doorbell(side: Side): boolean {
    return Atomics.load(this.hdr, W_BELL[side]) === 1;
  }

  /** The guest agent's metadata listener (docs/metadata-share.md): log records applied, kernel cache lease (0: none). */
  metaListener(): { applied: number; leaseMs: number; fenceAck: number; polls: boolean; keepsSizes: boolean } {
    // The fence acknowledgement first: the guest writes it after `applied`, so what is read here is
    // at least as new as what it acknowledged the fence with.
    const fenceAck = Atomics.load(this.hdr, W_META_FENCE_ACK) >>> 0;
    const flags = Atomics.load(this.hdr, W_META_FLAGS);
    return {
      applied: Atomics.load(this.hdr, W_META_APPLIED) >>> 0,
      leaseMs: Atomics.load(this.hdr, W_META_LEASE) >>> 0,
      fenceAck,
      polls: (flags & META_POLLS) !== 0,
      keepsSizes: (flags & META_KEEPS_SIZES) !== 0,
    };
  }

  /**
   * Guest side: the last fence of its metadata table it has recovered from, whether it polls the log,
   * and whether its kernel keeps its own file sizes (see META_KEEPS_SIZES).
   */
  setMetaFenceAck(fence: number, polls: boolean, keepsSizes = false): void {
    Atomics.store(this.hdr, W_META_FLAGS, (polls ? META_POLLS : 0) | (keepsSizes ? META_KEEPS_SIZES : 0));
    Atomics.store(this.hdr, W_META_FENCE_ACK, fence | 0);
  }

  /** Guest side: announce the lease first (0 to stop listening), then each applied count as it moves. */
  setMetaLease(leaseMs: number): void {
    Atomics.store(this.hdr, W_META_LEASE, leaseMs | 0);
  }

  setMetaApplied(applied: number): void {
    Atomics.store(this.hdr, W_META_APPLIED, applied | 0);
  }

  /**
   * Host side: sleep up to `ms` while the guest's applied word still reads `seen` (may return early).
   * A futex: only for a region mapped from a shared-memory file, the agent on the host's kernel.
   */
  waitMetaApplied(seen: number, ms: number): void {
    futexWait(this.buffer as ArrayBuffer, META_APPLIED_OFFSET, seen | 0, ms);
  }

  /** Guest side: wake a host sleeping in waitMetaApplied (same kernel only: a PCI BAR has no futexes). */
  wakeMetaApplied(): void {
    futexWake(this.buffer as ArrayBuffer, META_APPLIED_OFFSET, 1);
  }

  /** Guest side: one LOOKUP/GETATTR/xattr question its metadata table answered (hit), or did not. */
  countMetaAnswer(hit: boolean): void {
    Atomics.add(this.hdr, hit ? W_META_HITS : W_META_MISSES, 1);
  }

  /** Host side: the guest's free-running counts of answers from its table (u32; the guest's word, not ours). */
  metaAnswers(): { hits: number; misses: number } {
    return { hits: Atomics.load(this.hdr, W_META_HITS) >>> 0, misses: Atomics.load(this.hdr, W_META_MISSES) >>> 0 };
  }

  /** Bump a side's heartbeat counter (call it periodically while alive). */
  heartbeat(side: Side): number {
    const b = side === 'host' ? W_HOST : W_GUEST;
    return (Atomics.add(this.hdr, b + 1, 1) + 1) >>> 0;
  }
}
