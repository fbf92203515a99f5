// The host's side of metadata sharing: keeps each VM's table coherent with the store. Requests warm
// the table of the VM that asked; every change is written into the table of every VM attaching that
// volume before the request is answered, and logged for the other VMs' agents, whose kernels cache
// entries and attributes: the answer waits until those agents say they have applied the log, for a
// short deadline at most. An agent that misses it is fenced (its table answers nothing) until it says
// it has revalidated its kernel's cache, so a late or hostile VM never holds the others' changes
// (issue 11). Pure logic over tables and listener words: no files, no sockets.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import type { HandleKey } from '../protocol/handles.js';
import { attrToWire, type WireAttr } from '../protocol/wire.js';
import type { Volume } from '../store/volume.js';
import { MAX_LEASE_MS, MAX_SHARED_NAME, type Change, type MetaTable } from './table.js';

/** What a guest's agent says (words it writes in its VRPC region, docs/metadata-share.md): the guest's word, never trusted. */
export interface ListenerWords {
  /** Change-log records applied to its kernel so far (free-running). */
  applied: number;
  /** The longest time its kernel may cache an answer (0: not listening, never waited for). */
  leaseMs: number;
  /** The last fence (odd value of its table's fence word) it has recovered from. */
  fenceAck: number;
  /** It polls the log (a VM guest: nothing can wake it), so it gets the longer deadline. */
  polls: boolean;
}

export interface Listener {
  read(): ListenerWords;
  /** Block up to `ms` for `applied` to move from `seen` (a futex on one machine; may return early). */
  wait?(seen: number, ms: number): void;
}

export interface SharedVm {
  name: string;
  volumes: readonly string[];
  key: HandleKey;
  table: MetaTable;
  listener?: Listener;
  /** Wake the agent after log records were appended. */
  wake?(): void;
  /**
   * The volumes no other VM attaches: marked so in its table (the agent may post some changes), with
   * whether they have no quota (the agent need not wait for its posted changes at close).
   */
  sole?: ReadonlyArray<{ id: number; noQuota: boolean }>;
}

/** What a request changed: inodes whose attributes (or data) changed, names that now point elsewhere. */
export interface MetaChanges {
  attrs?: number[];
  data?: number[];
  /** Attributes the caller has just had from the store (so current): used instead of reading them again. */
  known?: Array<[ino: number, attr: WireAttr]>;
  /** The child each name points at now, when the caller knows it (null: none); else it is looked up. */
  entries?: Array<[dir: number, name: Uint8Array, child?: number | null]>;
}

/** The per-VM face of the publisher that a dispatcher uses. */
export interface MetadataSink {
  sawAttr(v: Volume, ino: number, attr: WireAttr): void;
  sawEntry(v: Volume, dir: number, name: Uint8Array, child: { fh: Uint8Array; ino: number } | null): void;
  /** A name was looked up in `dir`: share the rest of the directory too, once (its neighbours are likely next). */
  sawDir(v: Volume, dir: number): void;
  /** Update every table; resolves when other VMs' kernels have forgotten what changed. */
  changed(v: Volume, c: MetaChanges): Promise<void> | undefined;
  /**
   * The host itself (`prism put`) is about to change the volume: no VM's agent may assume any longer
   * that it alone writes it (its table's mark is cleared for good, so it asks the host from now on).
   */
  willChange?(v: Volume): void;
  /** The host replaced the volume's whole tree (rollback, import): every table forgets what it held of it. */
  replaced?(v: Volume): void;
  /** The volume's quota was set or lifted (`prism volume quota`). */
  boundsChanged?(v: Volume): void;
}

/** Entries of one directory shared ahead of their lookups (at most). */
const WARM_ENTRIES = 4096;
/** Directories remembered as shared ahead, per VM, before the memory is dropped. */
const WARM_DIRS = 65536;

/** How long the host first blocks for an agent on the same machine to acknowledge, before waiting asynchronously. */
const SYNC_WAIT_MS = 2;
const POLL_MS = 1;
/**
 * Acknowledgement deadlines (docs/metadata-share.md, "Fencing"). An agent on the host's own kernel is
 * woken by a futex and acknowledges in tens of microseconds; 10 ms leaves room for a loaded host's
 * scheduler. An agent in a VM guest polls every millisecond and its vCPU may not be running: 50 ms.
 * A miss costs the late VM its table until it revalidates, never another VM more than this.
 */
