// The event-loop side of doorbell-worker.ts: an idle shared-memory channel sleeps in that thread
// (on the futex of its receive ring's head word) instead of polling on timers.
import { Worker } from 'node:worker_threads';
import { SLEEP_FUTEX, SLEEP_NONE, wakePeer, type Region, type RingConsumer, type Side } from '../ring/index.js';

/** One channel's doorbell thread; sleep() resolves when a record arrives, interrupt() or stop() is called. */
export class Doorbell {
  /** [0] 0 busy / 1 armed / 2 stop, [1] the head seen when armed, [2] 1 while the peer is polled (see the worker). */
  private readonly control = new Int32Array(new SharedArrayBuffer(12));
  private readonly worker: Worker;
  private readonly rx: RingConsumer;
  private wakeup: (() => void) | null = null;
  /** Counted for tests and profiles: records the thread handed over, and armings that had to wake it. */
  readonly stats = { deliveries: 0, armWakes: 0 };

  constructor(file: string, ino: number | undefined, region: Region, side: Side, onError: (err: Error) => void) {
    this.rx = region.consumer(0, side === 'host' ? 'request' : 'response');
    Atomics.store(this.control, 2, 1); // polled until it has woken us once
    this.worker = new Worker(new URL('./doorbell-worker.js', import.meta.url), {
      workerData: { file, ino, headOffset: this.rx.headWord.byteOffset, flagOffset: this.rx.consumerFlag.byteOffset, control: this.control.buffer, pollMs: 20 },
    });
    this.worker.unref();
    this.worker.on('message', () => { this.stats.deliveries++; const w = this.wakeup; this.wakeup = null; w?.(); });
    this.worker.on('error', (err) => { onError(err); this.disarm(); const w = this.wakeup; this.wakeup = null; w?.(); });
  }

  /** Take back an arming the thread has not used; true if it was still armed. */
  private disarm(): boolean {
    if (Atomics.compareExchange(this.control, 0, 1, 0) !== 1) return false;
    const f = this.rx.consumerFlag;
    Atomics.store(f.i32, f.index, SLEEP_NONE);
    return true;
  }

  /** Wait until the receive ring's head moves from what it is now, or ready() (or a second passes). */
  sleep(ready: () => boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => { if (this.disarm()) { this.wakeup = null; resolve(); } }, 1000);
      this.wakeup = () => { clearTimeout(timer); resolve(); };
      const { headWord: head, consumerFlag: f } = this.rx;
      Atomics.store(this.control, 1, Atomics.load(head.i32, head.index));
      Atomics.store(this.control, 0, 1);
      // The producer wakes the thread's futex from now on (ring.ts: commit reads this flag).
      Atomics.store(f.i32, f.index, SLEEP_FUTEX);
      // Only a thread that waits on the control word needs waking to see the arming.
      if (Atomics.load(this.control, 2) === 1) { this.stats.armWakes++; Atomics.notify(this.control, 0); }
      // A record that came before the flag was set was not woken for: look once more.
      if (ready() && this.disarm()) { clearTimeout(timer); this.wakeup = null; resolve(); }
    });
  }

  /** Stop sleeping now (we just sent a request: its reply is due in microseconds, not worth a thread hop). */
  interrupt(): void {
    if (this.wakeup && this.disarm()) {
      const w = this.wakeup;
      this.wakeup = null;
      w();
    }
  }

  stop(): void {
    this.disarm();
    Atomics.store(this.control, 0, 2);
    Atomics.notify(this.control, 0);
    wakePeer(this.rx.headWord, SLEEP_FUTEX); // a thread asleep on the head word
    void this.worker.terminate();
    const w = this.wakeup; this.wakeup = null; w?.();
  }
}
