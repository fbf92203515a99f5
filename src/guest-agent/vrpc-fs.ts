// The FileSystem the agent mounts: every FUSE operation becomes a VRPC call to the host. FUSE names
// files by node id, VRPC by handle: a table maps one to the other, with the kernel's lookup counts.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { Proc } from '../protocol/procs.js';
import type { WireAttr, WireSetAttr, WireTime } from '../protocol/wire.js';
import type { Ctx, Entry, FileSystem, FuseAttr, FuseDirEntry, FuseSetAttr, FuseStatFs } from './fuse/fs.js';
import type { Time } from '../posix/types.js';
import type { MetaTable } from '../metadata-share/table.js';
import { AgentCounters } from './counters.js';
import type { Link } from './host-link.js';
import { ENTRY_BYTES, UnstableData, bornOf, verifierOf, type FileLog } from './unstable.js';

const ROOT_ID = 1n;
const DOTDOT = Buffer.from('..');
const O_TRUNC = 0o1000;
const O_EXCL = 0o200;
const READDIR_PAGE = 1024;
const MAX_COPY = 2 ** 40;
/**
 * Most bytes of written data held: sent and not answered yet, or answered but not yet covered by a
 * COMMIT (kept to be sent again if the host restarts: unstable.ts). Past half of it, a COMMIT is sent.
 */
const WRITE_BEHIND_BYTES = 64 << 20;
/** Unstable data is committed at least this often (ms), as NFS clients write back. */
const COMMIT_EVERY_MS = 5000;
/** COMMITs answered by a new host instance in a row before fsync gives up (a host restarting in a loop). */
const MAX_COMMIT_ROUNDS = 8;

interface Node {
  fh: Buffer;
  lookups: bigint;
  /** The host said it has no security.capability xattr (asked by the kernel before every write). */
  noCaps?: boolean;
  /** Open here and pinned on the host (OPEN sent, CLOSE due at the last release). */
  pinned?: boolean;
  /** Names the kernel got this node under (parent, name), so a fenced agent can make it forget them all. */
  names?: Array<[parent: bigint, name: Buffer]>;
}

/** Names remembered per node (hard links beyond this are forgotten oldest first). */
const NAMES_PER_NODE = 8;

/** What the kernel may cache from this agent: its nodes (attributes, pages) and the names it got them under. */
export interface KernelCacheKeys { nodes: bigint[]; names: Array<[parent: bigint, name: Uint8Array]> }

const CAPS = 'security.capability';

export class VrpcFs implements FileSystem {
  private readonly nodes = new Map<bigint, Node>();
  /** Open files per node (pinned on the host only when needed, see pinOpenFiles). */
  private readonly opens = new Map<bigint, number>();
  private nextFh = 1n;
  /** The volume's id, as handles carry it (bytes 1-4): the metadata table's key. */
  readonly volumeId: number;
  readonly counters: AgentCounters;

  constructor(private readonly host: Link, rootFh: Buffer, readonly rootIno: number, private readonly opts: VrpcFsOptions = {}) {
    this.nodes.set(ROOT_ID, { fh: rootFh, lookups: 1n << 62n });
    this.volumeId = rootFh.readUInt32BE(1);
    this.counters = opts.counters ?? new AgentCounters();
    this.rootFh = rootFh;
    // Every kept change counts ENTRY_BYTES at least: bytes > 0 whenever anything is kept or in flight.
    this.timer = setInterval(() => { if (this.unstable.bytes > 0) this.commitBehind(); }, COMMIT_EVERY_MS);
    this.timer.unref();
  }

  private readonly timer: NodeJS.Timeout;

  /** The mount ended: no more background COMMITs. */
  close(): void {
    clearInterval(this.timer);
  }

  private readonly rootFh: Buffer;