export const ACK_MS = 10;
export const POLL_ACK_MS = 50;

export interface PublisherOptions {
  /** Deadline for agents woken by a futex (same machine), ms. */
  ackMs?: number;
  /** Deadline for agents that poll (VM guests), ms. */
  pollAckMs?: number;
  /**
   * Probation after a repeated fence, ms (default 1000): the second fence in a row keeps the VM fenced
   * at least this long, each further one twice as long (up to a minute). A VM that revalidates and
   * misses again, over and over, then costs the others one deadline per probation, not per change.
   */
  probationMs?: number;
}

interface FenceCount {
  fenced: number;
  recovered: number;
  loggedAt: number;
  /** Fences in a row, each within FENCE_MEMORY_MS of the previous one, and when the last one was. */
  streak: number;
  lastAt: number;
  /** Not unfenced before this time (performance.now()). */
  probationUntil: number;
}

/** A VM fenced again within this long keeps its streak (and a longer probation); after it, a clean slate. */
const FENCE_MEMORY_MS = 60_000;

export class MetaPublisher {
  private readonly vms = new Map<string, SharedVm>();
  private readonly ackMs: number;
  private readonly pollAckMs: number;
  private readonly probationMs: number;
  /** Fences and recoveries so far, per VM (for tests and, later, host status). */
  readonly fences = new Map<string, FenceCount>();
  /** VMs with an answer held back right now. Their agent is not waited for: it may itself be waiting on us. */
  private readonly holding = new Map<string, number>();
  /** Per VM: directories already shared ahead ("volume:inode"). */
  private readonly warmed = new Map<string, Set<string>>();

  constructor(o: PublisherOptions = {}) {
    this.ackMs = deadline(o.ackMs ?? ACK_MS, 'ackMs');
    this.pollAckMs = deadline(o.pollAckMs ?? POLL_ACK_MS, 'pollAckMs');
    this.probationMs = deadline(o.probationMs ?? 1000, 'probationMs');
  }

  /** A VM's table; a fence left by a previous host stays until its agent acknowledges it. */
  add(vm: SharedVm): void {
    this.vms.set(vm.name, vm);
    for (const { id, noQuota } of vm.sole ?? []) this.noQuota.set(id, noQuota);
    this.markSole(vm);
  }

  /** A VM is no longer served: its table is no longer kept (nor waited for). */
  remove(name: string): void {
    this.vms.delete(name);
    this.fences.delete(name);
    this.holding.delete(name);
    this.warmed.delete(name);
  }

  /** Volumes changed by the host itself since it started: never marked sole again. */
  private readonly unsole = new Set<number>();

  private clearSole(v: Volume): void {
    const id = v.rec.id;
    if (this.unsole.has(id)) return;
    this.unsole.add(id);
    for (const vm of this.vms.values()) if (vm.volumes.includes(v.name)) vm.table.clearSole(id);
  }

  /** Per sole volume id: whether it has no quota (bytes nor inodes). */
  private readonly noQuota = new Map<number, boolean>();
  /** Whether the store's disk has room for every VM's writes in flight (roomy()). */
  private room = true;

  /**
   * Mark the VM's sole volumes in its table, "unbounded" where neither a quota nor the store's disk
   * can refuse what its agent posts: it may then leave the errors of posted changes to fsync.
   */
  private markSole(vm: SharedVm): void {
    for (const { id } of vm.sole ?? []) if (!this.unsole.has(id)) vm.table.markSole(id, this.room && (this.noQuota.get(id) ?? false));
  }

  /** A volume's quota was set or lifted (`prism volume quota`). */
  private boundsChanged(v: Volume): void {
    this.noQuota.set(v.rec.id, !v.hasQuota());
    for (const vm of this.vms.values()) if (vm.sole?.some((s) => s.id === v.rec.id)) this.markSole(vm);
  }

