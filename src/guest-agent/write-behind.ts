// Writes sent behind, as NFS clients do: the kernel gets its reply at once, the WRITE goes out in
// order on the channel (so any later request of this agent sees it), and its outcome is collected by
// the next write, flush (close), fsync or release of the file, where an error such as EDQUOT is
// reported. Every change of data (WRITE, truncation, FALLOCATE) is kept until a COMMIT covers it
// (unstable.ts), and sent again if the host restarted meanwhile. A bound on the bytes held keeps
// memory in check; past half of it, and on a timer, a COMMIT is sent in the background.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { Proc, WRITE_BEHIND_BYTES, WRITE_KEEP_TIMES, type ArgsOf, type ResultOf } from '../protocol/procs.js';
import { decodeReply, type ReplyOf, type Stubs } from '../protocol/stubs.js';
import { attrFromWire, verifierFromWire } from '../protocol/wire.js';
import type { AgentCounters } from './counters.js';
import type { Link } from './host-link.js';
import { ENTRY_BYTES, UnstableData, bornOf, type FileLog } from './unstable.js';

/** Posted changes of names that answer ENOENT when sent again after a host had applied them. */
const SENT_AGAIN_MAY_MISS = new Set<Proc>([Proc.REMOVE, Proc.RENAME, Proc.REMOVE_AT, Proc.RENAME_AT]);
/** Unstable data is committed at least this often (ms), as NFS clients write back. */
const COMMIT_EVERY_MS = 5000;
/** COMMITs answered by a new host instance in a row before fsync gives up (a host restarting in a loop). */
const MAX_COMMIT_ROUNDS = 8;

/** Changes of data other than WRITE, kept like writes. */
type DataChange = Proc.SETATTR | Proc.FALLOCATE;

/** Write-behind state of a file: calls in flight (of which WRITEs), the first error not yet reported, who waits. */
interface Writes { inFlight: number; data: number; error: PrismError | null; waiters: Array<() => void> }

export class WriteBehind {
  /** Per node id. */
  private readonly writes = new Map<bigint, Writes>();
  /** Changes waiting for room: woken with null when bytes are let go, with an error when a background COMMIT failed. */
  private roomWaiters: Array<(err: PrismError | null) => void> = [];
  /** Times bytes were let go (a background COMMIT that saw some wakes the waiters again when it ends). */
  private releases = 0;
  /** Data the host acknowledged and may still lose (until a COMMIT with its verifier covers it). */
  private readonly unstable = new UnstableData(
    () => { this.releases++; this.wakeRoom(null); },
    () => { setImmediate(() => this.commitBehind()); }, // the host restarted: send again what it may have lost
  );
  /** The background COMMIT in progress: resolves to its failure (EIO), or null. */
  private behind: Promise<PrismError | null> | null = null;
  private readonly timer: NodeJS.Timeout;

  /**
   * `host` and `rpc` count their calls; `rootFh` is what a COMMIT of everything names. With
   * `writebackCache` (the kernel's) a WRITE never reports an earlier one's error: the kernel would
   * turn it into EIO at close (a writeback error is kept as EIO or ENOSPC only), so it is left for
   * FLUSH and FSYNC, which report it as it is (EDQUOT). And WRITEs ask the host to leave the file's
   * times (WRITE_KEEP_TIMES): the kernel stamps them and sends them with a SETATTR when they change.
   */
  constructor(private readonly host: Link, private readonly rpc: Stubs, private readonly counters: AgentCounters, private readonly rootFh: Buffer,
    private readonly writebackCache = false) {
    // Every kept change counts ENTRY_BYTES at least: bytes > 0 whenever anything is kept or in flight.
    this.timer = setInterval(() => { if (this.unstable.bytes > 0) this.commitBehind(); }, COMMIT_EVERY_MS);
    this.timer.unref();
  }

  /** The mount ended: no more background COMMITs. */
  close(): void {
    clearInterval(this.timer);
  }

  /** Whether writes to the node are still on their way (what the host says of its size may be old). */
  writing(id: bigint): boolean {
    return this.writes.has(id);
  }

  /** How many changes of the node are on their way (0 also once an error of theirs waits to be reported). */
  inFlight(id: bigint): number {
    const w = this.writes.get(id);
    return w && !w.error ? w.inFlight : 0;
  }