  /** Attach a volume: its root handle and inode number. */
  static async attach(link: Link, volume: string, opts: VrpcFsOptions = {}): Promise<VrpcFs> {
    const [fh, attr] = await link.call(Proc.ATTACH, [volume]);
    return new VrpcFs(link, Buffer.from(fh as Uint8Array), (attr as WireAttr)[0]!, opts);
  }

  private call(proc: Proc, args: unknown[]): Promise<unknown[]>;
  private call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  private call(proc: Proc, args: unknown[], take?: (r: unknown[]) => unknown): Promise<unknown> {
    this.count(proc);
    return take ? this.host.call(proc, args, take) : this.host.call(proc, args);
  }

  /** A call whose reply nobody waits for now: posted on a blocking link, an ordinary call otherwise. */
  private post(proc: Proc, args: unknown[]): Promise<unknown[]> {
    if (!this.host.post) return this.call(proc, args);
    this.count(proc);
    return this.host.post(proc, args);
  }

  private count(proc: Proc): void {
    this.counters.rpc(proc);
  }

  private nodeId(ino: number): bigint {
    return nodeIdOf(ino, this.rootIno);
  }

  /** The host's inode number of a node (the inverse of nodeId). */
  private inoOf(id: bigint): number {
    return id === ROOT_ID ? this.rootIno : id === BigInt(this.rootIno) ? 1 : Number(id);
  }

  private fh(id: bigint): Buffer {
    const n = this.nodes.get(id);
    if (!n) throw new PrismError('ESTALE', `node ${id} is not known (forgotten)`);
    return n.fh;
  }

  /** Turn a [fh, attr] result found as `name` in `parent` into an entry; `count` records the kernel's new lookup on it. */
  private entry(fh: unknown, w: unknown, parent: bigint, name: Buffer, count = true): Entry {
    const attr = toAttr(w as WireAttr);
    const id = this.nodeId(Number(attr.ino));
    let n = this.nodes.get(id);
    if (n) { if (count) n.lookups++; } else this.nodes.set(id, (n = { fh: Buffer.from(fh as Uint8Array), lookups: count ? 1n : 0n }));
    const names = (n.names ??= []);
    if (!names.some(([p, x]) => p === parent && x.equals(name))) {
      if (names.push([parent, name]) > NAMES_PER_NODE) names.shift();
    }
    return { ino: id, attr };
  }

  /**
   * Everything the kernel may cache from this agent, for a fenced agent that lost change-log records
   * and must make its kernel forget it all. What this agent itself assumed (no capabilities) goes too.
   */
  kernelCacheKeys(): KernelCacheKeys {
    const out: KernelCacheKeys = { nodes: [], names: [] };
    for (const [id, n] of this.nodes) {
      n.noCaps = undefined;
      out.nodes.push(id);
      for (const x of n.names ?? []) out.names.push(x);
    }
    return out;
  }

  remember(e: Entry): void {
    const n = this.nodes.get(e.ino);
    if (n) n.lookups++;
  }

  forget(id: bigint, nlookup: bigint): void {
    const n = this.nodes.get(id);
    if (!n || id === ROOT_ID) return;
    n.lookups -= nlookup;
    if (n.lookups <= 0n && !this.opens.has(id)) this.nodes.delete(id);
  }

  async lookup(_c: Ctx, parent: bigint, name: string): Promise<Entry> {
    const dirFh = this.fh(parent);
    const raw = bytes(name);
    const table = this.opts.shared;
    if (table) {
      // Answered from the host's table when it holds both the name and the child's attributes.
      const e = table.getEntry(this.volumeId, this.inoOf(parent), raw);
      if (e === null) {
        this.counters.add('lookupsLocal');
        throw new PrismError('ENOENT', 'no such file or directory');
      }
      const attr = e && this.sharedAttr(this.nodeId(e.ino));
      if (e && attr) {
        this.counters.add('lookupsLocal');
        return this.entry(e.fh, attr, parent, raw);
      }
      this.counters.add('lookupMisses');
    }
    const [fh, attr] = await this.call(Proc.LOOKUP, [dirFh, raw]);
    return this.entry(fh, attr, parent, raw);
  }

