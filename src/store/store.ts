// The store: volumes over shared copy-on-write trees (LMDB) and content-addressed blocks (segment files).
//
// Transactions: every public method runs synchronously and leaves memory consistent; nothing reaches
// disk until a commit, which writes everything changed since the last one in one LMDB transaction,
// after making the segment data it references durable. A crash therefore loses only uncommitted
// changes and never leaves a half-made volume. Methods that may block on disk say so.
//
// Two ways to commit. commit() blocks until durable (tools, close). commitDurable() is the server's:
// a group commit whose fsyncs run off the event loop; see the argument above Store.commitDurable and
// docs/durability.md.
import fs from 'node:fs';
import path from 'node:path';
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb';
import { PrismError, fromNodeError } from '../errors.js';
import { Blocks, type BlockRec, type FrozenBlocks, type SegmentStat } from './blocks.js';
import { deferrable, loggable } from './dirty-blocks.js';
import type { KeepBlock } from './file-data.js';
import { IntentLog, isPage, type LogRecord } from './intent-log.js';
import { CowTree, type Node } from './btree.js';
import { now } from '../posix/clock.js';
import { MAX_NAME } from '../posix/limits.js';
import { S_IFDIR, isDir } from '../posix/mode.js';
import type { StatFs } from '../posix/types.js';
import { BLOCK_SIZE, FORMATS_READ, FORMAT_VERSION, ROOT_LOCAL, inoOf, inodeKey, type InodeRec, type TreeValue, MAX_LAYERS, LAYER_SPAN } from './layout.js';
import { acquireLock } from './lock.js';
import { HIDDEN, checkVolumeName, isHidden } from './names.js';
import { LmdbNodeStore, type FrozenNodes } from './nodes.js';
import { Segments } from './segments.js';
import { Volume } from './volume.js';
import type { Usage, VolumeHost, VolumeRec, VolumeTree } from './volume-tree.js';

export interface StoreOptions {
  /** Flush partially written blocks when this much is buffered (bytes). */
  dirtyDataLimit?: number;
  /** maybeCommit() commits when this many metadata changes are pending. */
  pendingLimit?: number;
  /**
   * A COMMIT logs the pages of blocks written over stored ones, rather than storing the blocks, when
   * at least this many have never been logged (see logPays).
   */
  logMinBlocks?: number;
}

export interface ComposeSource { volume: string; path: string; dest?: string }

/** An import's copy of a volume (Store.stage). */
export interface Staged {
  volume: Volume;
  /** Put the copy in place of the volume (or make the volume, if there was none); returns it. */
  publish(): Volume;
  /** Throw the copy away. */
  drop(): void;
}

export interface VolumeInfo {
  name: string;
  origin: VolumeRec['origin'];
  parent?: string;
  sources?: string[];
  created: string;
  quota?: number;
  inodeQuota?: number;
  logicalBytes: number;
  /** Bytes of names, extended attributes and symlink targets (charged to the quota with the data). */
  metadataBytes: number;
  files: number;
  uniqueBytes: number;
}

export interface StoreStats {
  volumes: number;
  logicalBytes: number;
  physicalBytes: number;
  blocks: number;
  dedupRatio: number;
  savedBytes: number;
  segmentFileBytes: number;
  metadataFileBytes: number;
}

type Meta = Record<string, number>;

/** A blocking commit (everything), a COMMIT (overwrites logged, see cut) or the host's timed one. */
export type CommitKind = 'whole' | 'commit' | 'timed';

/** How long a timed commit leaves an overwrite of stored bytes buffered (see startCommit). */
const OVERWRITE_DELAY_MS = 5000;
/** Blocks hashed and stored between two turns of the event loop (flushInSlices): a few ms. */
const FLUSH_SLICE_BLOCKS = 32;

/** Everything one commit writes, cut at one instant (see commitDurable). */
interface Cut {
  nodes: FrozenNodes<TreeValue>;
  blocks: FrozenBlocks;
  /** Changed volumes as they were at the cut; null: removed. */
  volumes: Map<string, VolumeRec | null>;
  /** Their names, in cutVolumes until the cut is settled. */
  names: Set<string>;
  meta: Meta;
  /** Segments appended to before the cut: their fdatasync must precede the metadata. */
  segments: number[];
  /** A batch was appended to the intent log: its fdatasync is part of the commit. */
  logged: boolean;
  /** Its metadata was put in an LMDB transaction (from then on only LMDB orders it). */
  written: boolean;
  /** A blocking commit() wrote it first: nothing left to do. */
  superseded: boolean;
}

/** What commits have cost: for tests and `prism host status`. */
export interface CommitCounters {
  /** Calls to commitDurable (each a COMMIT, stable WRITE, timer tick or admin change). */
  requests: number;
  /** Store commits made (blocking or not): LMDB transactions. */
  commits: number;
  /** fdatasync calls on segment files. */
  dataSyncs: number;
  /** Pages COMMITs appended to the intent log instead of storing their blocks. */
  logged: number;
  /** COMMITs made durable by the intent log alone, without an LMDB commit (Store.logOnly). */
  logOnly: number;
}

export class Store implements VolumeHost {
  readonly tree: CowTree<TreeValue>;
  readonly blocks: Blocks;
  private readonly nodes: LmdbNodeStore<TreeValue>;
  private readonly volumes = new Map<string, Volume>();
  private readonly changedVolumes = new Set<string>();
  /**
   * Since the last cut, some change was more than an inode's times (or a cut failed and its changes
   * are pending again): a COMMIT must write LMDB. Otherwise the inodes whose times changed, per volume.
   */
  private beyondTimes = false;
  private readonly timesChanged = new Map<VolumeTree, Set<number>>();
  private dirtyBytes = 0;
  private nextVolumeId: number;
  private closed = false;
  /** Volumes changed in a commit in progress (removed ones are not in `volumes`, nor in LMDB's past). */
  private readonly cutVolumes: Array<Set<string>> = [];
  /** The commit in progress (commitDurable), and the one the callers arriving meanwhile share. */
  private inFlight: { cut: Cut | null; done: Promise<void> } | null = null;
  private next: Promise<void> | null = null;
  /** Whether a caller of the shared next commit wants every overwrite in it (not a timed one). */
  private nextWhole = false;
  /** A flush in slices is running because buffered data passed its limit (dirtyData). */
  private flushingBehind = false;
  /** Set when a commit failed after its metadata reached LMDB: memory and disk may disagree. */
  private broken: Error | null = null;
  /**
   * A logged block was stored or dropped (or its volume went): the next cut stores every logged
   * block and records that the intent log files before now are spent (a checkpoint). Until then no
   * cut may store one, or replay would lay older pages over the newer block.
   */
  private checkpointDue = false;
  private readonly counts = { requests: 0, commits: 0, logged: 0, logOnly: 0 };
  private nextHidden = 1;

