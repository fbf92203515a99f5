// VRPC over shared memory: one queue pair of a region (src/ring) as a Channel, and connectShm, which
// attaches a VrpcClient over it. The event loop is never blocked: after each burst the host's channel
// sleeps on the guest's ivshmem doorbell while the guest rings it (ivshmem-bell.ts), else in a
// doorbell thread (doorbell.ts); without either it yields briefly for more and then polls on timers
// with backoff (a futex cannot be awaited). A thread that may block uses shm-sync-client.ts.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import {
  LIVE_UP, RingCorrupt, SLEEP_DOORBELL, WaitStrategy, waitReadableAsync, wakePeer, type Region, type RingConsumer, type RingProducer, type Side,
} from '../ring/index.js';
import { ChannelEvents, type Channel } from './channel.js';
import { VrpcClient, asBuffer, type ClientOptions } from './client.js';
import { Doorbell } from './doorbell.js';
import { handshake } from './hello.js';
import { IvshmemBell } from './ivshmem-bell.js';
import type { IvshmemServer } from './ivshmem-server.js';
import { openServedRegion } from './shm-region.js';

/**
 * What a queued reply costs the host besides its bytes (the array and its entry), counted against the
 * VM's budget: a flood of tiny replies must not hold much more than the budget says.
 */
const QUEUED_OVERHEAD = 128;

/**
 * With a doorbell: how long (ms) an idle channel keeps looking on each turn of the event loop before
 * it sleeps in it. Long enough for a client's next call sent right after a reply (a few µs), short
 * enough that requests a FUSE round trip apart (100 µs and more) find it asleep instead of polling:
 * 0.5 ms here used to keep the host's main thread on a core through every request.
 */
const IDLE_YIELD_MS = 0.05;

/** How long (ms) a guest with calls in flight polls for their replies before it sleeps in the doorbell. */
const EXPECT_POLL_MS = 0.5;

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
  /** With a doorbell: how long (ms) to keep looking for more messages on each loop turn before sleeping in it. Default IDLE_YIELD_MS. */
  idleYieldMs?: number;
  /** Host side: the VM's ivshmem server; while its guest rings, the channel sleeps on that doorbell (ivshmem-bell.ts). */
  ivshmem?: IvshmemServer;
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
  /** Host side, with an ivshmem server: the guest's doorbell, slept on while it rings. */
  private bell?: IvshmemBell;

  private readonly generation: number;
  /** When the last message arrived (performance.now()). */
  private quietSince = 0;
  /** Host side: each request is copied here (reused) before it is decoded. */
  private readonly scratch: Buffer | null;
  override readonly transient: boolean;
  private readonly idleYieldMs: number;

  constructor(readonly region: Region, private readonly side: Side, opts: ShmChannelOptions = {}) {
    super();
    if (opts.file) {
      this.doorbell = new Doorbell(opts.file, opts.fileIno, region, side, (err) => {
        log.warn({ file: opts.file, err: err.message }, 'doorbell thread failed: polling this region on timers');
        this.doorbell = undefined;
      });
    }
    const server = side === 'host' ? opts.ivshmem : undefined;
    let bell: IvshmemBell | undefined;
    // A guest asleep until its doorbell rings (SLEEP_DOORBELL) is interrupted through the server.
    const wake = opts.wakePeer === false ? false as const
      : server ? (word: Parameters<typeof wakePeer>[0], how: number) => { if (how === SLEEP_DOORBELL) bell?.ringGuest(); else wakePeer(word, how); } : undefined;
    const e = region.endpoints(side, 0, wake === undefined ? {} : { wake });
    this.tx = e.tx;
    this.rx = e.rx;
    if (server) this.bell = bell = new IvshmemBell(server, region, this.rx);
    this.generation = region.generation;
    this.scratch = side === 'host' ? Buffer.allocUnsafe(MAX_MESSAGE) : null;
    this.transient = side === 'guest';
    // A guest attaching after another client: what is left in the response ring is not for it.
    if (side === 'guest') while (this.rx.read());
    // The event loop cannot sleep on a futex: it sleeps in the doorbell thread, or without one yields
    // (setImmediate) for half a ms and then polls on timers backing off to idlePollMs. No synchronous
    // spin: it would hold up everything else on the loop (FUSE requests, other replies).
    this.wait = new WaitStrategy({ mode: 'poll', spinUs: opts.spinUs ?? 0, maxPollMs: opts.idlePollMs ?? 8, yieldMs: 0.5 });
    this.idleYieldMs = opts.idleYieldMs ?? IDLE_YIELD_MS;
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
          const sleeper = this.sleeper();
          if (quiet < EXPECT_POLL_MS || !sleeper) await new Promise<void>((r) => setImmediate(r));
          else await sleeper.sleep(() => this.rx.hasRecord());
          continue;
        }
        if (this.outbox.length) {
          // Replies wait for room: poll on timers (backing off) for a request or for room, never
          // spin; a peer that keeps its ring full costs a timer now and then.
          await this.wait.waitAsync(() => this.rx.hasRecord() || this.canFlush(), this.rx.headWord, this.rx.consumerFlag, 1000);
          continue;
        }
        // Idle: look at the peer's counter of our send ring too, so that rings a guest broke while
        // nothing was being sent are reset now, not when the next client stumbles on them.
        if (this.side === 'host') this.tx.freeBytes();
        // With a doorbell, sleep in it after yielding briefly (idleYieldMs): polling the loop for
        // longer takes the CPU the peer needs to send more work, on a machine of few cores.
        // Without one, poll on timers.
        const sleeper = this.sleeper();
        if (!sleeper || this.idleYieldMs > 0) {
          if (await waitReadableAsync(this.rx, this.wait, sleeper ? this.idleYieldMs : 1000)) continue;
        }
        if (sleeper && !this.outbox.length && !this.paused) await sleeper.sleep(() => this.rx.hasRecord());
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

  /** Where an idle channel sleeps now: on the guest's ivshmem doorbell while it rings, else in the doorbell thread. */
  private sleeper(): { sleep(ready: () => boolean): Promise<void> } | undefined {
    return this.bell?.usable() ? this.bell : this.doorbell;
  }

  /** The doorbell thread's counters, while it serves this channel. */
  get doorbellStats(): Readonly<{ deliveries: number; armWakes: number }> | undefined { return this.doorbell?.stats; }

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
    this.bell?.stop();
    super.finish(err);
    this.unpause?.();
  }

  close(): void { this.finish(); }
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
