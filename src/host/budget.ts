// The per-VM resource budget and the limits before authentication (docs/resource-model.md): the one
// place that decides when the host stops reading a VM or drops a connection. The transports only
// pause and resume (src/vrpc/channel.ts); serveChannel only reports requests starting and ending.
//
// A VM that spends its budget is not failed: the host stops reading its ring or socket, so its own
// further requests wait on its side (its ring fills, its socket's buffers fill, its writes block),
// and reading resumes when its replies drain. Other VMs never wait for it.
import { RateLimitedLog, log } from '../log.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import type { Channel } from '../vrpc/channel.js';
import type { ServeBudget } from '../vrpc/server.js';

export interface BudgetLimits {
  /** Requests read from the VM and not answered yet, deferred replies included (metadata-share waits). */
  maxInFlight: number;
  /** Reply bytes held in the host for the VM (TCP: the socket's user-space queue; shm: the outbox). */
  maxQueuedBytes: number;
  /** Requests taken from one VM in one turn of the event loop before the other VMs get theirs. */
  sliceRequests: number;
  /** Time (ms) the VM's requests may hold the event loop in one turn before the other VMs get theirs. */
  sliceMs: number;
  /** TCP connections one VM may hold at once (a shared-memory region is one channel). */
  maxConnections: number;
  /** A request that holds the event loop longer than this (ms) is logged (work per request is bounded by the store). */
  slowRequestMs: number;
  /**
   * Share of the event loop (over LoopShare's window) a VM may take while other VMs are being
   * served; then it waits for the next window. A VM alone may take it all.
   */
  maxLoopShare: number;
}

export const DEFAULT_BUDGET: Readonly<BudgetLimits> = {
  maxInFlight: 256,
  // Room for several 1 MiB READ replies in flight to a VM that reads at its own pace.
  maxQueuedBytes: 8 * 1024 * 1024,
  sliceRequests: 64,
  sliceMs: 1,
  maxConnections: 16,
  slowRequestMs: 100,
  maxLoopShare: 0.5,
};

export interface PreAuthLimits {
  /** Largest frame accepted before the hello is accepted (a hello is under 400 bytes). */
  maxFrame: number;
  /** Connections that may be waiting for their hello at once; a new one pushes out the oldest. */
  maxPending: number;
  /** How long a connection has to send its hello (ms). */
  handshakeMs: number;
}

export const DEFAULT_PREAUTH: Readonly<PreAuthLimits> = { maxFrame: 4096, maxPending: 64, handshakeMs: 5000 };

/** What the host counts for one VM (for tests and status). */
export interface BudgetStats {
  inFlight: number;
  queuedBytes: number;
  /** Times the host stopped reading the VM because it held too much (not counting turn slices). */
  pauses: number;
  peakInFlight: number;
  peakQueuedBytes: number;
  slowRequests: number;
  /** Turns the VM waited for because it had had more than its share of the loop. */
  holds: number;
}

/**
 * Host-wide: how much of the event loop each VM has had in the current window, so that a VM that
 * keeps the loop busy cannot keep it from the others (time it holds the loop: decode, handler, reply).
 */
export class LoopShare {
  private start = performance.now();
  private used = new Map<VmBudget, number>();
  /** VMs served in the previous window (so "others are active" does not flicker at a window's start). */
  private before = new Set<VmBudget>();

  constructor(readonly windowMs = 50) {}

  private roll(now: number): void {
    if (now - this.start < this.windowMs) return;
    this.before = new Set(this.used.keys());
    this.used.clear();
    this.start = now;
  }

  record(vm: VmBudget, ms: number): void {
    this.roll(performance.now());
    this.used.set(vm, (this.used.get(vm) ?? 0) + ms);
  }

  /** How long (ms) `vm` must wait before its next turn: 0 unless it is over its share while others are served. */
  holdMs(vm: VmBudget, maxShare: number): number {
    const now = performance.now();
    this.roll(now);
    if ((this.used.get(vm) ?? 0) <= maxShare * this.windowMs) return 0;
    let others = false;
    for (const v of this.used.keys()) if (v !== vm) { others = true; break; }
    if (!others) for (const v of this.before) if (v !== vm) { others = true; break; }
    return others ? Math.max(0, this.start + this.windowMs - now) : 0;
  }
}

/** One VM's budget, shared by every channel it is served on. */
export class VmBudget {
  readonly limits: Readonly<BudgetLimits>;
  private inFlight = 0;
  private readonly channels = new Set<Channel>();
  private connections = 0;
  private paused = false;
  /** Requests taken this turn of the event loop, and the callback that ends the turn. */
  private burst = 0;
  private turnMs = 0;
  private turn: NodeJS.Immediate | NodeJS.Timeout | undefined;
  private readonly slowLog = new RateLimitedLog();
  /** What it has done so far; what it holds now is added by snapshot(). */
  private readonly stats: BudgetStats = { inFlight: 0, queuedBytes: 0, pauses: 0, peakInFlight: 0, peakQueuedBytes: 0, slowRequests: 0, holds: 0 };

  constructor(readonly vm: string, limits: Partial<BudgetLimits> = {}, private readonly share?: LoopShare) {
    this.limits = { ...DEFAULT_BUDGET, ...limits };
  }

  /**
   * Serve `ch` under this budget: the returned counter goes to serveChannel. Null when it is a TCP
   * connection (`connection`) and the VM already holds maxConnections.
   */
  attach(ch: Channel, connection: boolean): ServeBudget | null {
    if (connection && this.connections >= this.limits.maxConnections) return null;
    if (connection) this.connections++;
    this.channels.add(ch);
    ch.onDrain(() => this.check());
    ch.onClose(() => {
      if (!this.channels.delete(ch)) return;
      if (connection) this.connections--;
      this.check();
    });
    if (this.paused) ch.pause();
    return {
      begin: () => this.begin(),
      end: () => this.end(),
      spent: (proc, ms) => this.spent(proc, ms),
    };
  }