  /** Whether the store's disk has room for every VM's writes in flight: checked by the host every second. */
  roomy(room: boolean): void {
    if (room === this.room) return;
    this.room = room;
    for (const vm of this.vms.values()) this.markSole(vm);
  }

  /** The sink for requests of VM `origin` (null: the host itself, e.g. `prism put`). */
  sink(origin: string | null): MetadataSink {
    const table = () => {
      const vm = origin === null ? undefined : this.vms.get(origin);
      // A fenced VM asks the host for what its table no longer answers: a cheap moment to see whether it recovered.
      if (vm?.table.fenced) this.recover(vm);
      return vm?.table;
    };
    return {
      sawAttr: (v, ino, attr) => table()?.putAttr(v.rec.id, ino, attr, v.hasXattrs(ino)),
      sawEntry: (v, dir, name, child) => { if (shareable(name)) table()?.putEntry(v.rec.id, dir, name, child); },
      sawDir: (v, dir) => { if (origin !== null) this.warmDir(origin, v, dir); },
      changed: (v, c) => this.changed(origin, v, c),
      willChange: (v) => { if (origin === null) this.clearSole(v); },
      boundsChanged: (v) => this.boundsChanged(v),
      replaced: (v) => { for (const vm of this.vms.values()) if (vm.volumes.includes(v.name)) vm.table.forgetVolume(v.rec.id); },
    };
  }

  /**
   * Put a directory's entries and their attributes into a VM's table ahead of its lookups: a program
   * that looks up one name of a directory (stat by path, git status) usually looks up its neighbours
   * next. Kept coherent like any other key; done once per directory (until the memory is dropped).
   */
  private warmDir(origin: string, v: Volume, dir: number): void {
    const vm = this.vms.get(origin);
    if (!vm) return;
    let seen = this.warmed.get(origin);
    if (!seen) this.warmed.set(origin, (seen = new Set()));
    const key = `${v.rec.id}:${dir}`;
    if (seen.has(key)) return;
    if (seen.size >= WARM_DIRS) seen.clear();
    seen.add(key);
    const id = v.rec.id;
    let entries;
    try {
      entries = v.readdir(dir, null, WARM_ENTRIES);
    } catch (e) {
      if (e instanceof PrismError) return; // not a directory (any more): the lookup says so itself
      throw e;
    }
    let all = entries.length < WARM_ENTRIES;
    for (const e of entries) {
      const s = snapshot(v, e.ino);
      if (!s || !fits(e.name)) { all = false; continue; }
      vm.table.putEntry(id, dir, e.name, { fh: vm.key.make({ volumeId: id, ino: e.ino }), ino: e.ino });
      vm.table.putAttr(id, e.ino, s.attr, s.xattrs);
    }
    // Every name is there (none evicted meanwhile): a name the table lacks is absent, answered without an RPC.
    if (all && entries.every((e) => vm.table.hasEntry(id, dir, e.name))) vm.table.markComplete(id, dir);
  }

