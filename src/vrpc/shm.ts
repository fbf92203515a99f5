// VRPC over shared memory: one queue pair of a region (src/ring) as a Channel. The event loop is never
// blocked for long: after each burst the channel spins briefly for more, then polls on timers with
// backoff (a futex cannot be awaited). SyncShmClient, for a thread that may block, spins then sleeps
// on the futex instead: the lowest latency, used by the benchmark and by dedicated I/O threads.
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { PrismError, fromNodeError } from '../errors.js';
import { log } from '../log.js';
import { decodeResponse, encode, encodeRequest, responseError, type Response } from '../protocol/codec.js';
import { MAX_MESSAGE, PROTOCOL_VERSION, type Proc } from '../protocol/procs.js';
import { nativeAvailable } from '../native/ivshmem.js';
import { isDeviceMemory, map, unmap } from '../native/memory.js';
import {
  LIVE_STOPPING, LIVE_UP, PID_OFFSET, Region, RingCorrupt, WaitStrategy, fitGeometry, openServedFile, ownFile,
  readBlocking, waitReadableAsync, writeBlocking, peekBlocking, type FileProblem, type RingConsumer, type RingProducer, type Side,
} from '../ring/index.js';
import { ChannelEvents, type Channel } from './channel.js';
import { CallIds, HostGone, VrpcClient, detach, handshake, type ClientOptions } from './client.js';
import { decodeHello } from './hello.js';

/** Size of a VM's VRPC region: a power of two (QEMU's ivshmem wants one), room for 1 MiB replies. */
export const REGION_SIZE = 16 * 1024 * 1024;

/**
 * What a queued reply costs the host besides its bytes (the array and its entry), counted against the
 * VM's budget: a flood of tiny replies must not hold much more than the budget says.
 */
const QUEUED_OVERHEAD = 128;

/** How long (ms) a guest with calls in flight polls for their replies before it sleeps in the doorbell. */
const EXPECT_POLL_MS = 0.5;

export function shmPath(vm: string, dir = '/dev/shm'): string {
  return `${dir}/prism-${vm}`;
}

export interface OpenRegion {
  region: Region;
  buffer: ArrayBuffer;
  close(): void;
  /** Host side: what happened to the file since (truncated, replaced, removed), if anything. */
  problem?(): FileProblem | undefined;
  /** Host side: the file's inode, for threads that map it again by name (they check it is the same file). */
  ino?: number;
}

export interface CreateRegionOptions {
  /** A group that may map the region too (QEMU running as another user): mode 0660 instead of 0600. */
  group?: number;
}

/**
 * Map a region file; the host creates (or takes over its own leftover), locks and initializes it, a
 * client attaches to it. See ownFile for what the host refuses.
 */
export function openRegion(path: string, create: boolean, opts: CreateRegionOptions = {}): OpenRegion {
  const n = nativeAvailable();
  if (!n.ok) throw new PrismError('ENOSYS', `shared memory is unavailable: ${n.reason}`);
  if (create) {
    const f = ownFile(path, {
      size: REGION_SIZE, group: opts.group,
      holder: (fd) => pidWord(fd, PID_OFFSET.host, 'host'),
      // A region of another size (an older build): whoever still maps it is told the host left.
      retire: (old) => { try { Region.attach(old).setLiveness('host', LIVE_STOPPING); } catch { /* not a region */ } },
    });
    try {
      const region = Region.create(f.buffer, fitGeometry(REGION_SIZE, 1));
      return { region, buffer: f.buffer, close: () => f.close(), problem: () => f.problem(), ino: fs.fstatSync(f.fd).ino };
    } catch (e) {
      f.close();
      throw new PrismError('EINVAL', `${path} is not a Prism region: ${(e as Error).message}`);
    }
  }
  let buffer: ArrayBuffer;
  const fd = openServedFile(path, true);
  try {
    buffer = map(fd, { guard: true }); // a file truncated under us reads as zeros (a changed generation), not SIGBUS
  } catch (e) {
    throw fromNodeError(e, `cannot map ${path}`);
  } finally {
    fs.closeSync(fd);
  }
  let region: Region;
  try {
    region = Region.attach(buffer);
  } catch (e) {
    unmap(buffer);
    throw new PrismError('EINVAL', `${path} is not a Prism region: ${(e as Error).message}`);
  }
  return { region, buffer, close: () => { unmap(buffer); } };
}