  private constructor(
    readonly dir: string,
    private readonly env: RootDatabase,
    private readonly metaDb: Database<number, string>,
    private readonly volumesDb: Database<VolumeRec, string>,
    readonly nodesDb: Database<Node<TreeValue>, number>,
    readonly refsDb: Database<number, number>,
    readonly blocksDb: Database<BlockRec, Buffer>,
    readonly segStatsDb: Database<SegmentStat, number>,
    readonly segments: Segments,
    /** Null where nothing can be changed (openReadOnly): what is only in the log is not seen there. */
    private readonly log: IntentLog | null,
    private readonly unlock: () => void,
    private readonly opts: Required<StoreOptions>,
    /** Opened beside the store's owner (openReadOnly): nothing can be changed. */
    readonly readOnly = false,
  ) {
    const meta = (k: string) => metaDb.get(k) ?? 0;
    this.nodes = new LmdbNodeStore(nodesDb, refsDb, meta('nextNode') || 1);
    this.blocks = new Blocks(blocksDb, segStatsDb, segments);
    this.blocks.physical = meta('physical');
    this.blocks.count = meta('blocks');
    this.tree = new CowTree<TreeValue>(this.nodes, {
      retain: (v) => { if (Buffer.isBuffer(v)) this.blocks.retain(v); },
      release: (v) => { if (Buffer.isBuffer(v)) this.blocks.release(v); },
    });
    this.nextVolumeId = meta('nextVolumeId') || 1;
  }

  /** Whether dir holds a store (its metadata file). */
  static exists(dir: string): boolean {
    return fs.existsSync(path.join(path.resolve(dir), 'meta.mdb'));
  }

  /** Open (creating if absent) the store in dir. Blocks on disk. */
  static open(dir: string, options: StoreOptions = {}): Store {
    const abs = path.resolve(dir);
    if (fs.existsSync(abs) && !fs.statSync(abs).isDirectory()) throw new PrismError('ENOTDIR', `${abs} is not a directory`);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    try { fs.mkdirSync(abs, 0o700); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fromNodeError(e, 'cannot make the store directory'); }
    makePrivate(abs);
    const dbFile = path.join(abs, 'meta.mdb');
    if (!fs.existsSync(dbFile) && fs.readdirSync(abs).some((f) => f !== 'LOCK' && f !== 'segments')) {
      throw new PrismError('EINVAL', `${abs} is not empty and holds no Prism store`);
    }
    const unlock = acquireLock(path.join(abs, 'LOCK'));
    try {
      const store = Store.openAt(abs, unlock, options, false);
      makePrivate(abs); // what LMDB and the segments just made (under the umask)
      store.replayLog();
      store.countOldUsage();
      store.recoverOrphans();
      store.dropHidden();
      return store;
    } catch (e) {
      unlock();
      throw e;
    }
  }

  /**
   * Open the store beside the process that owns it (a serving host), to read what it has committed:
   * LMDB allows readers in other processes, and segment files are append-only. Nothing can be
   * changed (EROFS). What is read across event-loop turns must be pinned by the owner first (a
   * hidden snapshot, `pin`), and the owner must not gc meanwhile (it deletes segment files).
   */
  static openReadOnly(dir: string): Store {
    const abs = path.resolve(dir);
    if (!Store.exists(abs)) throw new PrismError('ENOENT', `no store at ${abs}`);
    return Store.openAt(abs, () => undefined, {}, true);
  }

  private static openAt(abs: string, unlock: () => void, options: StoreOptions, readOnly: boolean): Store {
    const env = openLmdb({ path: path.join(abs, 'meta.mdb'), maxDbs: 8, compression: false, pageSize: 4096, readOnly });
    try {
      const metaDb = env.openDB<number, string>('meta', {});
      const format = metaDb.get('format');
      if (format !== undefined && !FORMATS_READ.includes(format)) {
        throw new PrismError('EINVAL', `store format ${format} is not supported (this is format ${FORMAT_VERSION})`);
      }
      // Before the first log file can exist: a version that knows no log must not open it and lose one.
      if (format !== FORMAT_VERSION && !readOnly) metaDb.putSync('format', FORMAT_VERSION);
      return new Store(
        abs, env, metaDb,
        env.openDB<VolumeRec, string>('volumes', {}),
        env.openDB<Node<TreeValue>, number>('nodes', {}),
        env.openDB<number, number>('refs', {}),
        env.openDB<BlockRec, Buffer>('blocks', { keyEncoding: 'binary' }),
        env.openDB<SegmentStat, number>('segstats', {}),
        new Segments(path.join(abs, 'segments'), metaDb.get('segActive') ?? 1, metaDb.get('segEnd') ?? 0, readOnly),
        readOnly ? null : IntentLog.open(abs, metaDb.get('logGen') ?? 0),
        unlock,
        { dirtyDataLimit: options.dirtyDataLimit ?? 64 * 1024 * 1024, pendingLimit: options.pendingLimit ?? 200_000, logMinBlocks: options.logMinBlocks ?? 16 },
        readOnly,
      );
    } catch (e) {
      env.close();
      throw e;
    }
  }

  /**
   * Volumes recorded before metadata was charged (usage without `meta`) are counted once, here at
   * open rather than in the middle of a guest's request, and committed.
   */
  private countOldUsage(): void {
    let any = false;
    for (const name of this.allVolumeNames()) {
      const v = this.volume(name);
      const u = v.rec.usage as Partial<Usage> | null;
      if (!u || u.meta !== undefined) continue;
      v.rec.usage = v.countUsage();
      this.changed(v);
      any = true;
    }
    if (any) this.commit();
  }