  async getattr(_c: Ctx, id: bigint): Promise<FuseAttr> {
    const fh = this.fh(id);
    if (this.opts.shared) {
      const attr = this.sharedAttr(id);
      if (attr) {
        this.counters.add('getattrsLocal');
        return toAttr(attr);
      }
      this.counters.add('getattrMisses');
    }
    return toAttr((await this.call(Proc.GETATTR, [fh]))[0] as WireAttr);
  }

  /** A node's attributes from the table, unless writes of ours are still on their way (the table cannot know their size yet). */
  private sharedAttr(id: bigint): WireAttr | undefined {
    if (this.writes.has(id)) return undefined;
    return this.opts.shared!.getAttr(this.volumeId, this.inoOf(id));
  }

  async setattr(_c: Ctx, id: bigint, s: FuseSetAttr): Promise<FuseAttr> {
    const t = (x: Time | 'now' | undefined): WireTime => (x === undefined ? null : x === 'now' ? true : [x[0], x[1]]);
    const w: WireSetAttr = [s.mode === undefined ? null : s.mode & 0o7777, s.uid ?? null, s.gid ?? null,
      s.size === undefined ? null : Number(s.size), t(s.atime), t(s.mtime)];
    if (w[3] === null) return toAttr((await this.call(Proc.SETATTR, [this.fh(id), w]))[0] as WireAttr);
    // A truncation changes data: kept, like a write, until committed (a resend must not undo it).
    return this.dataChange(this.fh(id), Proc.SETATTR, [this.fh(id), w], (r) => toAttr(r[0] as WireAttr));
  }

