// The agent's copy of unstable data, as an NFSv3 client keeps it: every change of a file's data the
// host acknowledged (WRITE with stable 0, a truncation, a FALLOCATE) is kept, with the host's write
// verifier from the reply, until a COMMIT answered with that same verifier covers it. A COMMIT with
// another verifier means the host restarted and may have lost them: the file's kept changes are sent
// again, in their order, and committed again (write-behind.ts does the sending; docs/durability.md).
import { PrismError } from '../errors.js';
import type { Proc } from '../protocol/procs.js';
import type { Attr } from '../posix/types.js';

/**
 * What a kept change costs beyond its data (the entry, its arguments): counted against the bound, so
 * that many small changes (a truncation or FALLOCATE holds no data) cannot pile up without limit.
 */
export const ENTRY_BYTES = 256;

export interface Unstable {
  proc: Proc;
  args: unknown[];
  /** Bytes held: its data plus ENTRY_BYTES (what counts against the agent's bound). */
  bytes: number;
  /** Let go (covered, failed or dropped): a replay in progress skips it. */
  gone: boolean;
  /** Order of the change among all the agent's changes. */
  seq: number;
  answered: boolean;
  /**
   * Order of its (latest) sending among all sendings: a COMMIT covers only changes sent before it
   * (the host applies one connection's calls in order) that were answered with its verifier.
   */
  sentAt: number;
  /** The verifier of the host that applied it (null: none known then). */
  verf: Buffer | null;
}

export interface FileLog {
  readonly key: string;
  readonly fh: Buffer;
  readonly entries: Unstable[];
  /** Sent, not answered yet. */
  unanswered: number;
  waiters: Array<() => void>;
  /** Set while its changes are being sent again: new changes wait, so order is kept. */
  replaying: Promise<void> | null;
  /**
   * Kept changes that could not be made durable (sent again to a restarted host that no longer has
   * the file, or refused then): reported by the file's next write, flush or fsync, as an NFS client's
   * sticky write error. The log is kept while it holds one.
   */
  error: PrismError | null;
  /** When the host made the file (its birth time, from a reply): tells it from a later file given its handle. */
  born?: string;
}

/** A file's birth time, from its attributes (undefined when the host did not say). */
export function bornOf(a: Attr): string | undefined {
  const [s, ns] = a.btime;
  return typeof s === 'number' && typeof ns === 'number' ? `${s}.${ns}` : undefined;
}

export class UnstableData {
  private readonly files = new Map<string, FileLog>();
  private seq = 0;
  private sends = 0;
  /** Bytes held, answered or not. */
  bytes = 0;
  /** The verifier of the last WRITE or COMMIT reply. */
  verifier: Buffer | null = null;

  /** `onRelease`: bytes were let go; `onRestart`: a reply showed a new host instance. */
  constructor(private readonly onRelease: () => void, private readonly onRestart: () => void) {}

  file(fh: Buffer): FileLog {
    const key = fh.toString('latin1');
    let f = this.files.get(key);
    if (!f) {
      f = { key, fh, entries: [], unanswered: 0, waiters: [], replaying: null, error: null };
      this.files.set(key, f);
    }
    return f;
  }

  /** The file's log, if it has one. */
  peek(fh: Buffer): FileLog | undefined {
    return this.files.get(fh.toString('latin1'));
  }

  get logs(): FileLog[] { return [...this.files.values()]; }

  /** The seq of the newest change: what an fsync starting now must see covered. */
  get cutoff(): number { return this.seq; }

  /**
   * Taken just before a COMMIT is sent: it can cover only changes sent by then, once their answers
   * are read (they come before the COMMIT's). A change sent again after the COMMIT went out is not
   * covered by it, even if the same host instance answers it.
   */
  get sendCut(): number { return this.sends; }

  /**
   * Keep a change of `data` bytes, about to be sent (or sent already: answered ones, a SETATTR
   * already replied, take the current verifier).
   */
  add(f: FileLog, proc: Proc, args: unknown[], data: number, answered: boolean): Unstable {
    const bytes = data + ENTRY_BYTES;
    const e: Unstable = { proc, args, bytes, gone: false, seq: ++this.seq, answered, sentAt: ++this.sends, verf: answered ? this.verifier : null };
    f.entries.push(e);
    this.bytes += bytes;
    if (!answered) f.unanswered++;
    return e;
  }

  /** A kept change is about to be sent again (a replay). */
  resending(e: Unstable): void {
    e.sentAt = ++this.sends;
  }

  answered(f: FileLog, e: Unstable, verf: Buffer | null): void {
    if (verf) this.saw(verf);
    e.verf = verf;
    if (!e.answered) {
      e.answered = true;
      this.settledOne(f);
    }
  }