/** "pid N", as a side's liveness word in a region file says (for messages only: a guest may write it). */
export function pidWord(fd: number, offset: number, side: string): string {
  const b = Buffer.alloc(4);
  try {
    if (fs.readSync(fd, b, 0, 4, offset) === 4 && b.readUInt32LE(0) !== 0) return `${side} pid ${b.readUInt32LE(0)}`;
  } catch { /* unreadable: no name */ }
  return `${side} pid unknown`;
}

/** Attach to a region a host is serving now (EIO if it says it is not). */
function openServedRegion(path: string): OpenRegion {
  const r = openRegion(path, false);
  if (r.region.liveness('host').state !== LIVE_UP) {
    r.close();
    throw new PrismError('EIO', `no host is serving ${path}`);
  }
  return r;
}

export interface ShmChannelOptions {
  /** Whether to wake a peer that sleeps on a futex (costs one syscall per message while it sleeps). */
  wakePeer?: boolean;
  /** How long to spin for more messages after a burst before polling on timers. */
  spinUs?: number;
  /** Longest pause between polls when idle (ms). */
  idlePollMs?: number;
  /** The region's file: when given, an idle channel sleeps in a doorbell thread instead of polling. */
  file?: string;
  /** The file's inode: the doorbell thread maps `file` only if it is still this file. */
  fileIno?: number;
}

export class ShmChannel extends ChannelEvents implements Channel {
  private readonly tx: RingProducer;
  private readonly rx: RingConsumer;
  private readonly wait: WaitStrategy;
  private outbox: Uint8Array[] = [];
  /** Bytes in the outbox (replies the peer has had no room for yet). */
  private outboxBytes = 0;
  /** While paused: wakes the pump when resumed or closed. */
  private unpause: (() => void) | null = null;

  /** Dropped (back to polling on timers) if its thread fails, e.g. the file was removed meanwhile. */
  private doorbell?: Doorbell;

  private readonly generation: number;
  /** When the last message arrived (performance.now()). */
  private quietSince = 0;
  /** Host side: each request is copied here (reused) before it is decoded. */
  private readonly scratch: Buffer | null;
  override readonly transient: boolean;

  constructor(readonly region: Region, private readonly side: Side, opts: ShmChannelOptions = {}) {
    super();
    if (opts.file) {
      this.doorbell = new Doorbell(opts.file, opts.fileIno, region, side, (err) => {
        log.warn({ file: opts.file, err: err.message }, 'doorbell thread failed: polling this region on timers');
        this.doorbell = undefined;
      });
    }
    const e = region.endpoints(side, 0, opts.wakePeer === false ? { wake: false } : {});
    this.tx = e.tx;
    this.rx = e.rx;
    this.generation = region.generation;
    this.scratch = side === 'host' ? Buffer.allocUnsafe(MAX_MESSAGE) : null;
    this.transient = side === 'guest';
    // A guest attaching after another client: what is left in the response ring is not for it.
    if (side === 'guest') while (this.rx.read());
    // The event loop cannot sleep on a futex: yield (setImmediate) for half a ms, then sleep in the
    // doorbell thread, or without one poll on timers backing off to idlePollMs. No synchronous spin:
    // it would hold up everything else on the loop (FUSE requests, other replies).
    this.wait = new WaitStrategy({ mode: 'poll', spinUs: opts.spinUs ?? 0, maxPollMs: opts.idlePollMs ?? 8, yieldMs: 0.5 });
    // pump() catches everything itself; this is the last line, so that nothing a peer writes can
    // ever surface as an unhandled rejection (which ends the process).
    void this.pump().catch((e: unknown) => {
      log.error({ err: (e as Error).message }, 'shared-memory channel failed');
      this.finish(new PrismError('EIO', (e as Error).message));
    });
  }

  /** Whether the host reinitialized the region (restart or reset) since these rings were made. */
  private regionChanged(): boolean {
    return this.side === 'guest' && this.region.generation !== this.generation;
  }