  /** A change of data other than WRITE, sent in order with the file's writes and kept until committed. */
  private async dataChange<T>(fh: Buffer, proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T> {
    await this.waitForRoom(0);
    await this.notReplaying(fh);
    // Kept from before it is sent, so its place among the file's writes is the order they went out.
    const log = this.unstable.file(fh);
    const e = this.unstable.add(log, proc, args, 0, false);
    if (this.unstable.bytes > WRITE_BEHIND_BYTES / 2) this.commitBehind();
    let r: unknown[];
    try {
      r = await this.call(proc, args);
    } catch (err) {
      this.unstable.failed(log, e);
      throw err;
    }
    this.unstable.answered(log, e, this.unstable.verifier);
    return take(r);
  }

  /** Wait while the file's kept changes are being sent again (a new change must come after them). */
  private async notReplaying(fh: Buffer): Promise<void> {
    for (let f = this.unstable.file(fh); f.replaying; f = this.unstable.file(fh)) await f.replaying;
  }

  async readlink(_c: Ctx, id: bigint): Promise<string> {
    return Buffer.from((await this.call(Proc.READLINK, [this.fh(id)]))[0] as Uint8Array).toString('latin1');
  }

  private async made(proc: Proc, parent: bigint, name: string, rest: unknown[]): Promise<Entry> {
    const raw = bytes(name);
    const [fh, attr] = await this.call(proc, [this.fh(parent), raw, ...rest]);
    this.unstable.forget(Buffer.from(fh as Uint8Array));
    return this.entry(fh, attr, parent, raw);
  }

  symlink(c: Ctx, parent: bigint, name: string, target: string): Promise<Entry> {
    return this.made(Proc.SYMLINK, parent, name, [bytes(target), c.uid, c.gid]);
  }

  mknod(c: Ctx, parent: bigint, name: string, mode: number, rdev: number): Promise<Entry> {
    return this.made(Proc.MKNOD, parent, name, [mode, rdev, c.uid, c.gid]);
  }

  mkdir(c: Ctx, parent: bigint, name: string, mode: number): Promise<Entry> {
    return this.made(Proc.MKDIR, parent, name, [mode & 0o7777, c.uid, c.gid]);
  }

  async unlink(_c: Ctx, parent: bigint, name: string): Promise<void> {
    this.pinOpenFiles();
    await this.call(Proc.REMOVE, [this.fh(parent), bytes(name)]);
  }

  async rmdir(_c: Ctx, parent: bigint, name: string): Promise<void> {
    this.pinOpenFiles();
    await this.call(Proc.RMDIR, [this.fh(parent), bytes(name)]);
  }

  async rename(_c: Ctx, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void> {
    if (flags & ~3) throw new PrismError('EINVAL', 'only RENAME_NOREPLACE and RENAME_EXCHANGE are supported');
    this.pinOpenFiles();
    await this.call(Proc.RENAME, [this.fh(parent), bytes(name), this.fh(newParent), bytes(newName), flags]);
  }

  async link(_c: Ctx, id: bigint, newParent: bigint, newName: string): Promise<Entry> {
    const fh = this.fh(id);
    const raw = bytes(newName);
    const [attr] = await this.call(Proc.LINK, [fh, this.fh(newParent), raw]);
    return this.entry(fh, attr, newParent, raw);
  }

  async open(_c: Ctx, id: bigint, flags: number): Promise<bigint> {
    const fh = this.fh(id);
    if (flags & O_TRUNC) await this.dataChange(fh, Proc.SETATTR, [fh, [null, null, null, 0, null, null]], () => undefined);
    this.pin(id);
    return this.nextFh++;
  }

  async create(c: Ctx, parent: bigint, name: string, mode: number, flags: number): Promise<{ entry: Entry; fh: bigint }> {
    const raw = bytes(name);
    const [fh, attr] = await this.call(Proc.CREATE, [this.fh(parent), raw, mode & 0o7777, c.uid, c.gid, (flags & O_EXCL) !== 0]);
    // An existing file (a create that is not exclusive) keeps what is kept for it; a file born since does not.
    this.unstable.forget(Buffer.from(fh as Uint8Array), bornOf(attr));
    let entry = this.entry(fh, attr, parent, raw);
    const node = this.nodes.get(entry.ino);
    if (node && entry.attr.size === 0n && entry.attr.nlink === 1) node.noCaps ??= true; // just made (or empty): no capabilities
    if (flags & O_TRUNC && entry.attr.size > 0n) entry = { ino: entry.ino, attr: await this.setattr(c, entry.ino, { size: 0n }) };
    this.pin(entry.ino);
    return { entry, fh: this.nextFh++ };
  }

  // Pins are taken lazily: an open file is pinned on the host (OPEN) only when this agent is about to
  // remove or replace a name, since that is when an open file could lose its last link. Most files
  // are opened and closed without ever being pinned: no RPC for either.
  private pin(id: bigint): void {
    this.opens.set(id, (this.opens.get(id) ?? 0) + 1);
  }

  /** Before a REMOVE/RMDIR/RENAME: pin every open file not pinned yet (sent first, same channel). */
  private pinOpenFiles(): void {
    for (const id of this.opens.keys()) {
      const node = this.nodes.get(id);
      if (!node || node.pinned) continue;
      node.pinned = true;
      this.call(Proc.OPEN, [node.fh]).catch((e: Error) => log.warn({ err: e.message }, 'OPEN failed'));
    }
  }

  async release(_c: Ctx, id: bigint): Promise<void> {
    await this.writesDone(id, false).catch(() => { /* reported at flush; release cannot fail */ });
    const n = this.opens.get(id) ?? 0;
    if (n > 1) { this.opens.set(id, n - 1); return; }
    this.opens.delete(id);
    const node = this.nodes.get(id);
    if (!node) return;
    if (node.pinned) {
      node.pinned = false;
      this.call(Proc.CLOSE, [node.fh]).catch((e: Error) => log.warn({ err: e.message }, 'CLOSE failed'));
    }
    if (node.lookups <= 0n) this.nodes.delete(id);
  }

  async read(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, size: number, send: (d: Uint8Array) => void): Promise<void> {
    await this.call(Proc.READ, [this.fh(id), Number(offset), size], (r) => send(r[0] as Uint8Array));
  }

  // Writes are sent behind (as NFS clients do): the kernel gets its reply at once, the WRITE goes
  // out in order on the channel (so any later request of this agent sees it), and its outcome is
  // collected by the next write, flush (close), fsync or release of the file, where an error such as
  // EDQUOT is reported. Its data is kept until a COMMIT covers it (unstable.ts). A bound on the bytes
  // held keeps memory in check.
  async write(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, data: Uint8Array): Promise<number> {
    const fh = this.fh(id);
    const prev = this.writes.get(id);
    if (prev) this.takeError(id, prev);
    this.stickyError(fh);
    await this.waitForRoom(data.byteLength);
    await this.notReplaying(fh);
    const w = this.writes.get(id) ?? { inFlight: 0, error: null, waiters: [] };
    this.writes.set(id, w);
    const copy = Buffer.from(data); // the request buffer is reused once this returns
    const args = [fh, Number(offset), copy, 0];
    const log = this.unstable.file(fh);
    const e = this.unstable.add(log, Proc.WRITE, args, copy.length, false);
    w.inFlight++;
    this.post(Proc.WRITE, args)
      // A bad reply (no verifier) throws in the first handler: caught by the next, like a failed WRITE.
      .then((r) => { log.born ??= bornOf(r[0]); this.unstable.answered(log, e, verifierOf(r[2])); })
      .catch((err: Error) => {
        w.error ??= err instanceof PrismError ? err : new PrismError('EIO', err.message);
        this.unstable.failed(log, e);
      })
      .finally(() => {
        if (--w.inFlight > 0) return;
        for (const wake of w.waiters.splice(0)) wake();
        if (!w.error) this.writes.delete(id);
      });
    if (this.unstable.bytes > WRITE_BEHIND_BYTES / 2) this.commitBehind();
    return copy.length;
  }

  /** Write-behind state per file: WRITEs in flight, the first error not yet reported, who waits. */
  private readonly writes = new Map<bigint, { inFlight: number; error: PrismError | null; waiters: Array<() => void> }>();
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
   * Make the kept changes durable: of one file (fsync) or all. Files whose changes a past host
   * instance acknowledged are sent again first, then COMMIT; a COMMIT whose verifier does not match
   * what it should cover (the host restarted meanwhile) goes round again.
   */
  private async commitCovering(fh: Buffer | null): Promise<void> {
    // The changes made so far (read once: changes made while it runs are a later commit's).
    const cutoff = this.unstable.cutoff;
    for (let round = 0; round < MAX_COMMIT_ROUNDS; round++) {
      const one = fh && this.unstable.peek(fh);
      const logs = fh ? (one ? [one] : []) : this.unstable.logs;
      for (const f of logs) await this.replayIfStale(f);
      if (fh) this.stickyError(fh);
      // Replies already here are taken first, so that this COMMIT covers them.
      await this.collectReplies();
      const answerCut = this.unstable.answerCut;
      const [v] = await this.call(Proc.COMMIT, [fh ?? this.rootFh]);
      const verf = verifierOf(v);
      this.unstable.covered(verf, answerCut);
      if (fh) this.stickyError(fh);
      // Again only if another host instance answered some of them (a restart): they are sent again.
      if (!logs.some((f) => this.unstable.lost(f, cutoff, verf))) return;
    }
    throw new PrismError('EIO', `the host restarted during each of ${MAX_COMMIT_ROUNDS} COMMITs: unstable data is not durable`);
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
          const r = await this.call(e.proc, e.args);
          this.unstable.answered(f, e, e.proc === Proc.WRITE ? verifierOf(r[2]) : this.unstable.verifier);
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
  private takeError(id: bigint, w: { inFlight: number; error: PrismError | null }): void {
    const e = w.error;
    if (!e) return;
    w.error = null;
    if (w.inFlight === 0) this.writes.delete(id);
    throw e;
  }

  /** Wait for this file's writes in flight; throw the first error among them, or else its sticky error (`sticky`). */
  private async writesDone(id: bigint, sticky = true): Promise<void> {
    const w = this.writes.get(id);
    if (w) {
      if (w.inFlight > 0) this.host.settle?.();
      if (w.inFlight > 0) await new Promise<void>((r) => w.waiters.push(r));
      this.takeError(id, w);
    }
    const fh = this.nodes.get(id)?.fh;
    if (sticky && fh) this.stickyError(fh);
  }

  async flush(_c: Ctx, id: bigint): Promise<void> {
    await this.writesDone(id);
  }

  // fsync succeeds only once a COMMIT answered with the verifier of every kept change of the file
  // covers it: if the host restarted since it acknowledged them, they are sent again first.
  async fsync(_c: Ctx, id: bigint): Promise<void> {
    await this.writesDone(id);
    await this.commitCovering(this.fh(id));
  }

  async opendir(): Promise<bigint> {
    return this.nextFh++;
  }

  async readdir(_c: Ctx, id: bigint, _fh: bigint, plus: boolean): Promise<FuseDirEntry[]> {
    const fh = this.fh(id);
    // ".." needs its inode number: from the table, or asked for alongside the first page.
    const shared = id === ROOT_ID ? undefined : this.opts.shared?.getEntry(this.volumeId, this.inoOf(id), DOTDOT);
    if (shared) this.counters.add('lookupsLocal');
    const dotdot = id === ROOT_ID ? Promise.resolve([null, [this.rootIno]])
      : shared ? Promise.resolve([null, [shared.ino]]) : this.call(Proc.LOOKUP, [fh, DOTDOT]);
    const out: FuseDirEntry[] = [];
    let cookie: Uint8Array = Buffer.alloc(0);
    for (;;) {
      const [page, eof] = await this.call(plus ? Proc.READDIRPLUS : Proc.READDIR, [fh, cookie, READDIR_PAGE]) as [unknown[][], boolean];
      for (const e of page) {
        const raw = Buffer.from(e[0] as Uint8Array);
        const name = raw.toString('latin1');
        if (plus) {
          const entry = this.entry(e[1], e[2], id, raw, false);
          out.push({ name, ino: entry.attr.ino, type: (entry.attr.mode >> 12) & 15, entry });
        } else {
          out.push({ name, ino: BigInt(e[1] as number), type: e[2] as number });
        }
      }
      if (eof || page.length === 0) break;
      cookie = page[page.length - 1]![0] as Uint8Array;
    }
    const parent = (await dotdot)[1] as WireAttr;
    const self = id === ROOT_ID ? BigInt(this.rootIno) : id === BigInt(this.rootIno) ? 1n : id;
    out.unshift({ name: '.', ino: self, type: 4 }, { name: '..', ino: BigInt(parent[0]!), type: 4 });
    return out;
  }

  async statfs(_c: Ctx, id: bigint): Promise<FuseStatFs> {
    const [bsize, blocks, bfree, bavail, files, ffree, namemax] = (await this.call(Proc.FSSTAT, [this.fh(id)])) as number[];
    return { bsize: bsize!, blocks: BigInt(blocks!), bfree: BigInt(bfree!), bavail: BigInt(bavail!), files: BigInt(files!), ffree: BigInt(ffree!), namelen: namemax! };
  }

  async access(c: Ctx, id: bigint, mask: number): Promise<void> {
    await this.call(Proc.ACCESS, [this.fh(id), mask & 7, c.uid, [c.gid]]);
  }

  /** The table says the node has no extended attributes (`ls -l` asks for some on every file). */
  private sharedNoXattrs(id: bigint): boolean {
    if (!this.opts.shared?.noXattrs(this.volumeId, this.inoOf(id))) return false;
    this.counters.add('xattrsLocal');
    return true;
  }

  async getxattr(_c: Ctx, id: bigint, name: string): Promise<Buffer> {
    const node = this.nodes.get(id);
    if ((name === CAPS && node?.noCaps) || this.sharedNoXattrs(id)) throw new PrismError('ENODATA', 'no such attribute');
    try {
      return Buffer.from((await this.call(Proc.GETXATTR, [this.fh(id), xname(name)]))[0] as Uint8Array);
    } catch (e) {
      if (name === CAPS && node && e instanceof PrismError && e.code === 'ENODATA') node.noCaps = true;
      throw e;
    }
  }

  async listxattr(_c: Ctx, id: bigint): Promise<string[]> {
    const fh = this.fh(id);
    if (this.sharedNoXattrs(id)) return [];
    const [names] = await this.call(Proc.LISTXATTR, [fh]);
    return (names as Uint8Array[]).map((n) => Buffer.from(n).toString('latin1'));
  }

  async setxattr(_c: Ctx, id: bigint, name: string, value: Buffer, flags: number): Promise<void> {
    if (flags & ~3) throw new PrismError('EINVAL', 'unknown setxattr flags');
    if (name === CAPS) this.forgetCaps(id);
    await this.call(Proc.SETXATTR, [this.fh(id), xname(name), value, flags]);
  }

  private forgetCaps(id: bigint): void {
    const node = this.nodes.get(id);
    if (node) node.noCaps = false;
  }

  async removexattr(_c: Ctx, id: bigint, name: string): Promise<void> {
    await this.call(Proc.REMOVEXATTR, [this.fh(id), xname(name)]);
  }

  async fallocate(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, length: bigint, mode: number): Promise<void> {
    const fh = this.fh(id);
    await this.dataChange(fh, Proc.FALLOCATE, [fh, Number(offset), Number(length), mode], () => undefined);
  }

  async lseek(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, whence: number): Promise<bigint> {
    const [off] = await this.call(Proc.SEEK, [this.fh(id), Number(offset), whence]);
    return BigInt(off as number);
  }

  async copyFileRange(_c: Ctx, src: { ino: bigint; offset: bigint }, dst: { ino: bigint; offset: bigint }, length: bigint): Promise<number> {
    const len = Number(length > BigInt(MAX_COPY) ? BigInt(MAX_COPY) : length);
    const [copied] = await this.call(Proc.COPY_RANGE, [this.fh(src.ino), Number(src.offset), this.fh(dst.ino), Number(dst.offset), len]);
    return copied as number;
  }
}

export interface VrpcFsOptions {
  /** The VM's metadata table, mapped read-only: LOOKUP and GETATTR answered without an RPC when it holds the answer. */
  shared?: MetaTable;
  counters?: AgentCounters;
}

// FUSE's root is node 1; the volume's root keeps its own inode number. The two trade places.
export function nodeIdOf(ino: number, rootIno: number): bigint {
  return ino === rootIno ? ROOT_ID : ino === 1 ? BigInt(rootIno) : BigInt(ino);
}

function bytes(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** POSIX ACLs would be stored but not enforced (the kernel is not told to): refuse them, as a file system without ACLs does. */
function xname(name: string): Buffer {
  if (name.startsWith('system.posix_acl_')) throw new PrismError('ENOTSUP', 'POSIX ACLs are not supported');
  return bytes(name);
}

function toAttr(w: WireAttr): FuseAttr {
  return {
    ino: BigInt(w[0]!), mode: w[1]!, nlink: w[2]!, uid: w[3]!, gid: w[4]!, rdev: w[5]!, size: BigInt(w[6]!), blocks: BigInt(w[7]!),
    atime: [w[8]!, w[9]!], mtime: [w[10]!, w[11]!], ctime: [w[12]!, w[13]!],
  };
}