  /**
   * The host answered a create with this handle, for a file born at `born` (undefined: surely a new
   * one): what was kept under the handle for another file is let go (unstable.ts).
   */
  created(fh: Buffer, born?: string): void {
    this.unstable.forget(fh, born);
  }

  /** Whether WRITEs of ours to the node are on their way (the host stamps its mtime as it applies them). */
  writingData(id: bigint): boolean {
    return (this.writes.get(id)?.data ?? 0) > 0;
  }

  /** Send a WRITE behind; resolves once it is sent, with the bytes taken. */
  async write(id: bigint, fh: Buffer, offset: number, data: Uint8Array): Promise<number> {
    if (!this.writebackCache) {
      const prev = this.writes.get(id);
      if (prev) this.takeError(id, prev);
      this.stickyError(fh);
    }
    await this.waitForRoom(data.byteLength);
    await this.notReplaying(fh);
    const w = this.writes.get(id) ?? { inFlight: 0, data: 0, error: null, waiters: [] };
    this.writes.set(id, w);
    const copy = Buffer.from(data); // the request buffer is reused once this returns
    const args: ArgsOf<Proc.WRITE> = [fh, offset, copy, this.writebackCache ? WRITE_KEEP_TIMES : 0];
    const log = this.unstable.file(fh);
    const e = this.unstable.add(log, Proc.WRITE, args, copy.length, false);
    w.inFlight++;
    w.data++;
    this.post(Proc.WRITE, args)
      // A bad reply (no verifier) throws in the first handler: caught by the next, like a failed WRITE.
      .then((r) => {
        const [attr, , verifier] = r as ResultOf<Proc.WRITE>;
        log.born ??= bornOf(attrFromWire(attr));
        this.unstable.answered(log, e, verifierFromWire(verifier));
      })
      .catch((err: Error) => {
        w.error ??= err instanceof PrismError ? err : new PrismError('EIO', err.message);
        this.unstable.failed(log, e);
      })
      .finally(() => {
        w.data--;
        if (--w.inFlight > 0) return;
        for (const wake of w.waiters.splice(0)) wake();
        if (!w.error) this.writes.delete(id);
      });
    if (this.unstable.bytes > WRITE_BEHIND_BYTES / 2) this.commitBehind();
    return copy.length;
  }

  /**
   * A metadata change the agent has answered itself (docs/agent.md, "posted metadata changes"): sent
   * behind like a WRITE, in order on the channel. Until its reply is read, `writing` is true for each
   * node it touches, so the table (not updated yet) answers nothing about them; an error the host
   * still gives (EIO, a full store) is kept for each node and reported by its next write, flush or
   * fsync (fsyncdir for a directory), and logged. Settles (never fails) once its reply is read, with
   * that error if any.
   */
  postMeta(ids: readonly bigint[], proc: Proc, args: unknown[]): Promise<PrismError | undefined> {
    const ws = ids.map((id) => {
      const w = this.writes.get(id) ?? { inFlight: 0, data: 0, error: null, waiters: [] };
      this.writes.set(id, w);
      w.inFlight++;
      return [id, w] as const;
    });
    this.counters.add('postedMeta');
    return this.post(proc, args)
      .then(() => undefined, (err: Error) => {
        // The name was there when it was posted and nobody else writes the volume: ENOENT means the
        // REMOVE or RENAME was sent again (the channel was lost) after a host had already applied it.
        if (SENT_AGAIN_MAY_MISS.has(proc) && err instanceof PrismError && err.code === 'ENOENT') return undefined;
        const e = err instanceof PrismError ? err : new PrismError('EIO', err.message);
        log.warn({ proc, err: e.message }, 'a posted metadata change failed: reported at the next fsync or close');
        for (const [, w] of ws) w.error ??= e;
        return e;
      })
      .finally(() => {
        for (const [id, w] of ws) {
          if (--w.inFlight > 0) continue;
          for (const wake of w.waiters.splice(0)) wake();
          if (!w.error && this.writes.get(id) === w) this.writes.delete(id);
        }
      });
  }

  /** A call whose reply nobody waits for now: posted on a blocking link, an ordinary call otherwise. */
  private post(proc: Proc, args: unknown[]): Promise<unknown[]> {
    return this.host.post ? this.host.post(proc, args) : this.host.call(proc, args);
  }

