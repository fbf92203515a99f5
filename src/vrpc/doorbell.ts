// The event-loop side of doorbell-worker.ts: an idle shared-memory channel sleeps in that thread
// (on the futex of its receive ring's head word) instead of polling on timers.
import { Worker } from 'node:worker_threads';
import type { Region, Side } from '../ring/index.js';

/** One channel's doorbell thread; sleep() resolves when a record arrives, interrupt() or stop() is called. */
export class Doorbell {
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