  private begin(): void {
    this.inFlight++;
    if (this.inFlight > this.stats.peakInFlight) this.stats.peakInFlight = this.inFlight;
    // A turn ends when the event loop comes round: then the VM may take another slice.
    this.burst++;
    this.turn ??= setImmediate(() => this.endTurn());
    if (this.inFlight >= this.limits.maxInFlight || this.burst >= this.limits.sliceRequests) this.check();
  }

  /** The event loop came round: a new slice, unless the VM has had more than its share of late. */
  private endTurn(): void {
    const hold = this.share?.holdMs(this, this.limits.maxLoopShare) ?? 0;
    if (hold > 0) {
      this.stats.holds++;
      this.turn = setTimeout(() => this.endTurn(), hold);
      return;
    }
    this.turn = undefined;
    this.burst = 0;
    this.turnMs = 0;
    this.check();
  }

  private end(): void {
    this.inFlight--;
    this.check(); // its reply may have filled the queue, or this may free the VM
  }

  private spent(proc: number, ms: number): void {
    this.turnMs += ms;
    this.share?.record(this, ms);
    if (this.turnMs >= this.limits.sliceMs && !this.paused) this.check();
    if (ms < this.limits.slowRequestMs) return;
    this.stats.slowRequests++;
    this.slowLog.warn({ vm: this.vm, proc, ms: Math.round(ms) }, 'a request held the event loop');
  }

  private queued(): number {
    let n = 0;
    for (const ch of this.channels) n += ch.queuedBytes;
    return n;
  }

  /** Pause or resume the VM's channels as its holdings say. */
  private check(): void {
    const queued = this.queued();
    if (queued > this.stats.peakQueuedBytes) this.stats.peakQueuedBytes = queued;
    const L = this.limits;
    if (!this.paused) {
      const full = this.inFlight >= L.maxInFlight || queued >= L.maxQueuedBytes;
      if (!full && !this.turnSpent()) return;
      this.paused = true;
      if (full) {
        this.stats.pauses++;
        log.debug({ vm: this.vm, inFlight: this.inFlight, queued }, 'budget spent: not reading the VM until replies drain');
      }
      for (const ch of this.channels) ch.pause();
      return;
    }
    // Resume with room to spare (half the queue), so a VM at the edge does not flap every reply.
    if (this.inFlight >= L.maxInFlight || queued > L.maxQueuedBytes / 2 || this.turnSpent()) return;
    this.paused = false;
    for (const ch of this.channels) ch.resume();
  }

  /** The VM has had its share of this turn of the event loop. */
  private turnSpent(): boolean {
    return this.burst >= this.limits.sliceRequests || this.turnMs >= this.limits.sliceMs;
  }

  /** What the VM holds now. */
  snapshot(): BudgetStats {
    return { ...this.stats, inFlight: this.inFlight, queuedBytes: this.queued() };
  }
}

/** A TCP channel as the gate sees it: its frame limit can be set. */
export interface GatedChannel extends Channel {
  setMaxMessage(n: number): void;
}

/**
 * Connections that have not authenticated yet: each may send one small frame, within handshakeMs,
 * and at most maxPending wait at once (a new one pushes out the oldest, which has had the longest
 * to say hello; refusing the new one instead would let a few silent connections lock every VM out).
 */
export class PreAuthGate {
  readonly limits: Readonly<PreAuthLimits>;
  /** In arrival order (a Map iterates in insertion order): the first is the oldest. */
  private readonly pending = new Map<GatedChannel, { timer: NodeJS.Timeout; peer: string }>();
  private readonly dropLog = new RateLimitedLog();
  /** Connections closed for waiting too long or for making room. */
  dropped = 0;

  constructor(limits: Partial<PreAuthLimits> = {}) {
    this.limits = { ...DEFAULT_PREAUTH, ...limits };
  }

  /** A new connection: it may send frames of maxFrame bytes; `expire` runs if it has not authenticated in time. */
  admit(ch: GatedChannel, peer: string, expire: () => void): void {
    while (this.pending.size >= this.limits.maxPending) {
      const [oldest] = this.pending;
      this.drop(oldest![0], oldest![1].peer, 'too many connections waiting for their handshake: dropped the oldest');
    }
    ch.setMaxMessage(this.limits.maxFrame);
    const timer = setTimeout(() => {
      if (!this.pending.delete(ch)) return;
      this.dropped++;
      this.dropLog.warn({ peer, ms: this.limits.handshakeMs }, 'no handshake in time');
      expire();
    }, this.limits.handshakeMs);
    timer.unref();
    this.pending.set(ch, { timer, peer });
    ch.onClose(() => this.forget(ch));
  }

  /** The connection authenticated: full-size frames from now on, and no longer counted here. */
  authenticated(ch: GatedChannel): void {
    this.forget(ch);
    ch.setMaxMessage(MAX_MESSAGE);
  }

  get waiting(): number { return this.pending.size; }

  private drop(ch: GatedChannel, peer: string, why: string): void {
    this.forget(ch);
    this.dropped++;
    this.dropLog.warn({ peer, pending: this.limits.maxPending }, why);
    ch.close();
  }

  private forget(ch: GatedChannel): void {
    const p = this.pending.get(ch);
    if (p === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(ch);
  }
}