  /** A change of data other than WRITE, sent in order with the file's writes and kept until committed. */
  async dataChange<P extends DataChange>(fh: Buffer, proc: P, args: ArgsOf<P>): Promise<ReplyOf<P>> {
    await this.waitForRoom(0);
    await this.notReplaying(fh);
    // Kept from before it is sent, so its place among the file's writes is the order they went out.
    const log = this.unstable.file(fh);
    const e = this.unstable.add(log, proc, args, 0, false);
    if (this.unstable.bytes > WRITE_BEHIND_BYTES / 2) this.commitBehind();
    let r: unknown[];
    try {
      r = await this.host.call(proc, args);
    } catch (err) {
      this.unstable.failed(log, e);
      throw err;
    }
    this.unstable.answered(log, e, this.unstable.verifier);
    return decodeReply(proc, r);
  }

  /** Wait while the file's kept changes are being sent again (a new change must come after them). */
  private async notReplaying(fh: Buffer): Promise<void> {
    for (let f = this.unstable.file(fh); f.replaying; f = this.unstable.file(fh)) await f.replaying;
  }

  private wakeRoom(err: PrismError | null): void {
    for (const wake of this.roomWaiters.splice(0)) wake(err);
  }

  /**
   * Wait until a change of `data` bytes fits in the bound, committing in the background meanwhile.
   * A background COMMIT that fails (the host unreachable until its deadline) fails the waiting
   * changes with EIO rather than letting them wait for ever.
   */
  private async waitForRoom(data: number): Promise<void> {
    const full = () => this.unstable.bytes > 0 && this.unstable.bytes + data + ENTRY_BYTES > WRITE_BEHIND_BYTES;
    while (full()) {
      this.host.settle?.();
      void this.commitBehind();
      if (!full()) break;
      const err = await new Promise<PrismError | null>((r) => this.roomWaiters.push(r));
      if (err && full()) throw err;
    }
  }

  /** Commit in the background (memory, a host restart, the timer): one at a time; failures are retried later. */
  private commitBehind(): Promise<PrismError | null> {
    if (this.behind) return this.behind;
    const releases = this.releases;
    const behind = this.commitCovering(null).then(() => null, (e: Error) => {
      log.warn({ err: e.message }, 'background COMMIT failed');
      return new PrismError('EIO', `the data held could not be committed: ${e.message}`);
    }).then((err) => {
      // Cleared first, so that a woken writer can start the next one.
      this.behind = null;
      // Writers woken by a release meanwhile found this one running: they try again now.
      if (err || this.releases !== releases) this.wakeRoom(err);
      return err;
    });
    this.behind = behind;
    return behind;
  }

  /**
   * Make the kept changes durable: of one file (fsync of node `id`) or all. Files whose changes a
   * past host instance acknowledged are sent again first, then COMMIT; a COMMIT whose verifier does
   * not match what it should cover (the host restarted meanwhile) goes round again, and so does an
   * fsync whose file still has a change from before it that the COMMIT does not cover.
   */
  private async commitCovering(fh: Buffer | null, id?: bigint): Promise<void> {
    // The changes made so far (read once: changes made while it runs are a later commit's).
    const cutoff = this.unstable.cutoff;
    for (let round = 0; round < MAX_COMMIT_ROUNDS; round++) {
      const one = fh && this.unstable.peek(fh);
      const logs = fh ? (one ? [one] : []) : this.unstable.logs;
      for (const f of logs) await this.replayIfStale(f);
      if (fh) this.stickyError(fh);
      // Changes sent before need not be answered first: the host runs a connection's calls in the
      // order they come, so this COMMIT covers them (one round trip, not two: docs/benchmarks.md).
      // Their answers mostly come before its own and are read with it; their handlers run first.
      const sendCut = this.unstable.sendCut;
      const [verf] = await this.rpc.commit(fh ?? this.rootFh);
      await new Promise<void>((r) => setImmediate(r));
      // An fsync reports the errors of the node's writes (a reply the host deferred is waited for)
      // and the file's sticky error.
      if (id !== undefined) await this.done(id, fh!);
      this.unstable.covered(verf, sendCut);
      // Again if another host instance answered some of them (a restart): they are sent again. An
      // fsync also goes round while a change of its file from before it is kept at all: one sent
      // again after this COMMIT went out (a restart seen meanwhile started a resend in the
      // background, answered by now by the new instance) was applied after this COMMIT ran.
      const kept = fh ? this.unstable.peek(fh) : undefined;
      const again = fh ? kept !== undefined && this.unstable.uncovered(kept, cutoff) : logs.some((l) => this.unstable.lost(l, cutoff, verf));
      if (!again) return;
    }
    throw new PrismError('EIO', `the host restarted during each of ${MAX_COMMIT_ROUNDS} COMMITs: unstable data is not durable`);
  }