  private async pump(): Promise<void> {
    // Not a single ring word is read before the constructor has returned and the owner has had a
    // chance to listen (onClose): rings a guest broke already would otherwise close unseen.
    await Promise.resolve();
    while (!this.closed) {
      try {
        // Checked before any ring word is trusted: after a reset the old counters mean nothing.
        if (this.regionChanged()) throw new RingCorrupt('the host restarted or reset the region');
        if (this.paused) {
          // Back-pressure: the peer's requests stay in its ring; only the outbox moves. Moving it may
          // resume the channel (the budget hears of the drain): then read again at once, not wait.
          this.flush();
          if (this.paused && !this.closed) await this.pausedWait();
          continue;
        }
        let n = 0;
        // Closed or paused during a yield below: not one more request from this ring.
        for (let m = this.rx.peek(); m && !this.paused && !this.closed; m = this.rx.peek()) {
          if (this.scratch) {
            // The host copies before it looks: the guest could change the bytes under it.
            const copy = this.scratch.subarray(0, m.byteLength);
            copy.set(m);
            this.rx.release();
            this.msgCb(copy);
          } else {
            // The guest trusts the host: replies are used in place (transient), then released.
            try { this.msgCb(asBuffer(m)); } finally { if (!this.closed) this.rx.release(); }
          }
          if (this.closed) return;
          if (++n % 64 === 0) await new Promise<void>((r) => setImmediate(r)); // let other work in
        }
        if (this.closed) return;
        this.flush();
        if (n > 0) this.quietSince = performance.now();
        const quiet = performance.now() - this.quietSince;
        if (this.expecting()) {
          // Replies are due (calls in flight): look on every turn of the event loop for a while;
          // a slow reply then waits in the doorbell, so that polling never starves other work.
          if (quiet < EXPECT_POLL_MS || !this.doorbell) await new Promise<void>((r) => setImmediate(r));
          else await this.doorbell.sleep(this.rx.headWord, () => this.rx.hasRecord());
          continue;
        }
        if (this.outbox.length) {
          // Replies wait for room: poll on timers (backing off) for a request or for room, never
          // spin; a peer that keeps its ring full costs a timer now and then.
          await this.wait.waitAsync(() => this.rx.hasRecord() || this.canFlush(), this.rx.headWord, this.rx.consumerFlag, 1000);
          continue;
        }
        // With a doorbell, yield for a few ms (more work usually follows) and then sleep in it;
        // without one, poll on timers.
        // Idle: look at the peer's counter of our send ring too, so that rings a guest broke while
        // nothing was being sent are reset now, not when the next client stumbles on them.
        if (this.side === 'host') this.tx.freeBytes();
        if (await waitReadableAsync(this.rx, this.wait, this.doorbell ? this.wait.yieldMs : 1000)) continue;
        if (this.doorbell && !this.outbox.length && !this.paused) await this.doorbell.sleep(this.rx.headWord, () => this.rx.hasRecord());
      } catch (e) {
        this.finish(e instanceof RingCorrupt ? new PrismError('EIO', e.message) : (e as Error));
        return;
      }
    }
  }

  /**
   * Reserve in the send ring; a ring the peer broke (or a region reset under a guest) closes the
   * channel instead of throwing, since send() runs in reply callbacks that nothing awaits.
   */
  private reserve(len: number): Uint8Array | null {
    try {
      if (this.regionChanged()) throw new RingCorrupt('the host restarted or reset the region');
      return this.tx.reserve(len);
    } catch (e) {
      if (!(e instanceof RingCorrupt)) throw e;
      this.finish(new PrismError('EIO', e.message));
      return null;
    }
  }

  private flush(): void {
    const before = this.outboxBytes;
    while (this.outbox.length) {
      const m = this.outbox[0];
      const view = this.reserve(m.byteLength);
      if (!view) break;
      view.set(m);
      this.tx.commit();
      this.outbox.shift();
      this.outboxBytes -= m.byteLength + QUEUED_OVERHEAD;
    }
    if (this.outboxBytes < before) this.drained();
  }

  private canFlush(): boolean {
    return this.outbox.length > 0 && this.tx.canReserve(this.outbox[0].byteLength);
  }

