// A blocking VRPC client over a region, for one thread that waits for each reply: the lowest latency
// (no event-loop turns), used by the benchmark and by the agent's I/O thread.
import { PrismError } from '../errors.js';
import { decodeResponse, encodeRequest, responseError, type Response } from '../protocol/codec.js';
import type { Proc } from '../protocol/procs.js';
import { isDeviceMemory } from '../native/memory.js';
import {
  LIVE_UP, LIVE_ABSENT, RingCorrupt, SLEEP_DOORBELL, SLEEP_NONE, WaitStrategy, peekBlocking, readBlocking, wakePeer, writeBlocking, type RingConsumer,
  type RingProducer, type WaitMode,
} from '../ring/index.js';
import { CallIds, HostGone, asBuffer, detach } from './client.js';
import { HelloExchange } from './hello.js';
import type { PeerDoorbell } from './ivshmem-peer.js';
import { ReplySpin } from './reply-spin.js';
import { openServedRegion, type OpenRegion } from './shm-region.js';

/**
 * A blocking client over a region, for one thread that waits for each reply: spin (as long as
 * reply-spin.ts says), then sleep on a futex ('futex'), until the host rings its doorbell (when given
 * one and the host serves it: docs/doorbell.md), or poll with backoff ('poll'). Used by the benchmark
 * and by the agent's I/O thread.
 * A host restart (the region's generation changes) or a host that stops fails calls with HostGone.
 */
export class SyncShmClient {
  private readonly ids = new CallIds();
  private readonly tx: RingProducer;
  private readonly rx: RingConsumer;
  private wait: WaitStrategy;
  private readonly mapping: OpenRegion;
  private readonly generation: number;
  /** The region is device memory (a PCI BAR): results are copied out before `take` sees them. */
  private readonly device: boolean;
  private readonly spin = new ReplySpin();
  /** How this client waits for replies: 'futex', 'polling', or the doorbell's kind. */
  waitsWith: string;
  /** The VM's ivshmem doorbell, once the host says it serves one (docs/doorbell.md). */
  private doorbell: PeerDoorbell | undefined;

