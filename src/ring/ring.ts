// A single-producer / single-consumer ring of variable-length byte records in shared memory.
//
// Pure logic over an ArrayBuffer or SharedArrayBuffer: no I/O. The layout and the memory-ordering
// rules are in docs/shm-layout.md; in short:
//
//   control block (256 bytes): head   @ +0   (bytes ever committed, producer writes)
//                              pflag  @ +4   (producer asleep waiting for space: 0, 1 futex, 2 atomics)
//                              tail   @ +64  (bytes ever released, consumer writes)
//                              cflag  @ +68  (consumer asleep waiting for data)
//   data area (size bytes, a power of two): records at 8-byte aligned offsets
//       [u32 len][u32 ~len][len bytes][pad to 8]     a record
//       [u32 0xFFFFFFFF][u32 0]                       PAD: the rest of the area is unused, wrap to 0
//
// head and tail are free-running 32-bit byte counters; offset = counter & (size - 1).
// A record never straddles the end: if it does not fit before the end, a PAD covers the rest of
// the area and the record starts at offset 0. If the PAD fits but the record after it does not yet,
// the PAD is published alone, so that once the consumer has skipped it the record can start at 0:
// a payload of up to size - 8 bytes therefore always gets through, handed out as one view.
//
// The peer is untrusted. Each side keeps its own counter in a local variable (never reads it back
// from shared memory), reads the peer's counter with one Atomics.load, validates it (8-aligned,
// moves forward, never past the other end), and reads each record header exactly once into locals
// before bounds-checking it. Garbage raises RingCorrupt; the ring then stays broken (every later
// call throws the same error) until the region is reset.
import { SLEEP_NONE, wakePeer, type SharedWord, type WakeFn } from './wake.js';

export { SLEEP_ATOMICS, SLEEP_FUTEX, SLEEP_NONE, type SharedWord, type WakeFn } from './wake.js';

/** Bytes of a ring's control block. */
export const RING_CTRL_SIZE = 256;
/** Word indexes (Int32) inside the control block. */
export const HEAD = 0;
export const PRODUCER_SLEEPING = 1;
export const TAIL = 16;
export const CONSUMER_SLEEPING = 17;
export const RECORD_HEADER = 8;
export const PAD_MARK = 0xffffffff;
export const MIN_RING_SIZE = 4096;
export const MAX_RING_SIZE = 1 << 30;

/** Where one ring lives inside a buffer (byte offsets from the start of the buffer). */
export interface RingLocation {
  ctrlOffset: number;
  dataOffset: number;
  /** Data area size: a power of two, MIN_RING_SIZE..MAX_RING_SIZE. */
  size: number;
}

/** Shared memory holds something no correct peer writes. */
export class RingCorrupt extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RingCorrupt';
  }
}

export interface RingOptions {
  /**
   * How to wake a sleeping peer after commit/release. Default: wakePeer (a futex wake through the
   * addon, or Atomics.notify on a SharedArrayBuffer, as the peer's sleeping flag asks). false: never
   * wake, never even look at the peer's sleeping flag (poll mode, e.g. a ring shared with a guest,
   * where no futex crosses and a hostile guest could otherwise make us issue syscalls).
   */
  wake?: WakeFn | false;
}

export function checkRingLocation(buffer: ArrayBufferLike, loc: RingLocation): void {
  const { ctrlOffset, dataOffset, size } = loc;
  const ok =
    Number.isInteger(size) && size >= MIN_RING_SIZE && size <= MAX_RING_SIZE && (size & (size - 1)) === 0 &&
    Number.isInteger(ctrlOffset) && ctrlOffset >= 0 && ctrlOffset % 64 === 0 && ctrlOffset + RING_CTRL_SIZE <= buffer.byteLength &&
    Number.isInteger(dataOffset) && dataOffset >= 0 && dataOffset % 64 === 0 && dataOffset + size <= buffer.byteLength &&
    (dataOffset >= ctrlOffset + RING_CTRL_SIZE || dataOffset + size <= ctrlOffset);
  if (!ok) throw new RangeError(`bad ring location ${JSON.stringify(loc)} in a buffer of ${buffer.byteLength} bytes`);
}

/** Largest payload a ring of `size` bytes accepts. */
export function maxPayload(size: number): number {
  return size - RECORD_HEADER;
}