  private changed(origin: string | null, v: Volume, c: MetaChanges): Promise<void> | undefined {
    const id = v.rec.id;
    const attrs = new Map<number, Snapshot | null>();
    if (c.known) for (const [ino, attr] of c.known) attrs.set(ino, { attr, xattrs: v.hasXattrs(ino) });
    const fresh = (ino: number) => { if (!attrs.has(ino)) attrs.set(ino, snapshot(v, ino)); };
    if (c.attrs) for (const ino of c.attrs) fresh(ino);
    if (c.data) for (const ino of c.data) fresh(ino);
    // A name no table can hold, in a directory some table holds as complete, would read as absent there.
    const unshared: number[] = [];
    const entries: Array<{ dir: number; name: Uint8Array; child: number | null }> = [];
    if (c.entries) {
      for (const [dir, name, known] of c.entries) {
        if (!shareable(name)) continue;
        if (!fits(name)) unshared.push(dir);
        const child = known !== undefined ? known : tryLookup(v, dir, name);
        if (child !== null) fresh(child);
        entries.push({ dir, name, child });
      }
    }
    // Built only when some other VM attaches the volume (most requests: none does).
    let log: Change[] | undefined;
    const logOf = (): Change[] => log ??= [
      ...[...attrs.keys()].map((ino): Change => ({ kind: c.data?.includes(ino) ? 'data' : 'attr', volume: id, ino })),
      // ".." too: a kernel keeps no dentry of that name, but it may keep the directory's listing, which holds it.
      ...entries.map(({ dir, name }): Change => ({ kind: 'entry', volume: id, dir, name })),
    ];
    const waits: Array<{ vm: SharedVm; head: number }> = [];
    for (const vm of this.vms.values()) {
      if (!vm.volumes.includes(v.name)) continue;
      const t = vm.table;
      const mine = vm.name === origin;
      for (const [ino, s] of attrs) {
        if (mine && s) t.putAttr(id, ino, s.attr, s.xattrs);
        else t.refreshAttr(id, ino, s?.attr ?? null, s?.xattrs);
      }
      for (const dir of unshared) t.clearComplete(id, dir);
      for (const e of entries) {
        // A complete directory must hold every name it has: a new one goes into every table so marked.
        if (!mine && !t.hasEntry(id, e.dir, e.name) && !t.holdsComplete(id, e.dir)) continue;
        // A directory always has "..": none means the directory is gone (or is not one).
        if (e.child === null && isDotDot(e.name)) { t.removeEntry(id, e.dir, e.name); continue; }
        t.putEntry(id, e.dir, e.name, e.child === null ? null : { fh: vm.key.make({ volumeId: id, ino: e.child }), ino: e.child });
      }
      // The agent that asked has its kernel told by the reply itself; the others learn from the log.
      if (mine || logOf().length === 0) continue;
      t.appendLog(logOf());
      vm.wake?.();
      waits.push({ vm, head: t.logHead });
    }
    const wait = this.acknowledged(waits);
    if (!wait || origin === null) return wait;
    this.holding.set(origin, (this.holding.get(origin) ?? 0) + 1);
    return wait.finally(() => {
      const n = this.holding.get(origin)! - 1;
      if (n > 0) this.holding.set(origin, n);
      else this.holding.delete(origin);
    });
  }

  /**
   * Wait until every listening agent has applied the log up to `head`: each at most its deadline (or
   * its lease, if shorter: past it its kernel has forgotten anyway). One that misses it is fenced.
   */
  private acknowledged(waits: Array<{ vm: SharedVm; head: number }>): Promise<void> | undefined {
    const start = performance.now();
    const pending = waits.filter((w) => this.mustWait(w.vm, w.head));
    if (pending.length === 0) return undefined;
    // An agent on this machine answers within tens of microseconds: block briefly before going async.
    const until = start + Math.min(SYNC_WAIT_MS, ...pending.map((w) => this.deadlineOf(w.vm)));
    for (const w of pending) {
      for (let s = w.vm.listener!.read(); behind(s.applied, w.head) && performance.now() < until; s = w.vm.listener!.read()) {
        w.vm.listener!.wait?.(s.applied, Math.max(0.05, until - performance.now()));
      }
    }
    const left = pending.filter((w) => this.mustWait(w.vm, w.head));
    if (left.length === 0) return undefined;
    return new Promise((resolve) => {
      const poll = () => {
        const waited = performance.now() - start;
        let waiting = false;
        for (const w of left) {
          if (!this.mustWait(w.vm, w.head)) continue;
          if (waited >= this.deadlineOf(w.vm)) this.fence(w.vm, waited);
          else waiting = true;
        }
        if (waiting) setTimeout(poll, POLL_MS);
        else resolve();
      };
      setTimeout(poll, POLL_MS);
    });
  }

  /** How long a change may wait for this VM's agent (its words are read afresh: they are the guest's). */
  private deadlineOf(vm: SharedVm): number {
    const s = vm.listener?.read();
    if (!s) return 0;
    return Math.min(s.polls ? this.pollAckMs : this.ackMs, s.leaseMs);
  }