  /**
   * Pages that COMMITs logged and no checkpoint stored (the last process stopped first) are written
   * again, in order, and stored by a checkpoint commit; logged times are taken where LMDB's are
   * older. A file or volume gone since cannot have any (its going called for a checkpoint in the
   * same commit); what is not found is skipped.
   */
  private replayLog(): void {
    const log = this.log!;
    const byId = new Map<number, string>();
    for (const name of this.allVolumeNames()) byId.set(this.volume(name).rec.id, name);
    let batches = 0;
    for (const records of log.unspent()) {
      batches++;
      for (const r of records) {
        const name = byId.get(r.volume);
        if (name === undefined) continue;
        const v = this.volume(name);
        try {
          if (!isPage(r)) v.restoreTimes(r.ino, r.atime, r.mtime, r.ctime);
          else {
            const size = v.inode(r.ino).size;
            if (r.offset < size) v.write(r.ino, r.offset, r.data.subarray(0, size - r.offset), true);
          }
        } catch (e) {
          if (!(e instanceof PrismError)) throw e; // the file is gone or no longer a regular file
        }
      }
    }
    const committed = log.spentBelow;
    log.rotate(); // past every file found
    if (batches > 0 || log.spentBelow !== committed) this.commit();
    else log.retire(log.spentBelow);
  }

  /** Files unlinked while open when the last process stopped: no one can reach them now. */
  private recoverOrphans(): void {
    let any = false;
    for (const name of this.allVolumeNames()) {
      const v = this.volume(name);
      for (const ino of [...v.rec.orphans]) {
        try { v.freeInode(ino); } catch { v.rec.orphans.splice(v.rec.orphans.indexOf(ino), 1); }
        any = true;
      }
    }
    if (any) this.commit();
  }

  // ---- VolumeHost ---------------------------------------------------------------------------------

  changed(v: VolumeTree, timesOf?: number): void {
    this.changedVolumes.add(v.name);
    if (timesOf === undefined) this.beyondTimes = true;
    else {
      let set = this.timesChanged.get(v);
      if (!set) this.timesChanged.set(v, set = new Set());
      set.add(timesOf);
    }
  }

  /** A volume's record changed other than through its tree (made, removed, its quota). */
  private volumeChanged(name: string): void {
    this.changedVolumes.add(name);
    this.beyondTimes = true;
  }

  loggedGone(): void {
    this.checkpointDue = true;
  }

  dirtyData(delta: number): void {
    this.dirtyBytes += delta;
    // Past the limit, flushed in the background a slice at a time (a serving host has no pause
    // between requests to flush in, and nothing else bounds what a VM that never commits holds).
    if (delta > 0 && this.dirtyBytes > this.opts.dirtyDataLimit && !this.flushingBehind) {
      this.flushingBehind = true;
      setImmediate(() => {
        // A failure (a full disk) leaves the blocks held: the next COMMIT's cut fails with it.
        this.flushInSlices().catch(() => undefined).finally(() => { this.flushingBehind = false; });
      });
    }
  }

  usage(v: VolumeTree): Usage {
    if (!v.rec.usage) {
      // After compose: count what is reachable, once.
      v.rec.usage = v.countUsage();
      this.changed(v);
    }
    return v.rec.usage;
  }

  // ---- volumes ------------------------------------------------------------------------------------

  /** The volumes, in name order (not the hidden ones: pins and staged imports). */
  volumeNames(): string[] {
    return this.allVolumeNames().filter((n) => !isHidden(n));
  }

  /** Every volume, hidden ones too (what holds references, for fsck and gc). */
  allVolumeNames(): string[] {
    const names = new Set<string>();
    for (const { key } of this.volumesDb.getRange()) names.add(key);
    for (const n of this.volumes.keys()) names.add(n);
    return [...names].filter((n) => this.volumes.has(n) || !this.uncommitted(n)).sort();
  }

  /** Changed (so, if not loaded, removed) since the last commit that reached LMDB. */
  private uncommitted(name: string): boolean {
    return this.changedVolumes.has(name) || this.cutVolumes.some((s) => s.has(name));
  }

  has(name: string): boolean {
    if (this.volumes.has(name)) return true;
    if (this.uncommitted(name)) return false; // removed, not yet committed
    return this.volumesDb.get(name) !== undefined;
  }

  volume(name: string): Volume {
    this.assertOpen();
    let v = this.volumes.get(name);
    if (v) return v;
    const rec = this.uncommitted(name) ? undefined : this.volumesDb.get(name);
    if (!rec) throw new PrismError('ENOENT', `no volume named ${JSON.stringify(name)}`);
    v = new Volume(structuredClone(rec), this);
    this.volumes.set(name, v);
    return v;
  }

  private register(rec: VolumeRec): Volume {
    const v = new Volume(rec, this);
    this.volumes.set(rec.name, v);
    this.volumeChanged(rec.name);
    return v;
  }

  private checkNew(name: string): void {
    this.assertWritable();
    checkVolumeName(name);
    if (this.has(name)) throw new PrismError('EEXIST', `volume ${JSON.stringify(name)} already exists`);
  }

  createVolume(name: string, opts: { quota?: number; inodeQuota?: number; uid?: number; gid?: number; mode?: number } = {}): Volume {
    this.checkNew(name);
    return this.register(this.emptyVolume(name, opts));
  }

  private emptyVolume(name: string, opts: { quota?: number; inodeQuota?: number; uid?: number; gid?: number; mode?: number }): VolumeRec {
    checkQuota(opts.quota, 'quota must be a byte count');
    checkQuota(opts.inodeQuota, 'inode quota must be a count');
    const t = now();
    const rootRec: InodeRec = {
      mode: S_IFDIR | (opts.mode ?? 0o755), uid: opts.uid ?? 0, gid: opts.gid ?? 0, size: 0, nlink: 2,
      atime: t, mtime: t, ctime: t, btime: t, parent: [0, ROOT_LOCAL],
    };
    const root = this.tree.put(0, inodeKey(ROOT_LOCAL), rootRec);
    return {
      name, id: this.nextVolumeId++, created: Date.now(), origin: 'create', quota: opts.quota, inodeQuota: opts.inodeQuota,
      layers: [{ root, next: ROOT_LOCAL + 1 }], root: inoOf(0, ROOT_LOCAL), usage: { bytes: 0, inodes: 1, meta: 0 }, orphans: [],
    };
  }