  /** The host refused it (EDQUOT, ...): the error is reported; there is nothing to send again. */
  failed(f: FileLog, e: Unstable): void {
    if (!e.answered) {
      e.answered = true;
      this.settledOne(f);
    }
    this.remove(f, [e]);
  }

  private settledOne(f: FileLog): void {
    if (--f.unanswered === 0) for (const wake of f.waiters.splice(0)) wake();
  }

  /** A verifier seen in a reply. */
  saw(verf: Buffer): void {
    const restarted = this.verifier !== null && !this.verifier.equals(verf);
    this.verifier = verf;
    if (restarted) this.onRestart();
  }

  /** Some answered change may have been lost: applied by another host instance than the current one. */
  stale(f: FileLog): boolean {
    return f.entries.some((e) => e.answered && (e.verf === null || this.verifier === null || !e.verf.equals(this.verifier)));
  }

  /**
   * A COMMIT sent when the sendings so far were `sendCut` was answered with `verf`, and the answers
   * of what was sent before it have been read: it covers the changes sent before it and answered by
   * that same host instance. In each file, the changes up to the first one it does not cover are
   * durable and let go.
   */
  covered(verf: Buffer, sendCut: number): void {
    this.saw(verf);
    for (const f of this.files.values()) {
      let n = 0;
      while (n < f.entries.length) {
        const e = f.entries[n];
        if (!e.answered || e.sentAt > sendCut || !e.verf?.equals(verf)) break;
        n++;
      }
      if (n > 0) this.removeFirst(f, n);
      else this.prune(f);
    }
  }

  /** Forget a file's log once nothing is kept, sent or being sent again, and no error waits to be reported. */
  private prune(f: FileLog): void {
    if (f.entries.length === 0 && f.unanswered === 0 && !f.replaying && !f.error && this.files.get(f.key) === f) this.files.delete(f.key);
  }

  /** Record an error for the file's next write, flush or fsync (the first one stays). */
  fail(f: FileLog, err: PrismError): void {
    f.error ??= err;
    if (this.files.get(f.key) !== f) this.files.set(f.key, f);
  }

  /** The file's sticky error, if any: returned once, then cleared. */
  takeError(fh: Buffer): PrismError | null {
    const f = this.peek(fh);
    const err = f?.error ?? null;
    if (f && err) {
      f.error = null;
      this.prune(f);
    }
    return err;
  }

  /**
   * Changes up to cutoff answered by another host instance than the one that answered a COMMIT with
   * `verf`: it may have lost them; they are to be sent again and committed. (Ones answered by that
   * instance after the COMMIT went out are not covered by it, but not lost either: a later COMMIT covers them.)
   */
  lost(f: FileLog, cutoff: number, verf: Buffer): boolean {
    for (const e of f.entries) {
      if (e.seq > cutoff) return false; // in the order they were made
      if (e.answered && !e.verf?.equals(verf)) return true;
    }
    return false;
  }

  /** Changes up to cutoff that are answered but not yet covered. */
  uncovered(f: FileLog, cutoff: number): boolean {
    return f.entries.some((e) => e.seq <= cutoff && e.answered);
  }

  /**
   * The host answered a create with this handle, for a file born at `born` (undefined: surely a new
   * one): what is kept under the handle for a file born otherwise belonged to an earlier file (its
   * inode number reused by a host that restarted without it), never to be sent to this one.
   */
  forget(fh: Buffer, born?: string): void {
    const f = this.peek(fh);
    if (!f || (born !== undefined && (f.born === undefined || f.born === born))) return;
    this.drop(f);
    f.error = null;
    this.prune(f);
  }

  /** The file is gone on the host: its changes can never be applied. */
  drop(f: FileLog): void {
    this.removeFirst(f, f.entries.length);
  }

  /** Let go of the file's first n changes, in one splice (a COMMIT can cover 100k of them). */
  private removeFirst(f: FileLog, n: number): void {
    let freed = 0;
    for (let i = 0; i < n; i++) {
      const e = f.entries[i]!;
      e.gone = true;
      freed += e.bytes;
    }
    f.entries.splice(0, n);
    this.released(f, freed);
  }

  private remove(f: FileLog, gone: Unstable[]): void {
    let freed = 0;
    for (const e of gone) {
      if (e.gone) continue;
      const i = f.entries.lastIndexOf(e); // a WRITE in flight fails: near the end
      if (i < 0) continue;
      f.entries.splice(i, 1);
      e.gone = true;
      freed += e.bytes;
    }
    this.released(f, freed);
  }

  private released(f: FileLog, freed: number): void {
    this.bytes -= freed;
    this.prune(f);
    if (freed > 0) this.onRelease();
  }
}