/** Bytes a record of `len` payload bytes occupies (header + payload, rounded up to 8). */
export function recordBytes(len: number): number {
  return (len + RECORD_HEADER + 7) & ~7;
}

abstract class RingEnd {
  readonly size: number;
  readonly maxPayload: number;
  protected readonly mask: number;
  protected readonly ctrl: Int32Array;
  protected readonly data: Uint8Array;
  protected readonly words: Uint32Array;
  protected readonly wake: WakeFn | undefined;
  protected broken: RingCorrupt | undefined;
  readonly headWord: SharedWord;
  readonly tailWord: SharedWord;
  readonly producerFlag: SharedWord;
  readonly consumerFlag: SharedWord;
  /** Times this end woke a sleeping peer (each a syscall, and a doorbell or an IPI for the peer). */
  wakes = 0;

  constructor(readonly buffer: ArrayBufferLike, loc: RingLocation, opts: RingOptions = {}) {
    checkRingLocation(buffer, loc);
    this.size = loc.size;
    this.mask = loc.size - 1;
    this.maxPayload = maxPayload(loc.size);
    this.ctrl = new Int32Array(buffer, loc.ctrlOffset, RING_CTRL_SIZE / 4);
    this.data = new Uint8Array(buffer, loc.dataOffset, loc.size);
    this.words = new Uint32Array(buffer, loc.dataOffset, loc.size / 4);
    this.wake = opts.wake === false ? undefined : (opts.wake ?? wakePeer);
    const w = (index: number): SharedWord => ({ i32: this.ctrl, index, byteOffset: loc.ctrlOffset + index * 4 });
    this.headWord = w(HEAD);
    this.tailWord = w(TAIL);
    this.producerFlag = w(PRODUCER_SLEEPING);
    this.consumerFlag = w(CONSUMER_SLEEPING);
  }

  /** The error that broke this ring, if any. */
  get corrupt(): RingCorrupt | undefined {
    return this.broken;
  }

  protected fail(message: string): never {
    this.broken ??= new RingCorrupt(`ring corrupt: ${message}`);
    throw this.broken;
  }

  /**
   * Constructors record bad counters instead of throwing: they run where the peer's words are first
   * seen (right after a reset, inside a close callback), and the peer must never make that throw.
   * The first operation on the ring then throws, where callers expect RingCorrupt.
   */
  protected markBroken(message: string): void {
    this.broken ??= new RingCorrupt(`ring corrupt: ${message}`);
  }

  protected check(): void {
    if (this.broken) throw this.broken;
  }

  protected wakeSleeper(word: SharedWord, flag: SharedWord): void {
    if (!this.wake) return;
    const how = Atomics.load(flag.i32, flag.index);
    if (how === SLEEP_NONE) return;
    this.wakes++;
    this.wake(word, how);
  }
}

/** The producing end: reserve a record, fill the view, commit. */
export class RingProducer extends RingEnd {
  private head: number;
  private tailSeen: number;
  private pendOff = -1;
  private pendPad = 0;
  private pendMax = 0;

  constructor(buffer: ArrayBufferLike, loc: RingLocation, opts?: RingOptions) {
    super(buffer, loc, opts);
    // Adopt the counters found in memory (a freshly initialized ring has 0 and 0), validated once.
    const head = Atomics.load(this.ctrl, HEAD) >>> 0;
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    this.head = head;
    this.tailSeen = tail;
    if ((head & 7) !== 0 || (tail & 7) !== 0 || ((head - tail) >>> 0) > this.size) {
      this.markBroken(`counters head=${head} tail=${tail} do not describe a ring of ${this.size} bytes`);
    }
  }

  /** Bytes free for records, as last seen (refreshes the consumer's tail). */
  freeBytes(): number {
    this.check();
    this.refreshTail();
    return this.size - ((this.head - this.tailSeen) >>> 0);
  }

  /**
   * Whether reserve(len) would make progress now: reserve a record, or publish the PAD that lets
   * the record start at offset 0 next time (refreshes the tail if needed). Wait on this.
   */
  canReserve(len: number): boolean {
    this.check();
    const need = this.needed(len);
    if (this.size - ((this.head - this.tailSeen) >>> 0) >= need) return true;
    this.refreshTail();
    return this.size - ((this.head - this.tailSeen) >>> 0) >= need;
  }