  /** A point-in-time copy of src, sharing everything: O(number of layers), usually one. */
  clone(src: string, name: string): Volume {
    this.checkNew(name);
    return this.copy(src, name);
  }

  /** clone() without the name rules (hidden volumes have names no user can give). */
  private copy(src: string, name: string): Volume {
    this.assertWritable();
    const s = this.volume(src);
    s.flush();
    for (const l of s.rec.layers) this.tree.retain(l.root);
    const v = this.register({
      name, id: this.nextVolumeId++, created: Date.now(), origin: 'clone', parent: src, quota: s.rec.quota, inodeQuota: s.rec.inodeQuota,
      layers: s.rec.layers.map((l) => ({ ...l })), root: s.rec.root,
      usage: s.rec.usage ? { ...s.rec.usage } : null, orphans: [],
    });
    // Files unlinked-but-open in src are unreachable in the clone.
    for (const ino of s.rec.orphans) v.freeInode(ino);
    return v;
  }

  /**
   * A new volume made of subtrees of others. Each source volume's layers are appended to the new
   * volume's layer array (shared, not copied), and each selected subtree is linked in at its
   * destination: O(number of sources), whatever their size. See docs/store-format.md.
   */
  compose(name: string, sources: ComposeSource[]): Volume {
    this.checkNew(name);
    if (sources.length === 0) throw new PrismError('EINVAL', 'compose needs at least one --from');
    // Resolve everything first, so a bad source changes nothing.
    const resolved = sources.map((s) => {
      const v = this.volume(s.volume);
      const ino = v.resolve(s.path);
      const rec = v.inode(ino);
      const dest = normalizePath(s.dest ?? s.path);
      if (dest === '/' && !isDir(rec.mode)) throw new PrismError('ENOTDIR', `${s.volume}:${s.path} is not a directory and cannot be the root`);
      return { v, ino, rec, dest };
    });
    const roots = resolved.filter((r) => r.dest === '/');
    if (roots.length > 1) throw new PrismError('EINVAL', 'only one --from can be composed at /');
    const dests = new Set<string>();
    for (const r of resolved) {
      if (dests.has(r.dest)) throw new PrismError('EEXIST', `two sources compose to ${r.dest}`);
      dests.add(r.dest);
    }
    let layerCount = 1;
    const offsets = new Map<Volume, number>();
    for (const r of resolved) {
      if (!offsets.has(r.v)) { offsets.set(r.v, layerCount); layerCount += r.v.rec.layers.length; }
    }
    if (layerCount > MAX_LAYERS) throw new PrismError('ENOSPC', `compose would need ${layerCount} layers (limit ${MAX_LAYERS})`);

    const t = now();
    const layers = [{ root: 0, next: ROOT_LOCAL + 1 }];
    for (const [src, off] of offsets) {
      src.flush();
      src.rec.layers.forEach((l, i) => { this.tree.retain(l.root); layers[off + i] = { ...l }; });
    }
    const mapped = (r: typeof resolved[number]) => r.ino + offsets.get(r.v)! * LAYER_SPAN;
    const rootSrc = roots[0];
    let rootIno: number;
    if (rootSrc) {
      rootIno = mapped(rootSrc);
    } else {
      layers[0].root = this.tree.put(0, inodeKey(ROOT_LOCAL), {
        mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 0, nlink: 2, atime: t, mtime: t, ctime: t, btime: t, parent: [0, ROOT_LOCAL],
      } satisfies InodeRec);
      rootIno = inoOf(0, ROOT_LOCAL);
    }
    const v = this.register({
      name, id: this.nextVolumeId++, created: Date.now(), origin: 'compose',
      sources: [...new Set(sources.map((s) => s.volume))], layers, root: rootIno, usage: null, orphans: [],
    });
    if (rootSrc) v.graftParent(rootIno, rootIno);
    for (const r of resolved) {
      if (r === rootSrc) continue;
      const parts = r.dest.split('/').filter(Boolean);
      let dir = v.rootIno;
      for (const p of parts.slice(0, -1)) {
        let a;
        try { a = v.lookup(dir, p); } catch { a = v.mkdir(dir, p, 0o755, 0, 0); }
        if (!isDir(a.mode)) throw new PrismError('ENOTDIR', `${p} in ${r.dest} is not a directory`);
        dir = a.ino;
      }
      v.graftEntry(dir, parts[parts.length - 1], mapped(r));
    }
    v.rec.usage = null; // grafted subtrees are counted when first needed
    return v;
  }

  // ---- snapshots, pins and staged imports ---------------------------------------------------------

  /** A read-only point-in-time copy: a clone to which every change is EROFS. */
  snapshot(src: string, name: string): Volume {
    const v = this.clone(src, name);
    v.rec.readOnly = true;
    return v;
  }

  /**
   * Volume `name` gets the files of snapshot (or any volume) `from` back, as they are there; its
   * own name, id (the handles VMs hold), quota and origin stay. O(number of layers).
   */
  rollback(name: string, from: string): Volume {
    if (name === from) throw new PrismError('EINVAL', 'a volume cannot be rolled back to itself');
    return this.adopt(name, this.volume(from));
  }

  /**
   * A hidden read-only copy of src for a reader in another process (export or scan beside a serving
   * host): it keeps the tree and its blocks as they are while the reader works. Not listed; unpin()
   * removes it, and so does the next open of the store if its owner stopped first.
   */
  pin(src: string): string {
    const name = this.hiddenName('pin');
    const v = this.copy(src, name);
    v.rec.readOnly = true;
    v.rec.copyOf = src;
    return name;
  }