  /**
   * Read the replies of every posted call (a blocking link) and let their handlers run: true if
   * nothing of the node's is on its way any longer. Cheaper than an RPC the host would run after them anyway.
   */
  async caughtUp(id: bigint): Promise<boolean> {
    if (!this.host.settle) return false;
    await this.collectReplies();
    return !this.writes.has(id);
  }

  /**
   * Read the posted calls' replies that have arrived and let their handlers run, without waiting for
   * the others: what an idle agent has not read yet (no later call read it) stops being "on its way".
   */
  async arrived(): Promise<void> {
    if (!this.host.collect) return;
    this.host.collect();
    await new Promise<void>((r) => setImmediate(r));
  }

  /** On a blocking link, read the replies of posted WRITEs and let their handlers run. */
  private async collectReplies(): Promise<void> {
    if (!this.host.settle) return;
    this.host.settle();
    await new Promise<void>((r) => setImmediate(r));
  }

  /** Report (once) the file's sticky error: kept changes that could not be made durable. */
  private stickyError(fh: Buffer): void {
    const err = this.unstable.takeError(fh);
    if (err) throw err;
  }

  /**
   * Send a file's kept changes again, in order, if a past host instance acknowledged some. A file
   * the host no longer has (made less than a commit before it was killed) is let go, and a change the
   * host refuses now (EDQUOT, ...) too: either is the file's sticky error, reported by its next
   * write, flush or fsync (an fsync running now included), never a success.
   */
  private async replayIfStale(f: FileLog): Promise<void> {
    while (f.replaying) await f.replaying;
    if (!this.unstable.stale(f)) return;
    let finished!: () => void;
    f.replaying = new Promise<void>((r) => { finished = r; });
    try {
      // What was sent before is applied before what is sent again: wait for its answers first.
      if (f.unanswered > 0) this.host.settle?.();
      while (f.unanswered > 0) await new Promise<void>((r) => f.waiters.push(r));
      this.counters.add('replays');
      for (const e of [...f.entries]) {
        if (e.gone) continue; // let go meanwhile (covered, failed)
        try {
          this.unstable.resending(e);
          const r = await this.host.call(e.proc, e.args);
          this.unstable.answered(f, e, e.proc === Proc.WRITE ? decodeReply(Proc.WRITE, r)[2] : this.unstable.verifier);
        } catch (err) {
          if (err instanceof PrismError && err.code === 'ESTALE') { // the file is gone
            this.unstable.fail(f, new PrismError('EIO', 'the host restarted and lost this file: its data could not be sent again'));
            this.unstable.drop(f);
            return;
          }
          // Recorded, then let go; the rest is sent again by a later round or commit.
          this.unstable.fail(f, err instanceof PrismError ? err : new PrismError('EIO', (err as Error).message));
          this.unstable.failed(f, e);
          return;
        }
      }
    } finally {
      f.replaying = null;
      finished();
    }
  }

  /** Report (once) an error of an earlier write. */
  private takeError(id: bigint, w: Writes): void {
    const e = w.error;
    if (!e) return;
    w.error = null;
    if (w.inFlight === 0) this.writes.delete(id);
    throw e;
  }

  /**
   * Wait for the file's writes in flight; throw the first error among them, or else (given its
   * handle `fh`) its sticky error. A flush, or an fsync before it commits.
   */
  async done(id: bigint, fh: Buffer | undefined): Promise<void> {
    const w = this.writes.get(id);
    if (w) {
      if (w.inFlight > 0) this.host.settle?.();
      if (w.inFlight > 0) await new Promise<void>((r) => w.waiters.push(r));
      this.takeError(id, w);
    }
    if (fh) this.stickyError(fh);
  }

  /** What done() would report, without waiting: the first error among the replies already read. */
  arrivedError(id: bigint, fh: Buffer): void {
    const w = this.writes.get(id);
    if (w) this.takeError(id, w);
    this.stickyError(fh);
  }

  /**
   * fsync of node `id`: succeeds only once a COMMIT answered with the verifier of every kept change
   * of the file covers it, and fails with the first error of a write of it sent before.
   */
  async commit(id: bigint, fh: Buffer): Promise<void> {
    await this.commitCovering(fh, id);
  }
}