  /** True when the consumer has released everything committed. */
  isEmpty(): boolean {
    this.check();
    this.refreshTail();
    return this.head === this.tailSeen;
  }

  /**
   * Reserve room for a record of up to `len` bytes and return a view of shared memory to fill;
   * null when the ring is too full now (wait for space, see wait.ts). Nothing is visible to the
   * consumer until commit(). One reservation at a time.
   */
  reserve(len: number): Uint8Array | null {
    this.check();
    if (this.pendOff >= 0) throw new Error('reserve: the previous reservation is not committed');
    if (!Number.isInteger(len) || len < 0 || len > this.maxPayload) {
      throw new RangeError(`reserve: ${len} bytes; a record holds 0..${this.maxPayload} bytes in this ring`);
    }
    const rec = recordBytes(len);
    let off = this.head & this.mask;
    const toEnd = this.size - off;
    const need = rec <= toEnd ? rec : toEnd + rec;
    let free = this.size - ((this.head - this.tailSeen) >>> 0);
    if (free < need) {
      this.refreshTail();
      free = this.size - ((this.head - this.tailSeen) >>> 0);
    }
    let pad = 0;
    if (rec <= toEnd) {
      if (free < rec) return null;
    } else {
      // Not enough room before the end: a PAD covers the rest, the record starts at offset 0.
      if (free < toEnd) return null;
      this.words[off >>> 2] = PAD_MARK;
      this.words[(off >>> 2) + 1] = 0;
      if (free < toEnd + rec) {
        // The record does not fit after the PAD yet: publish the PAD alone and let the caller wait.
        this.head = (this.head + toEnd) >>> 0;
        Atomics.store(this.ctrl, HEAD, this.head | 0);
        this.wakeSleeper(this.headWord, this.consumerFlag);
        return null;
      }
      pad = toEnd;
      off = 0;
    }
    this.pendOff = off;
    this.pendPad = pad;
    this.pendMax = len;
    return this.data.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
  }

  /**
   * Publish the reserved record, `len` bytes long (default: as reserved; may be shorter). `wake`
   * false leaves a sleeping consumer asleep: the caller wakes it later (wakeConsumer).
   */
  commit(len: number = this.pendMax, wake = true): void {
    this.check();
    const off = this.pendOff;
    if (off < 0) throw new Error('commit: nothing reserved');
    if (!Number.isInteger(len) || len < 0 || len > this.pendMax) {
      throw new RangeError(`commit: ${len} bytes, reserved ${this.pendMax}`);
    }
    this.words[off >>> 2] = len;
    this.words[(off >>> 2) + 1] = ~len >>> 0;
    this.head = (this.head + this.pendPad + recordBytes(len)) >>> 0;
    this.pendOff = -1;
    // Release: the record's bytes (plain stores above) are visible before the new head.
    Atomics.store(this.ctrl, HEAD, this.head | 0);
    if (wake) this.wakeSleeper(this.headWord, this.consumerFlag);
  }

  /** Wake the consumer if it sleeps (after records committed without waking it). */
  wakeConsumer(): void {
    this.check();
    this.wakeSleeper(this.headWord, this.consumerFlag);
  }

  /** Bytes published and not consumed yet (refreshes the consumer's tail). */
  unconsumedBytes(): number {
    return this.size - this.freeBytes();
  }

  /** Drop the reservation (nothing was published). */
  abort(): void {
    this.pendOff = -1;
  }

  /** Copy `bytes` into one record. False when the ring is too full now. */
  write(bytes: Uint8Array): boolean {
    const view = this.reserve(bytes.byteLength);
    if (!view) return false;
    view.set(bytes);
    this.commit();
    return true;
  }

  /** Free bytes reserve(len) needs to make progress (see canReserve). */
  private needed(len: number): number {
    const rec = recordBytes(len);
    const toEnd = this.size - (this.head & this.mask);
    return rec <= toEnd ? rec : toEnd;
  }

  private refreshTail(): void {
    const t = Atomics.load(this.ctrl, TAIL) >>> 0;
    if (t === this.tailSeen) return;
    // The tail moves forward, stays 8-aligned, and never passes the head.
    if ((t & 7) !== 0 || ((t - this.tailSeen) >>> 0) > ((this.head - this.tailSeen) >>> 0)) {
      this.fail(`tail moved from ${this.tailSeen} to ${t} with head at ${this.head}`);
    }
    this.tailSeen = t;
  }
}

