// The host's channel asleep on a guest's ivshmem doorbell: while the guest says it rings (its
// doorbell word, docs/shm-layout.md) and its QEMU is connected to the VM's ivshmem server, an idle
// channel sets its sleeping flag to SLEEP_DOORBELL and waits for the host's eventfd in the event loop:
// one wake-up per request, where the doorbell thread (doorbell.ts) needs two and polls a guest.
import { SLEEP_DOORBELL, SLEEP_NONE, type Region, type RingConsumer } from '../ring/index.js';
import type { IvshmemServer } from './ivshmem-server.js';

/** Rings that bring nothing (no record, or while the host is awake), per second, past which the doorbell is ignored for a while. */
const MAX_IDLE_RINGS = 64;
/** How long a guest that rang without cause too often is polled instead (ms). */
const IGNORE_MS = 1000;
/** Longest sleep before looking again: a guest whose agent stopped ringing (restarted, replaced) is noticed then. */
const MAX_SLEEP_MS = 1000;

export class IvshmemBell {
  private wakeup: (() => void) | null = null;
  private ready: () => boolean = () => false;
  private unwatch: () => void;
  private idleSince = 0;
  private idle = 0;
  private ignoredUntil = 0;
  private halted = false;

  constructor(private readonly server: IvshmemServer, private readonly region: Region, private readonly rx: RingConsumer) {
    this.unwatch = server.watchRings(() => this.rung());
  }

  /** Whether the channel may sleep here now: a guest is connected, says it rings, and is not being ignored. */
  usable(): boolean {
    return this.server.connected > 0 && this.region.doorbell('guest') && performance.now() >= this.ignoredUntil;
  }

  /** Until the guest rings with a record waiting, ready() holds, or MAX_SLEEP_MS pass. */
  sleep(ready: () => boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => { if (this.disarm()) resolve(); }, MAX_SLEEP_MS);
      this.ready = ready;
      this.wakeup = () => { clearTimeout(timer); resolve(); };
      const f = this.rx.consumerFlag;
      Atomics.store(f.i32, f.index, SLEEP_DOORBELL);
      // A record committed before the flag was set was not rung for: look once more.
      if (ready() && this.disarm()) { clearTimeout(timer); resolve(); }
    });
  }

  /** The guest's interrupt, for the rings' WakeFn: its flag said SLEEP_DOORBELL. */
  ringGuest(): void {
    this.server.ringGuests();
  }

  stop(): void {
    this.halted = true;
    this.unwatch();
    this.unwatch = () => {};
    const w = this.wakeup;
    if (this.disarm()) w?.();
  }

  /** Take back an arming; true if the channel was asleep here. */
  private disarm(): boolean {
    if (!this.wakeup) return false;
    this.wakeup = null;
    const f = this.rx.consumerFlag;
    Atomics.store(f.i32, f.index, SLEEP_NONE);
    return true;
  }

  private rung(): void {
    if (this.server.takeRings() === 0) return;
    const w = this.wakeup;
    if (w && this.ready()) {
      this.disarm();
      w();
      return;
    }
    // Rung for nothing: at most MAX_IDLE_RINGS a second cost a wake-up each; past that the guest's
    // rings are left unread for IGNORE_MS (the counter keeps them: one wake-up when we look again),
    // and the channel polls it as it would a guest without a doorbell.
    const now = performance.now();
    if (now - this.idleSince > 1000) { this.idleSince = now; this.idle = 0; }
    if (++this.idle <= MAX_IDLE_RINGS) return;
    this.ignoredUntil = now + IGNORE_MS;
    this.unwatch();
    this.unwatch = () => {};
    if (this.disarm()) w?.(); // the channel goes back to sleep in its doorbell thread, which polls
    setTimeout(() => { if (!this.halted) this.unwatch = this.server.watchRings(() => this.rung()); }, IGNORE_MS).unref();
  }
}