  /**
   * `openDoorbell`: the VM's ivshmem doorbell, opened after the handshake (in a guest, only if the host
   * says it serves the device), then used to ring the host and wait for its interrupts; the client
   * closes it.
   */
  constructor(path: string, vm: string, mode: 'futex' | 'poll' = 'futex', private readonly timeoutMs = 30_000, handshakeMs = 10_000, openDoorbell?: () => PeerDoorbell | undefined) {
    this.mapping = openServedRegion(path);
    this.device = isDeviceMemory(path);
    const region = this.mapping.region;
    try {
      this.generation = region.generation;
      // The host asleep on its doorbell (SLEEP_DOORBELL) is rung; otherwise woken as its flag says.
      const e = region.endpoints('guest', 0, openDoorbell ? { wake: (word, how) => { if (how === SLEEP_DOORBELL) this.doorbell?.ring(); else wakePeer(word, how); } } : undefined);
      this.tx = e.tx;
      this.rx = e.rx;
      while (this.rx.read()); // what a previous client left unread is not ours
      this.wait = new WaitStrategy({ mode, spinUs: 50, maxPollMs: 1 });
      this.waitsWith = mode === 'poll' ? 'polling' : mode;
      const hello = new HelloExchange(vm, '');
      if (!writeBlocking(this.tx, hello.request, this.wait, handshakeMs)) throw new PrismError('EIO', 'host is not draining the ring');
      const deadline = Date.now() + handshakeMs;
      for (;;) {
        const reply = readBlocking(this.rx, this.wait, Math.max(0, deadline - Date.now()));
        if (!reply) throw new PrismError('EIO', 'host did not answer the handshake');
        if (hello.receive(reply)) break; // else a late reply to a previous client
      }
      region.setLiveness('guest', LIVE_UP, process.pid); // names us if a second agent tries this region
      // A guest's device is used only while this host serves it (QEMU may be connected to an earlier
      // host); an agent on the host's kernel has just connected to this host's server itself.
      const bell = openDoorbell?.();
      if (bell && (bell.connectedNow || region.doorbell('host'))) this.doorbell = bell;
      else bell?.close();
      if (this.doorbell) {
        this.wait = new WaitStrategy({ mode: 'interrupt', line: this.doorbell, spinUs: 50 });
        this.waitsWith = this.doorbell.kind;
        region.setDoorbell('guest', true); // from now on the host may sleep until we ring
      }
    } catch (e) {
      this.mapping.close();
      this.doorbell?.close();
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
    if (this.closed) throw new HostGone('this connection to the host was dropped');
    if (this.mapping.region.generation !== this.generation) throw new HostGone('the host restarted or reset the region');
    try {
      return op();
    } catch (e) {
      if (e instanceof RingCorrupt) throw new HostGone(`the rings changed under this client (${e.message}): the host restarted or reset them`);
      // A reply's callback found the host gone and dropped this connection while `op` ran (its rings
      // are unmapped now): the caller goes on with the next connection.
      if (this.closed) throw new HostGone('this connection to the host was dropped while in use');
      throw e;
    }
  }

  private callNow(proc: Proc, args: unknown[], take?: (r: unknown[]) => unknown): unknown {
    // The host's doorbell armed the request ring's consumer flag: it sleeps, and our request wakes it.
    const hostAsleep = Atomics.load(this.tx.consumerFlag.i32, this.tx.consumerFlag.index) !== SLEEP_NONE;
    const sent = performance.now();
    const id = this.send(proc, args);
    const spinMs = this.spin.spinMs(proc, hostAsleep);
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const m = peekBlocking(this.rx, this.wait, SLICE_MS, spinMs);
      if (!m) { this.check(deadline); continue; }
      let r;
      try {
        r = decodeReply(m);
        if (r.id === id) this.spin.learn(proc, performance.now() - sent, hostAsleep);
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

  /** Send a request; `wake` false leaves a sleeping host asleep (see post). */
  private send(proc: Proc, args: unknown[], wake = true): number {
    const id = this.ids.next();
    const deadline = Date.now() + this.timeoutMs;
    const msg = encodeRequest({ id, proc, args });
    while (!writeBlocking(this.tx, msg, this.wait, SLICE_MS, wake)) this.check(deadline);
    if (wake) this.wakeLater = false;
    return id;
  }

  /** Times this client woke the sleeping host. */
  get hostWakes(): number {
    return this.tx.wakes;
  }

  /** A post left the host asleep: it is woken by the next call, by settle(), or by the timer set. */
  private wakeLater = false;
  private wakeTimer: NodeJS.Timeout | undefined;

  /**
   * Wake a host that sleeps with posts in its ring: at once when they pile up (POST_WAKE_BYTES),
   * else within POST_WAKE_MS, unless a call or settle() has woken it meanwhile.
   */
  private wakeForPosts(): void {
    if (this.tx.unconsumedBytes() >= POST_WAKE_BYTES) {
      this.tx.wakeConsumer();
      this.wakeLater = false;
      return;
    }
    this.wakeLater = true;
    this.wakeTimer ??= setTimeout(() => {
      this.wakeTimer = undefined;
      if (!this.wakeLater || this.closed || this.mapping.region.generation !== this.generation) return;
      this.wakeLater = false;
      try {
        this.tx.wakeConsumer();
      } catch {
        // Rings broken under us: the next call or settle() finds the host gone and reconnects.
      }
    }, POST_WAKE_MS).unref();
  }

  /** Calls sent without waiting (post), by id: told their outcome when their reply is read. */
  private readonly posted = new Map<number, (err: Error | null, result?: unknown[]) => void>();

  /**
   * Send a call and return at once; `done` is told the outcome (and the results, copied out of the
   * ring) when its reply is read, by a later call, post or settle(). A sleeping host is not woken
   * for each post (wakeForPosts): nobody waits for its reply, and a wake costs both sides 15-30 µs
   * here and puts the host on the second core while the caller and this thread share the other
   * (docs/benchmarks.md, "Issue 13, ninth round").
   */
  post(proc: Proc, args: unknown[], done: (err: Error | null, result?: unknown[]) => void): void {
    this.guarded(() => {
      this.collect();
      this.posted.set(this.send(proc, args, false), done);
      this.wakeForPosts();
    });
  }

  /** Wait for the replies of every posted call. */
  settle(): void {
    this.guarded(() => this.settleNow());
  }

  private settleNow(): void {
    if (this.wakeLater && this.posted.size > 0) {
      this.wakeLater = false;
      this.tx.wakeConsumer();
    }
    const deadline = Date.now() + this.timeoutMs;
    while (this.posted.size > 0) {
      const m = peekBlocking(this.rx, this.wait, SLICE_MS);
      if (!m) { this.check(deadline); continue; }
      this.settleRecord(m);
    }
  }

  /** Read the replies of posted calls that are already there, without waiting for others. */
  collectArrived(): void {
    this.guarded(() => this.collect());
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

  private closed = false;

  /** Tell the host of an answer of the metadata table, or a miss (its metrics count them). */
  countMetaAnswer(hit: boolean): void {
    if (!this.closed) this.mapping.region.countMetaAnswer(hit);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.wakeTimer);
    // The host must not wait for rings from a client that is gone (a next one says again), nor count
    // its agent as there (a VM's volume would stay "mounted": volume rm, host vm rm refuse).
    const region = this.mapping.region;
    if (region.generation === this.generation) {
      region.setDoorbell('guest', false);
      if (region.liveness('guest').pid === process.pid) region.setLiveness('guest', LIVE_ABSENT);
    }
    this.mapping.close();
    this.doorbell?.close();
  }

}

/** How long one blocking wait lasts before the host's state is checked again (ms). */
const SLICE_MS = 100;
/** A host left asleep with posts in its ring is woken within this (ms)... */
const POST_WAKE_MS = 2;
/** ...or at once when they hold this many bytes (a stream of WRITEs: the host works beside us). */
const POST_WAKE_BYTES = 64 << 10;
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