  /** Until resumed or closed; while replies wait for room, also wake to move them (timer backoff). */
  private pausedWait(): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => { if (timer) clearTimeout(timer); this.unpause = null; resolve(); };
      this.unpause = done;
      if (this.outbox.length) {
        this.pausePollMs = Math.min(this.pausePollMs * 2, 16);
        timer = setTimeout(done, this.pausePollMs);
      } else {
        this.pausePollMs = 0.5;
      }
    });
  }
  private pausePollMs = 0.5;

  pause(): void { this.paused = true; }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.pausePollMs = 0.5;
    this.unpause?.();
  }

  get queuedBytes(): number { return this.outboxBytes; }

  private enqueue(msg: Uint8Array): void {
    this.outbox.push(msg);
    this.outboxBytes += msg.byteLength + QUEUED_OVERHEAD;
  }

  /** Whether replies are awaited (set by the client): then the channel never sleeps. */
  expecting: () => boolean = () => false;

  send(msg: Uint8Array): boolean {
    if (this.closed) return false;
    if (this.side === 'guest') this.doorbell?.interrupt();
    if (msg.byteLength > MAX_MESSAGE) throw new PrismError('E2BIG', 'message too large');
    if (this.outbox.length === 0) {
      const view = this.reserve(msg.byteLength);
      if (view) { view.set(msg); this.tx.commit(); return true; }
      if (this.closed) return false;
    }
    this.enqueue(Uint8Array.from(msg)); // ring full: keep it until the peer drains
    return true;
  }

  sendParts(parts: Uint8Array[]): boolean {
    if (this.closed) return false;
    if (this.side === 'guest') this.doorbell?.interrupt();
    const len = parts.reduce((n, p) => n + p.byteLength, 0);
    if (len > MAX_MESSAGE) throw new PrismError('E2BIG', 'message too large');
    const view = this.outbox.length === 0 ? this.reserve(len) : null;
    if (this.closed) return false;
    if (!view) { this.enqueue(Buffer.concat(parts, len)); return true; } // one copy, kept until the peer drains
    let at = 0;
    for (const p of parts) { view.set(p, at); at += p.byteLength; }
    this.tx.commit();
    return true;
  }


  protected override finish(err?: Error): void {
    this.doorbell?.stop();
    super.finish(err);
    this.unpause?.();
  }

  close(): void { this.finish(); }
}

/** The event-loop side of doorbell-worker.ts. */
class Doorbell {
  private readonly control = new Int32Array(new SharedArrayBuffer(8));
  private readonly worker: Worker;
  private wakeup: (() => void) | null = null;

  constructor(file: string, ino: number | undefined, region: Region, side: Side, onError: (err: Error) => void) {
    const rx = region.consumer(0, side === 'host' ? 'request' : 'response');
    this.worker = new Worker(new URL('./doorbell-worker.js', import.meta.url), {
      workerData: { file, ino, headOffset: rx.headWord.byteOffset, flagOffset: rx.consumerFlag.byteOffset, control: this.control.buffer, pollMs: 20 },
    });
    this.worker.unref();
    this.worker.on('message', () => { const w = this.wakeup; this.wakeup = null; w?.(); });
    this.worker.on('error', (err) => { onError(err); const w = this.wakeup; this.wakeup = null; w?.(); });
  }

  /** Wait until the head word moves from what it is now, or ready() (or a second passes). */
  sleep(head: { i32: Int32Array; index: number }, ready: () => boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const disarm = () => Atomics.compareExchange(this.control, 0, 1, 0) === 1;
      const timer = setTimeout(() => { if (disarm()) { this.wakeup = null; resolve(); } }, 1000);
      this.wakeup = () => { clearTimeout(timer); resolve(); };
      Atomics.store(this.control, 1, Atomics.load(head.i32, head.index));
      Atomics.store(this.control, 0, 1);
      Atomics.notify(this.control, 0);
      // A record that came before the arming does not move the head again: look once more.
      if (ready() && disarm()) { clearTimeout(timer); this.wakeup = null; resolve(); }
    });
  }

  /** Stop sleeping now (we just sent a request: its reply is due in microseconds, not worth a thread hop). */
  interrupt(): void {
    if (this.wakeup && Atomics.compareExchange(this.control, 0, 1, 0) === 1) {
      const w = this.wakeup;
      this.wakeup = null;
      w();
    }
  }

  stop(): void {
    Atomics.store(this.control, 0, 2);
    Atomics.notify(this.control, 0);
    void this.worker.terminate();
    const w = this.wakeup; this.wakeup = null; w?.();
  }
}