  unpin(name: string): void {
    if (!isHidden(name)) throw new PrismError('EINVAL', `${name} is not a pin`);
    if (this.has(name)) this.removeVolume(name);
  }

  /**
   * A hidden writable copy of `name` (an empty volume if there is none) for an import to fill, so
   * that a failed import changes nothing: publish() puts it in place, drop() throws it away, and
   * the next open of the store drops one left by a crash.
   */
  stage(name: string): Staged {
    this.assertWritable();
    checkVolumeName(name);
    const hidden = this.hiddenName('stage');
    const existed = this.has(name);
    const v = existed ? this.copy(name, hidden) : this.register(this.emptyVolume(hidden, {}));
    v.rec.copyOf = name;
    return {
      volume: v,
      publish: () => {
        if (!existed) {
          if (this.has(name)) throw new PrismError('EEXIST', `volume ${JSON.stringify(name)} was made meanwhile`);
          const rec = { ...structuredClone(v.rec), name };
          delete rec.copyOf;
          this.volumes.delete(hidden);
          this.volumeChanged(hidden);
          return this.register(rec);
        }
        const out = this.adopt(name, v);
        this.removeVolume(hidden);
        return out;
      },
      drop: () => { if (this.has(hidden)) this.removeVolume(hidden); },
    };
  }

  private hiddenName(kind: string): string {
    for (;;) {
      const name = `${HIDDEN}${kind}-${this.nextHidden++}`;
      if (!this.has(name)) return name;
    }
  }

  /**
   * Give volume `name` the tree of `from` (see rollback). In place: whoever holds the Volume (a
   * host's dispatcher, a caller) sees the new tree.
   */
  private adopt(name: string, from: Volume): Volume {
    this.assertWritable();
    const t = this.volume(name);
    from.flush();
    t.flush();
    for (const l of from.rec.layers) this.tree.retain(l.root);
    for (const l of t.rec.layers) this.tree.release(l.root);
    t.rec.layers = from.rec.layers.map((l) => ({ ...l }));
    t.rec.root = from.rec.root;
    t.rec.usage = from.rec.usage ? { ...from.rec.usage } : null;
    t.rec.orphans = []; // its unlinked-but-open files went with its old tree
    this.changed(t);
    for (const ino of from.rec.orphans) t.freeInode(ino); // unreachable in the copy
    return t;
  }

  /** Pins and staged imports left by a process that stopped first: nothing can use them now. */
  private dropHidden(): void {
    const hidden = this.allVolumeNames().filter(isHidden);
    for (const n of hidden) this.removeVolume(n);
    if (hidden.length) this.commit();
  }

  removeVolume(name: string): void {
    this.assertWritable();
    const v = this.volume(name);
    for (const l of v.rec.layers) this.tree.release(l.root);
    v.discardBuffered(); // out of the buffer budget; a logged block calls for a checkpoint
    this.volumes.delete(name);
    this.volumeChanged(name);
  }

  /** Set the byte quota (undefined removes it) and, unless undefined, the inode quota (null removes it). */
  setQuota(name: string, quota: number | undefined, inodeQuota?: number | null): void {
    this.assertWritable();
    checkQuota(quota, 'quota must be a byte count');
    checkQuota(inodeQuota ?? undefined, 'inode quota must be a count');
    const v = this.volume(name);
    v.rec.quota = quota;
    if (inodeQuota !== undefined) v.rec.inodeQuota = inodeQuota ?? undefined;
    this.changed(v);
  }

  info(name: string): VolumeInfo {
    const v = this.volume(name);
    v.flush(); // buffered partial blocks count once stored: logical and unique bytes of one moment
    const u = this.usage(v);
    return {
      name, origin: v.rec.origin, parent: v.rec.parent, sources: v.rec.sources,
      created: new Date(v.rec.created).toISOString(), quota: v.rec.quota, inodeQuota: v.rec.inodeQuota,
      logicalBytes: u.bytes, metadataBytes: u.meta, files: u.inodes, uniqueBytes: this.uniqueBytes(v),
    };
  }

  /** Bytes of blocks that only this volume references: what removing it would free. */
  uniqueBytes(v: Volume): number {
    v.flush();
    const mine = new Map<string, number>();
    for (const l of v.rec.layers) {
      // A layer root shared with another volume shares everything under it.
      this.tree.visitNodes(l.root, (_id, n, shared) => {
        if (shared) return false;
        if (n.l === 1) for (const val of n.v) if (Buffer.isBuffer(val)) {
          const k = val.toString('latin1');
          mine.set(k, (mine.get(k) ?? 0) + 1);
        }
      });
    }
    let bytes = 0;
    for (const [k, count] of mine) {
      const rec = this.blocks.get(Buffer.from(k, 'latin1'));
      if (rec && rec.r === count) bytes += rec.n;
    }
    return bytes;
  }

  statfs(name: string): StatFs {
    const v = this.volume(name);
    const u = this.usage(v);
    const host = fs.statfsSync(this.dir);
    const bsize = BLOCK_SIZE;
    const toBlocks = (bytes: number) => Math.floor(bytes / bsize);
    const hostFree = host.bavail * host.bsize;
    const total = v.rec.quota ?? host.blocks * host.bsize;
    const free = v.rec.quota === undefined ? hostFree : Math.min(hostFree, Math.max(0, v.rec.quota - u.bytes - u.meta));
    const numbers = Math.max(0, LAYER_SPAN - v.rec.layers[0].next);
    const ffree = v.rec.inodeQuota === undefined ? numbers : Math.min(numbers, Math.max(0, v.rec.inodeQuota - u.inodes));
    return {
      bsize, blocks: toBlocks(total), bfree: toBlocks(free), bavail: toBlocks(free),
      files: v.rec.inodeQuota ?? u.inodes + ffree, ffree, namemax: MAX_NAME,
    };
  }

  stats(): StoreStats {
    this.flushAll();
    let logical = 0;
    const names = this.volumeNames();
    for (const n of names) logical += this.usage(this.volume(n)).bytes;
    let segBytes = 0;
    for (const s of this.segments.list()) segBytes += this.segments.size(s);
    const physical = this.blocks.physical;
    return {
      volumes: names.length, logicalBytes: logical, physicalBytes: physical, blocks: this.blocks.count,
      dedupRatio: physical > 0 ? logical / physical : 1, savedBytes: Math.max(0, logical - physical),
      segmentFileBytes: segBytes, metadataFileBytes: fileSize(path.join(this.dir, 'meta.mdb')),
    };
  }