  private mustWait(vm: SharedVm, head: number): boolean {
    if (this.vms.get(vm.name) !== vm) return false; // removed (its table is unmapped): not waited for
    const s = vm.listener?.read();
    if (!s || s.leaseMs === 0 || !behind(s.applied, head)) return false;
    // Its agent may be blocked in a request of its own that waits for the very VM waiting here
    // (and its notifier behind a directory lock that request holds): not waiting breaks the cycle.
    // Records it misses meanwhile may be overwritten: its agent then drops its kernel's whole cache.
    if (this.holding.has(vm.name)) return false;
    // A fenced VM is not waited for until it has revalidated (then it is, like any other).
    return !vm.table.fenced || this.recover(vm, s);
  }

  /** Stop waiting for a VM that missed its deadline: its table answers nothing until it revalidates. */
  private fence(vm: SharedVm, waited: number): void {
    if (vm.table.fenced) return;
    vm.table.setFence(true);
    vm.wake?.(); // an agent that is merely slow sees the fence at once, revalidates and is waited for again
    const c = this.count(vm.name);
    const now = performance.now();
    c.fenced++;
    c.streak = now - c.lastAt > FENCE_MEMORY_MS ? 1 : c.streak + 1;
    c.lastAt = now;
    c.probationUntil = c.streak < 2 ? 0 : now + Math.min(this.probationMs * 2 ** (c.streak - 2), MAX_LEASE_MS);
    // Once per VM per minute at most: a guest that keeps missing must not flood the host's log.
    if (c.fenced === 1 || now - c.loggedAt >= 60_000) {
      c.loggedAt = now;
      log.warn({ vm: vm.name, waitedMs: Math.round(waited), fences: c.fenced, recovered: c.recovered }, 'metadata listener missed its deadline: fenced (not waited for until it revalidates)');
    }
  }

  /** Unfence a VM whose agent acknowledged the current fence (it revalidated its kernel's cache); true if not fenced. */
  private recover(vm: SharedVm, s: ListenerWords | undefined = vm.listener?.read()): boolean {
    const fence = vm.table.fence;
    if ((fence & 1) === 0) return true;
    if (!s || s.fenceAck !== fence) return false;
    if (performance.now() < this.count(vm.name).probationUntil) return false;
    vm.table.setFence(false);
    this.count(vm.name).recovered++;
    log.debug({ vm: vm.name, fence }, 'metadata listener revalidated: unfenced');
    return true;
  }

  private count(vm: string): FenceCount {
    let c = this.fences.get(vm);
    if (!c) this.fences.set(vm, (c = { fenced: 0, recovered: 0, loggedAt: 0, streak: 0, lastAt: -Infinity, probationUntil: 0 }));
    return c;
  }
}

function deadline(ms: number, what: string): number {
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_LEASE_MS) throw new PrismError('EINVAL', `${what} must be a number of milliseconds in (0, ${MAX_LEASE_MS}], not ${ms}`);
  return ms;
}

/** Names worth sharing: all but "." (the kernel answers it). ".." is kept right by RENAME and RMDIR, which name it. */
function shareable(name: Uint8Array): boolean {
  return !(name.length === 1 && name[0] === 0x2e);
}

/** A name a table can hold (a longer one is never put: its directory cannot be complete). */
function fits(name: Uint8Array): boolean {
  return shareable(name) && name.length > 0 && name.length <= MAX_SHARED_NAME;
}

function isDotDot(name: Uint8Array): boolean {
  return name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
}

/** Counters are free-running u32s. */
function behind(applied: number, head: number): boolean {
  return ((head - applied) | 0) > 0;
}

/** What a table holds of an inode: its attributes and whether it has extended attributes. */
interface Snapshot { attr: WireAttr; xattrs: boolean }

function snapshot(v: Volume, ino: number): Snapshot | null {
  try {
    return { attr: attrToWire(v.getattr(ino)), xattrs: v.hasXattrs(ino) };
  } catch (e) {
    if (e instanceof PrismError) return null; // gone (last link removed and not open)
    throw e;
  }
}

function tryLookup(v: Volume, dir: number, name: Uint8Array): number | null {
  try {
    return v.lookup(dir, Buffer.from(name.buffer, name.byteOffset, name.byteLength)).ino;
  } catch (e) {
    if (e instanceof PrismError) return null;
    throw e;
  }
}
