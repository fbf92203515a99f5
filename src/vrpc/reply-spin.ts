// How long a blocking client spins for a reply before it sleeps: only as long as recent replies of
// the same procedure took while the host was awake, and not at all when the host was asleep in its
// doorbell (the reply then waits for two thread wake-ups on the host: tens of µs at least). On a
// machine of few cores a spin that does not catch the reply takes the CPU the host needs to send it.

/** The longest spin (ms): beyond it a futex sleep and wake (about 20 µs here) costs less. */
export const MAX_SPIN_MS = 0.05;
/** Procedure numbers tracked one by one; others share the last slot. */
const SLOTS = 64;

export class ReplySpin {
  /** Per procedure: a moving average of reply times (ms) with the host awake; 0 = none seen yet. */
  private readonly recent = new Float64Array(SLOTS);

  /** The spin for a call of `proc` sent while the host was asleep or not. */
  spinMs(proc: number, hostAsleep: boolean): number {
    if (hostAsleep) return 0;
    const r = this.recent[Math.min(proc, SLOTS - 1)];
    if (r === 0) return MAX_SPIN_MS; // learn what it takes
    // A little longer than it usually takes, if that is short enough to be worth spinning for.
    return r <= MAX_SPIN_MS ? Math.min(MAX_SPIN_MS, r * 1.5 + 0.005) : 0;
  }

  /** A reply came `ms` after the call (while the host was awake, else it says nothing of the host). */
  learn(proc: number, ms: number, hostAsleep: boolean): void {
    if (hostAsleep) return;
    const i = Math.min(proc, SLOTS - 1);
    const r = this.recent[i];
    this.recent[i] = r === 0 ? ms : r * 0.875 + ms * 0.125;
  }
}