  // ---- durability -------------------------------------------------------------------------------

  private flushAll(keep?: KeepBlock): void {
    for (const v of this.volumes.values()) v.flush(keep);
  }

  /**
   * Hash and store buffered blocks a slice at a time, yielding to the event loop between slices: a
   * commit after a burst of small writes (thousands of blocks, ~0.1 ms each) then does not hold every
   * other VM's requests for the whole flush. Bounded by what is buffered when it starts; blocks
   * written meanwhile are the cut's. `before`: what the commit about to be cut stores (see cut);
   * none: everything.
   */
  async flushInSlices(opts: { before?: CommitKind } = {}, sliceBlocks = FLUSH_SLICE_BLOCKS): Promise<void> {
    if (opts.before === 'commit' && this.logOnly()) return; // it keeps every buffered block
    let left = 0;
    for (const v of this.volumes.values()) left += v.dirtyBlockCount;
    while (left > 0 && !this.closed && !this.readOnly) {
      const keep = this.keptBy(opts.before ?? 'whole');
      let n = 0;
      for (const v of this.volumes.values()) {
        if (n >= sliceBlocks) break;
        n += v.flushSome(sliceBlocks - n, keep);
      }
      if (n === 0) return;
      left -= n;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * What a commit of this kind leaves buffered: a COMMIT, blocks that only overwrite stored bytes
   * (their pages go to the intent log instead); a timed one, such blocks younger than its delay;
   * never a logged block once a checkpoint is due.
   */
  private keptBy(kind: CommitKind): KeepBlock | undefined {
    let kept: KeepBlock | undefined;
    if (kind === 'commit' && this.log) kept = this.logOnly() || this.logPays() ? loggable : loggedBefore;
    else if (kind === 'timed') kept = youngOverwrites();
    // A checkpoint is coming (a logged block was stored or dropped): the logged ones go with it.
    return kept && this.checkpointDue ? (d) => !d.logged && kept(d) : kept;
  }

  /**
   * Whether a COMMIT logs the blocks that only overwrite stored bytes: when there are enough of them
   * that hashing and storing them costs more than the log's own sync (a database's one page per
   * fsync is stored as before: a sync of the log beside LMDB's costs more than hashing one block).
   */
  private logPays(): boolean {
    let n = 0;
    const min = this.opts.logMinBlocks;
    for (const v of this.volumes.values()) if ((n += v.newlyLoggable(min - n)) >= min) return true;
    return false;
  }

  /**
   * Freeze everything changed so far for one commit; later changes collect apart (see commitDurable).
   * What it leaves buffered: keptBy(kind); a COMMIT appends the pages of what it leaves, written
   * since they were last logged, to the intent log.
   */
  private cut(kind: CommitKind = 'whole'): Cut {
    const log = kind === 'commit' ? this.log : null;
    this.flushAll(this.keptBy(kind));
    if (this.checkpointDue && this.log) {
      // Every logged block, in this cut, with the log files before now marked spent: replay must
      // never lay older pages over a block stored since.
      this.flushAll((d) => !d.logged);
      this.log.rotate();
      this.checkpointDue = false;
    }
    const logged = log ? this.appendUnlogged(log, []) > 0 : false;
    let segments: number[];
    try {
      segments = this.segments.cut();
    } catch (e) {
      if (logged) this.checkpointDue = true; // the batch will not be synced by this commit
      throw e;
    }
    const volumes = new Map<string, VolumeRec | null>();
    for (const name of this.changedVolumes) {
      const v = this.volumes.get(name);
      volumes.set(name, v ? structuredClone(v.rec) : null);
    }
    const names = new Set(this.changedVolumes);
    this.cutVolumes.push(names);
    this.changedVolumes.clear();
    this.beyondTimes = false;
    this.timesChanged.clear();
    return {
      nodes: this.nodes.cut(), blocks: this.blocks.cut(), volumes, names, segments, logged, written: false, superseded: false,
      meta: {
        nextNode: this.nodes.nextId, nextVolumeId: this.nextVolumeId, segActive: this.segments.active, segEnd: this.segments.end,
        logGen: this.log?.spentBelow ?? 0,
      },
    };
  }

  /** Put a cut's metadata in the current LMDB write transaction. */
  private writeCut(c: Cut): void {
    c.written = true;
    this.nodes.write(c.nodes);
    this.blocks.write(c.blocks);
    for (const [name, rec] of c.volumes) {
      if (rec) this.volumesDb.put(name, rec);
      else this.volumesDb.remove(name);
    }
    const meta: Meta = { ...c.meta, physical: this.blocks.physical, blocks: this.blocks.count };
    for (const [k, val] of Object.entries(meta)) this.metaDb.put(k, val);
  }

  /** A cut is durable (ok) or its commit failed before LMDB took it (its changes are pending again). */
  private settle(c: Cut, ok: boolean): void {
    const i = this.cutVolumes.indexOf(c.names);
    if (i >= 0) this.cutVolumes.splice(i, 1);
    if (ok) {
      this.nodes.settled(c.nodes);
      this.blocks.settled(c.blocks, true);
      this.log?.retire(c.meta.logGen);
      return;
    }
    this.nodes.failed(c.nodes);
    this.blocks.settled(c.blocks, false);
    for (const n of c.names) this.changedVolumes.add(n);
    this.beyondTimes = true;
    this.segments.unsyncedAgain(c.segments);
  }

  /**
   * Make every change so far durable, atomically. Blocks on fsync. A commitDurable in progress whose
   * metadata is not in LMDB yet is taken over (written first, in the same transaction); one already
   * in LMDB is ordered before this one by LMDB itself.
   */
  commit(): void {
    this.assertOpen();
    // Read-only: what reading computes (a composed volume's usage) stays in memory; changes cannot
    // be made (a snapshot's tree, LMDB and segments refuse them).
    if (this.readOnly) return;
    if (this.broken) throw new PrismError('EIO', `the store could not commit: ${this.broken.message}`);
    const inFlight = this.inFlight?.cut;
    const prior = inFlight && !inFlight.written && !inFlight.superseded ? inFlight : null;
    if (prior) prior.superseded = true;
    const c = this.cut();
    // Blocks.write counts the block totals as it writes: an aborted transaction must not keep them.
    const totals = { physical: this.blocks.physical, count: this.blocks.count };
    try {
      this.segments.syncNow(prior ? [...new Set([...prior.segments, ...c.segments])] : c.segments);
      this.env.transactionSync(() => {
        if (prior) this.writeCut(prior);
        this.writeCut(c);
      });
    } catch (e) {
      this.blocks.physical = totals.physical;
      this.blocks.count = totals.count;
      // prior is not in LMDB after all: the next commit() must take it over again, and a failure of
      // its own transaction before it wrote anything is not one after LMDB took it.
      if (prior) { prior.superseded = false; prior.written = false; }
      this.settle(c, false);
      throw e;
    }
    this.counts.commits++;
    if (prior) this.settle(prior, true);
    this.settle(c, true);
  }

  /**
   * Make every change so far durable, without blocking the event loop: the server's COMMIT.
   *
   * Group commit: one commit is in progress at a time; every caller that arrives meanwhile shares the
   * next one, which starts when it ends. So N COMMITs waiting cost one set of fsyncs, not N.
   *
   * Why metadata never becomes durable before the data it references, although the store keeps
   * changing while the fsyncs run:
   *  1. The cut (cut(), synchronous) writes every buffered block to its segment file (write(2)
   *     returned) and freezes the metadata changed so far: tree nodes, block records, volume records,
   *     the segment end. Later changes go to fresh maps; a frozen node or record is copied, never
   *     changed (LmdbNodeStore.edit, Blocks.adjust), so the cut stays exactly the state at that
   *     instant. Readers see live changes, then frozen ones, then LMDB.
   *  2. fdatasync of every segment appended to before the cut, on the thread pool. It starts after
   *     those writes returned, so it covers them. Blocks appended after the cut are not in it.
   *  3. Only when every fdatasync has succeeded is the cut handed to LMDB (an asynchronous write
   *     transaction: committed and flushed by lmdb-js's writer thread; we wait for `flushed`).
   *     Segment data is append-only and gc, which deletes segments, never runs beside a server.
   *  So the metadata that becomes durable references only data already durable. A blocking commit()
   *  meanwhile takes over a cut not yet in LMDB (writes it first, superseding it), and one already in
   *  LMDB is ordered by LMDB (and settling the blocking commit's cut forgets the older one too, see
   *  LmdbNodeStore.settled); a failure before LMDB puts the cut's changes back as pending.
   */
  commitDurable(opts: { timed?: boolean } = {}): Promise<void> {
    this.counts.requests++;
    if (!this.inFlight) return this.startCommit(!opts.timed);
    if (!opts.timed) this.nextWhole = true;
    this.next ??= this.inFlight.done.catch(() => undefined).then(() => {
      const whole = this.nextWhole;
      this.next = null;
      this.nextWhole = false;
      return this.startCommit(whole);
    });
    return this.next;
  }

  /**
   * whole: every change so far (a COMMIT). A timed commit (not whole) leaves overwrites of stored
   * bytes younger than OVERWRITE_DELAY_MS buffered: a block rewritten again and again is hashed and
   * stored once per delay, not once per commit, and a burst of small random writes is not hashed
   * while it still arrives (the agent's own COMMITs, every 5 s or at fsync, take them all).
   */
  private startCommit(whole: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new PrismError('EBADF', 'store is closed'));
    if (this.broken) return Promise.reject(new PrismError('EIO', `the store could not commit: ${this.broken.message}`));
    if (this.pendingChanges === 0 && !this.hasBufferedData()) return Promise.resolve();
    if (whole && this.logOnly()) return this.startLogOnly();
    let c: Cut;
    try {
      // writes buffered data out: a full or failing disk fails the promise, never the caller
      c = this.cut(whole ? 'commit' : 'timed');
    } catch (e) {
      return Promise.reject(e);
    }
    // Only buffered blocks kept for later (logged or young): nothing to write.
    if (isEmpty(c)) {
      this.settle(c, true);
      return Promise.resolve();
    }
    // The log's fdatasync runs beside the segments' and LMDB's: its pages lie over blocks that every
    // earlier commit already holds, so neither needs to be durable before the other.
    const logSynced = c.logged ? this.log!.sync().then(() => undefined, (e: Error) => { this.checkpointDue = true; return e; }) : undefined;
    const done = (async () => {
      try {
        await this.segments.syncAsync(c.segments);
      } catch (e) {
        if (!c.superseded) this.settle(c, false);
        throw e;
      }
      if (c.superseded) return;
      try {
        await this.env.transaction(() => { if (!c.superseded) this.writeCut(c); });
        await this.env.flushed;
      } catch (e) {
        if (c.written) {
          // LMDB may or may not hold it: the memory state can no longer be trusted to match.
          this.broken = e as Error;
        } else {
          this.settle(c, false);
        }
        throw e;
      }
      if (c.superseded) return;
      this.counts.commits++;
      this.settle(c, true);
      const logFailed = await logSynced;
      if (logFailed) throw logFailed;
    })().finally(() => { if (this.inFlight?.cut === c) this.inFlight = null; });
    this.inFlight = { cut: c, done };
    return done;
  }

  /**
   * Whether a COMMIT can be made durable by the intent log alone, without LMDB: nothing changed
   * since the last commit but the times of inodes and bytes of blocks over stored ones within their
   * files. Its pages and those times are all the next commit would hold that LMDB does not already;
   * replay lays them over LMDB's state, which is exactly the one they were written over (a database's
   * page and fdatasync: one log sync instead of storing the block, syncing its segment and LMDB).
   */
  private logOnly(): boolean {
    if (!this.log || this.beyondTimes || this.checkpointDue || this.blocks.pending > 0) return false;
    for (const v of this.volumes.values()) if (!v.onlyLoggable()) return false;
    return true;
  }

  /**
   * Append to the log, as one batch, the pages written over stored blocks since they were last logged
   * and `extra` records; mark those pages logged. Returns how many records went in.
   */
  private appendUnlogged(log: IntentLog, extra: LogRecord[]): number {
    const batches = [...this.volumes.values()].map((v) => v.unloggedPages());
    const records: LogRecord[] = [...batches.flatMap((b) => b.records), ...extra];
    try {
      log.append(records);
    } catch (e) {
      this.checkpointDue = true; // the pages may be anywhere in a torn batch: store them all next time
      throw e;
    }
    for (const b of batches) {
      b.logged();
      this.counts.logged += b.records.length;
    }
    return records.length;
  }

  /** A COMMIT by the intent log alone (see logOnly), in the place of a commit in the sequence. */
  private startLogOnly(): Promise<void> {
    const log = this.log!;
    const times: LogRecord[] = [];
    for (const [v, inos] of this.timesChanged) {
      for (const ino of inos) {
        const rec = v.inode(ino);
        times.push({ volume: v.rec.id, ino, atime: rec.atime, mtime: rec.mtime, ctime: rec.ctime });
      }
    }
    let appended: number;
    try {
      appended = this.appendUnlogged(log, times);
    } catch (e) {
      return Promise.reject(e);
    }
    // Everything pending was logged by COMMITs before (each durable before this one started).
    if (appended === 0) return Promise.resolve();
    // Logged: a later change of times is logged again; these stay pending for the next LMDB commit.
    this.timesChanged.clear();
    this.counts.logOnly++;
    const done = log.sync()
      .catch((e: unknown) => { this.checkpointDue = true; throw e; })
      .finally(() => { if (this.inFlight?.done === done) this.inFlight = null; });
    this.inFlight = { cut: null, done };
    return done;
  }

  /** Volumes hold partial blocks in memory until flushed. */
  private hasBufferedData(): boolean {
    return this.dirtyBytes > 0;
  }

  /** Resolves once no commitDurable is in progress or waiting (errors are the callers'). */
  async idle(): Promise<void> {
    while (this.inFlight || this.next) await (this.next ?? this.inFlight!.done).catch(() => undefined);
  }

  get commitCounters(): CommitCounters {
    return { ...this.counts, dataSyncs: this.segments.dataSyncs };
  }

  /** Between operations: flush buffered data or commit when enough is pending to bound memory. */
  maybeCommit(): boolean {
    if (this.dirtyBytes > this.opts.dirtyDataLimit) this.flushAll();
    if (this.nodes.pending + this.blocks.pending > this.opts.pendingLimit) {
      this.commit();
      return true;
    }
    return false;
  }

  get pendingChanges(): number {
    return this.nodes.pending + this.blocks.pending + this.changedVolumes.size;
  }

  /** Commit, then release the store. */
  close(): void {
    if (this.closed) return;
    try { this.commit(); } finally {
      this.closed = true;
      this.segments.close();
      this.log?.close();
      this.env.close();
      this.unlock();
    }
  }

  /** Release the store without committing (tests that simulate a crash use this). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.segments.close();
    this.log?.close();
    this.env.close();
    this.unlock();
  }

  private assertOpen(): void {
    if (this.closed) throw new PrismError('EBADF', 'store is closed');
  }

  assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new PrismError('EROFS', 'the store is open read-only (a host serves it)');
  }

  // ---- for gc and fsck ------------------------------------------------------------------------

  /** Every live layer root, with how many volume layers hold it. */
  layerRoots(): Map<number, number> {
    const roots = new Map<number, number>();
    for (const name of this.allVolumeNames()) {
      for (const l of this.volume(name).rec.layers) if (l.root) roots.set(l.root, (roots.get(l.root) ?? 0) + 1);
    }
    return roots;
  }

  get nodeStore(): LmdbNodeStore<TreeValue> { return this.nodes; }
}

export function normalizePath(p: string): string {
  const parts = p.split('/').filter((x) => x && x !== '.');
  if (parts.includes('..')) throw new PrismError('EINVAL', `path ${p} must not contain ..`);
  return '/' + parts.join('/');
}

/**
 * The store holds every VM's names, attributes and data: its directory is 0700 and what is in it
 * 0600 (directories 0700), two levels down (segments/, vms/). Stores made by older versions, or files
 * LMDB creates under the umask, are tightened here; what another user owns is left alone (not ours
 * to change) and symlinks are not followed.
 */
function makePrivate(dir: string): void {
  const uid = process.getuid?.();
  const fix = (p: string, depth: number): void => {
    let st: fs.Stats;
    try { st = fs.lstatSync(p); } catch { return; } // removed meanwhile
    if (st.isSymbolicLink() || (uid !== undefined && st.uid !== uid)) return;
    const want = st.isDirectory() ? 0o700 : 0o600;
    if ((st.mode & 0o7777) !== want) fs.chmodSync(p, want);
    if (st.isDirectory() && depth < 2) for (const f of fs.readdirSync(p)) fix(path.join(p, f), depth + 1);
  };
  fix(dir, 0);
}

/** A COMMIT that stores the blocks it could log keeps those logged before (storing one is a checkpoint). */
const loggedBefore: KeepBlock = (d) => loggable(d) && d.logged === true;

/** What a timed commit leaves buffered: overwrites of stored bytes younger than OVERWRITE_DELAY_MS. */
function youngOverwrites(): KeepBlock {
  const since = performance.now() - OVERWRITE_DELAY_MS;
  return (d) => deferrable(d, since);
}

function isEmpty(c: Cut): boolean {
  return c.nodes.dirty.size === 0 && c.nodes.rcDirty.size === 0 && c.blocks.dirty.size === 0 && c.volumes.size === 0
    && c.segments.length === 0 && !c.logged;
}

function checkQuota(q: number | undefined, why: string): void {
  if (q !== undefined && (!Number.isSafeInteger(q) || q < 0)) throw new PrismError('EINVAL', why);
}

function fileSize(p: string): number {
  try { return fs.statSync(p).size; } catch { return 0; }
}