/** The consuming end: peek at the next record, use it, release it. */
export class RingConsumer extends RingEnd {
  private tail: number;
  private headSeen: number;
  private pendNext = -1;
  private pendView: Uint8Array | undefined;

  constructor(buffer: ArrayBufferLike, loc: RingLocation, opts?: RingOptions) {
    super(buffer, loc, opts);
    const head = Atomics.load(this.ctrl, HEAD) >>> 0;
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    this.tail = tail;
    this.headSeen = tail;
    if ((tail & 7) !== 0) this.markBroken(`tail ${tail} is not 8-aligned`);
    else if (!this.validHead(head)) this.markBroken(`head ${head} with tail at ${tail} in a ring of ${this.size}`);
    else this.headSeen = head;
  }

  /** Whether a record is waiting (peeks it: skips a PAD, refreshes the producer's head if needed). */
  hasRecord(): boolean {
    return this.peek() !== null;
  }

  /**
   * The next record as a view of shared memory, or null when the ring is empty. The view stays
   * valid until release(); a hostile producer can still change its bytes meanwhile, so decode it
   * once (or use read(), which copies). Calling peek() again before release() returns the same.
   */
  peek(): Uint8Array | null {
    this.check();
    if (this.pendView) return this.pendView;
    // At most two passes: a PAD (skipped here, its space released at once), then a record at 0.
    for (let pass = 0; pass < 2; pass++) {
      let avail = (this.headSeen - this.tail) >>> 0;
      if (avail === 0) {
        this.refreshHead(Atomics.load(this.ctrl, HEAD) >>> 0);
        avail = (this.headSeen - this.tail) >>> 0;
        if (avail === 0) return null;
      }
      const off = this.tail & this.mask;
      // Each header word is read exactly once; only the locals are used afterwards.
      const len = this.words[off >>> 2];
      const check = this.words[(off >>> 2) + 1];
      if (len === PAD_MARK) {
        const skip = this.size - off;
        if (check !== 0) this.fail(`PAD at ${off} has check word ${check}`);
        if (off === 0 || pass > 0) this.fail('PAD at offset 0');
        if (skip > avail) this.fail(`PAD at ${off} covers ${skip} bytes, ${avail} committed`);
        this.tail = (this.tail + skip) >>> 0;
        Atomics.store(this.ctrl, TAIL, this.tail | 0);
        this.wakeSleeper(this.tailWord, this.producerFlag);
        continue;
      }
      if (check !== (~len >>> 0)) this.fail(`record at ${off}: length ${len} with check word ${check}`);
      const rec = recordBytes(len);
      if (len > this.maxPayload || off + rec > this.size) this.fail(`record at ${off}: length ${len} crosses the end`);
      if (rec > avail) this.fail(`record at ${off} of ${rec} bytes runs past the head (${avail} committed)`);
      this.pendNext = (this.tail + rec) >>> 0;
      this.pendView = this.data.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
      return this.pendView;
    }
    return this.fail('unreachable: two PADs in a row');
  }

  /** Give the peeked record's space back to the producer. */
  release(): void {
    this.check();
    if (this.pendNext < 0) throw new Error('release: nothing peeked');
    this.tail = this.pendNext;
    this.pendNext = -1;
    this.pendView = undefined;
    // Release: our reads of the record happen before the producer may reuse its space.
    Atomics.store(this.ctrl, TAIL, this.tail | 0);
    this.wakeSleeper(this.tailWord, this.producerFlag);
  }

  /** The next record copied out of shared memory (and released), or null when empty. */
  read(): Uint8Array | null {
    const view = this.peek();
    if (!view) return null;
    const copy = view.slice();
    this.release();
    return copy;
  }

  private refreshHead(h: number): void {
    if (h === this.headSeen) return;
    if (!this.validHead(h)) this.fail(`head moved from ${this.headSeen} to ${h} with tail at ${this.tail} in a ring of ${this.size}`);
    this.headSeen = h;
  }

  /** The head moves forward, stays 8-aligned, and never laps the tail. */
  private validHead(h: number): boolean {
    const free = this.size - ((this.headSeen - this.tail) >>> 0);
    return (h & 7) === 0 && ((h - this.headSeen) >>> 0) <= free;
  }
}