/** Connect to a VM's region: the client (guest agent) side. */
export async function connectShm(path: string, vm: string, opts: ClientOptions & ShmChannelOptions = {}): Promise<VrpcClient> {
  const r = openServedRegion(path);
  let ch: ShmChannel;
  try {
    ch = new ShmChannel(r.region, 'guest', opts);
  } catch (e) {
    // The rings are broken (by an earlier client of this VM): the host resets them when it notices.
    r.close();
    throw e instanceof RingCorrupt ? new PrismError('EIO', e.message) : e;
  }
  ch.onClose(() => r.close());
  try {
    await handshake(ch, vm, '', opts.handshakeMs);
  } catch (e) {
    ch.close();
    throw e;
  }
  r.region.setLiveness('guest', LIVE_UP, process.pid);
  return new VrpcClient(ch, opts);
}

/**
 * A blocking client over a region, for one thread that waits for each reply: spin, then sleep on a
 * futex ('futex') or poll with backoff ('poll'). Used by the benchmark and by the agent's I/O thread.
 * A host restart (the region's generation changes) or a host that stops fails calls with HostGone.
 */
export class SyncShmClient {
  private readonly ids = new CallIds();
  private readonly tx: RingProducer;
  private readonly rx: RingConsumer;
  private readonly wait: WaitStrategy;
  private readonly mapping: OpenRegion;
  private readonly generation: number;
  /** The region is device memory (a PCI BAR): results are copied out before `take` sees them. */
  private readonly device: boolean;

  constructor(path: string, vm: string, mode: 'futex' | 'poll' = 'futex', private readonly timeoutMs = 30_000, handshakeMs = 10_000) {
    this.mapping = openServedRegion(path);
    this.device = isDeviceMemory(path);
    const region = this.mapping.region;
    try {
      this.generation = region.generation;
      const e = region.endpoints('guest', 0);
      this.tx = e.tx;
      this.rx = e.rx;
      while (this.rx.read()); // what a previous client left unread is not ours
      this.wait = new WaitStrategy({ mode, spinUs: 50, maxPollMs: 1 });
      if (!writeBlocking(this.tx, encode(['prism-vrpc', PROTOCOL_VERSION, vm, '']), this.wait, handshakeMs)) throw new PrismError('EIO', 'host is not draining the ring');
      const deadline = Date.now() + handshakeMs;
      for (;;) {
        const reply = readBlocking(this.rx, this.wait, Math.max(0, deadline - Date.now()));
        if (!reply) throw new PrismError('EIO', 'host did not answer the handshake');
        let h;
        try { h = decodeHello(reply); } catch { continue; } // a late reply to a previous client
        if (!h.ok) throw h.error;
        break;
      }
      region.setLiveness('guest', LIVE_UP, process.pid); // names us if a second agent tries this region
    } catch (e) {
      this.mapping.close();
      throw e instanceof RingCorrupt ? new PrismError('EIO', `${path}: ${e.message}`) : e;
    }
  }

  /**
   * Call and wait; `take` sees the results in place (views of the ring; copies when the ring is
   * device memory, whose pages the kernel cannot take for a write), else they are copied.
   */
  call(proc: Proc, args?: unknown[]): unknown[];
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): T;
  call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): unknown {
    return this.guarded(() => this.callNow(proc, args, take));
  }

  /**
   * Run ring operations only on rings of the current generation, and take broken rings as the host
   * gone: a host that restarted (cleanly or killed) zeroed the counters under our idle client, and
   * a stale counter read as "ring corrupt" must lead to a reconnect, never to EIO for good.
   */
  private guarded<T>(op: () => T): T {
    if (this.mapping.region.generation !== this.generation) throw new HostGone('the host restarted or reset the region');
    try {
      return op();
    } catch (e) {
      if (e instanceof RingCorrupt) throw new HostGone(`the rings changed under this client (${e.message}): the host restarted or reset them`);
      throw e;
    }
  }

  private callNow(proc: Proc, args: unknown[], take?: (r: unknown[]) => unknown): unknown {
    const id = this.send(proc, args);
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const m = peekBlocking(this.rx, this.wait, SLICE_MS);
      if (!m) { this.check(deadline); continue; }
      let r;
      try {
        r = decodeReply(m);
        if (r.id === id && r.errno === 0) { // before release: views of the ring are valid until then
          if (!take) return detach(r.result);
          return take((this.device ? detach(r.result) : r.result) as unknown[]);
        }
        r = this.owned(r);
      } finally {
        this.rx.release();
      }
      if (r.id === id) throw responseError(r);
      this.settlePosted(r); // a posted call's reply; or one to an earlier, abandoned call
    }
  }

  private send(proc: Proc, args: unknown[]): number {
    const id = this.ids.next();
    const deadline = Date.now() + this.timeoutMs;
    const msg = encodeRequest({ id, proc, args });
    while (!writeBlocking(this.tx, msg, this.wait, SLICE_MS)) this.check(deadline);
    return id;
  }

  /** Calls sent without waiting (post), by id: told their outcome when their reply is read. */
  private readonly posted = new Map<number, (err: Error | null, result?: unknown[]) => void>();

  /**
   * Send a call and return at once; `done` is told the outcome (and the results, copied out of the
   * ring) when its reply is read, by a later call, post or settle().
   */
  post(proc: Proc, args: unknown[], done: (err: Error | null, result?: unknown[]) => void): void {
    this.guarded(() => {
      this.collect();
      this.posted.set(this.send(proc, args), done);
    });
  }

  /** Wait for the replies of every posted call. */
  settle(): void {
    this.guarded(() => this.settleNow());
  }

  private settleNow(): void {
    const deadline = Date.now() + this.timeoutMs;
    while (this.posted.size > 0) {
      const m = peekBlocking(this.rx, this.wait, SLICE_MS);
      if (!m) { this.check(deadline); continue; }
      this.settleRecord(m);
    }
  }

  /** Read the replies already there (no waiting). */
  private collect(): void {
    for (let m = this.rx.peek(); m && this.posted.size > 0; m = this.rx.peek()) this.settleRecord(m);
  }

  private settleRecord(m: Uint8Array): void {
    let r;
    try {
      r = this.owned(decodeReply(m));
    } finally {
      this.rx.release();
    }
    this.settlePosted(r);
  }

  /** A posted call's reply with its results copied out of the ring (valid after release). */
  private owned(r: Response): Response {
    return r.errno === 0 && this.posted.has(r.id) ? { ...r, result: detach(r.result) as unknown[] } : r;
  }

  private settlePosted(r: Response): void {
    const done = this.posted.get(r.id);
    if (!done) return;
    this.posted.delete(r.id);
    if (r.errno === 0) done(null, r.result as unknown[]);
    else done(responseError(r));
  }

  private beat = -1;
  private beatSeen = 0;

  /**
   * Between waits: fail if the host restarted, stopped, or stopped beating (killed: its heartbeat
   * moves every second while it lives), or the call is overdue.
   */
  private check(deadline: number): void {
    const region = this.mapping.region;
    if (region.generation !== this.generation) throw new HostGone('the host restarted or reset the region');
    const live = region.liveness('host');
    if (live.state !== LIVE_UP) throw new HostGone('the host stopped');
    const now = Date.now();
    if (live.heartbeat !== this.beat) { this.beat = live.heartbeat; this.beatSeen = now; }
    else if (now - this.beatSeen > SILENT_HOST_MS) throw new HostGone(`the host has not beaten for ${SILENT_HOST_MS} ms`);
    if (now >= deadline) throw new PrismError('EIO', `no reply from the host in ${this.timeoutMs} ms`);
  }

  close(): void { this.mapping.close(); }
}

/** How long one blocking wait lasts before the host's state is checked again (ms). */
const SLICE_MS = 100;
/** A host whose heartbeat (bumped every second) has not moved for this long is taken as gone. */
const SILENT_HOST_MS = 3000;

/** A reply read from the ring; one that does not decode means the connection is unusable. */
function decodeReply(m: Uint8Array): Response {
  try {
    return decodeResponse(asBuffer(m));
  } catch (e) {
    throw new HostGone(`the host sent a malformed reply: ${(e as Error).message}`);
  }
}

/** A Buffer over the same bytes (cbor-x then decodes byte strings as Buffers, as over TCP). */
function asBuffer(m: Uint8Array): Buffer {
  return Buffer.from(m.buffer, m.byteOffset, m.byteLength);
}

