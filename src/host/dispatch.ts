// One VM's view of the store: turns validated VRPC requests into store calls. Everything a guest
// names goes through a handle that must verify with this VM's key and name one of its volumes.
import { PrismError } from '../errors.js';
import { HandleKey } from '../protocol/handles.js';
import { MAX_IO, WRITE_KEEP_TIMES, WRITE_STABLE_MASK, handlersByProc, type ProcHandlers } from '../protocol/procs.js';
import { validateArgs } from '../protocol/validate.js';
import { attrToWire, direntToWire, setAttrFromWire, setsSize, type WireAttr, type WireDirentPlus } from '../protocol/wire.js';
import { MAX_FILE_SIZE, MAX_NAME } from '../posix/limits.js';
import { isDir } from '../posix/mode.js';
import type { Attr, DirEntry, Time } from '../posix/types.js';
import { BLOCK_SIZE } from '../store/layout.js';
import { VmCounters } from './vm-counters.js';
import type { Store } from '../store/store.js';
import type { MadeAt } from '../store/namespace.js';
import type { Volume } from '../store/volume.js';
import type { MetaChanges, MetadataSink } from '../metadata-share/publisher.js';

export interface VmConfig {
  name: string;
  /** Volumes this VM may attach. */
  volumes: string[];
}

export interface DispatchHooks {
  /** Make acknowledged writes durable (COMMIT, stable WRITE): settles once they are (group commit). */
  commit(): Promise<void>;
  /**
   * The write verifier: 8 bytes that change whenever this host may have lost acknowledged unstable
   * writes (a new one each start). WRITE and COMMIT replies carry it, as in NFSv3.
   */
  verifier: Uint8Array;
  /** This VM's metadata table: warmed by what it asks, told of every change (src/metadata-share). */
  meta?: MetadataSink;
}

const DOTDOT = Buffer.from('..');
/** Inode numbers one RESERVE hands out at most. */
const RESERVE_BATCH = 128;
/** Reserved numbers a VM may hold unused; past it the oldest are forgotten (a posted create of one fails). */
const MAX_RESERVED = 4 * RESERVE_BATCH;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const FALLOC_KEEP_SIZE = 1;
const FALLOC_PUNCH_HOLE = 2;
const FALLOC_ZERO_RANGE = 0x10;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

export class Dispatcher {
  readonly key: HandleKey;
  private readonly scratch = Buffer.allocUnsafe(MAX_IO);

  constructor(private readonly store: Store, readonly vm: VmConfig, hostSecret: Buffer, private readonly hooks: DispatchHooks) {
    this.key = new HandleKey(hostSecret, vm.name);
    this.counters = new VmCounters(vm.name);
  }

  private volumeById(id: number): Volume {
    for (const name of this.vm.volumes) {
      if (!this.store.has(name)) continue;
      const v = this.store.volume(name);
      if (v.rec.id === id) return v;
    }
    throw new PrismError('ESTALE', 'handle names no volume of this VM');
  }

  private target(fh: Uint8Array): { v: Volume; ino: number } {
    const t = this.key.open(fh);
    return { v: this.volumeById(t.volumeId), ino: t.ino };
  }

  private fh(v: Volume, ino: number): Buffer {
    return this.key.make({ volumeId: v.rec.id, ino });
  }

  /** Inode numbers RESERVE gave this VM that no CREATE_AT or MKDIR_AT has used (reservedKey), oldest first. */
  private readonly reserved = new Set<string>();
  /** What this VM asked and got (`prism host status`). */
  readonly counters: VmCounters;
  /** Volumes this VM's agents attached (mounted) since it last connected anew: `volume rm` asks. */
  readonly attached = new Set<string>();

  /** A change the reply must wait for: other VMs' kernels forgetting what it made stale. */
  private pending: Promise<void> | undefined;

  /**
   * Run one request; throws PrismError on failure. The result is a promise only when the request
   * changed metadata that another VM's kernel may cache: it settles once that VM has let go.
   */
  call(proc: number, rawArgs: unknown[]): unknown[] | Promise<unknown[]> {
    this.pending = undefined;
    const start = this.counters.started(proc);
    let result: unknown[];
    try {
      result = this.run(proc, rawArgs);
    } catch (e) {
      this.counters.done(proc, rawArgs, start, undefined, e);
      throw e;
    }
    const pending = this.takePending();
    if (!pending) {
      this.counters.done(proc, rawArgs, start, result);
      return result;
    }
    return pending.then(
      () => { this.counters.done(proc, rawArgs, start, result); return result; },
      (e: unknown) => { this.counters.done(proc, rawArgs, start, undefined, e); throw e; },
    );
  }

  private takePending(): Promise<void> | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  private changed(v: Volume, c: MetaChanges): void {
    const p = this.hooks.meta?.changed(v, c);
    if (p) this.waitFor(p);
  }

  /** The reply waits for p too (a metadata lease, a commit). */
  private waitFor(p: Promise<void>): void {
    this.pending = this.pending ? Promise.all([this.pending, p]).then(() => undefined) : p;
  }

  /** The inode a name points at now, if any (what a REMOVE or RENAME is about to change). */
  private childOf(v: Volume, dir: number, name: Buffer): number | undefined {
    if (!this.hooks.meta) return undefined;
    try { return v.lookup(dir, name).ino; } catch { return undefined; }
  }

  private run(proc: number, rawArgs: unknown[]): unknown[] {
    const args = validateArgs(proc, rawArgs);
    const handler = this.handlers[proc];
    if (!handler) throw new PrismError('ENOSYS', `procedure ${proc} is not supported`);
    return handler.apply(undefined, args);
  }

  /** What each procedure does, with its arguments by name (validated: see protocol/procs.ts for their kinds). */
  private readonly procs: ProcHandlers = {
    null: () => [],
    attach: (name) => {
      if (!this.vm.volumes.includes(name)) throw new PrismError('EACCES', `volume ${name} is not attached to VM ${this.vm.name}`);
      const v = this.store.volume(name);
      this.attached.add(name);
      const attr = attrToWire(v.getattr(v.rootIno));
      this.hooks.meta?.sawAttr(v, v.rootIno, attr);
      return [this.fh(v, v.rootIno), attr];
    },
    getattr: (fh) => {
      const { v, ino } = this.target(fh);
      const attr = attrToWire(v.getattr(ino));
      this.hooks.meta?.sawAttr(v, ino, attr);
      return [attr];
    },
    setattr: (fh, set) => {
      const { v, ino } = this.target(fh);
      const attr = attrToWire(v.setattr(ino, setAttrFromWire(set)));
      const known: Array<[number, WireAttr]> = [[ino, attr]];
      this.changed(v, setsSize(set) ? { data: [ino], known } : { attrs: [ino], known });
      return [attr];
    },
    // A change of attributes only (a truncation changes data: SETATTR), stamped with the agent's time.
    setattrAt: (fh, set, time) => {
      if (setsSize(set)) throw new PrismError('EINVAL', 'SETATTR_AT does not change sizes (SETATTR does)');
      const { v, ino } = this.target(fh);
      const at: Time = [time[0], time[1]];
      const s = setAttrFromWire(set);
      if (s.atime === 'now') s.atime = at;
      if (s.mtime === 'now') s.mtime = at;
      const attr = attrToWire(v.setattr(ino, { ...s, ctime: at }));
      this.changed(v, { attrs: [ino], known: [[ino, attr]] });
      return [attr];
    },
    lookup: (dir, rawName) => {
      const meta = this.hooks.meta;
      const { v, ino } = this.target(dir);
      const name = Buffer.from(rawName);
      let attr;
      try {
        attr = v.lookup(ino, name);
      } catch (e) {
        if (e instanceof PrismError && e.code === 'ENOENT') meta?.sawEntry(v, ino, name, null);
        throw e;
      } finally {
        meta?.sawDir(v, ino);
      }
      const fh = this.fh(v, attr.ino);
      const wire = attrToWire(attr);
      meta?.sawEntry(v, ino, name, { fh, ino: attr.ino });
      meta?.sawAttr(v, attr.ino, wire);
      return [fh, wire];
    },
    access: (fh, mask, uid, gids) => { const { v, ino } = this.target(fh); v.access(ino, uid, gids, mask); return []; },
    readlink: (fh) => { const { v, ino } = this.target(fh); return [v.readlink(ino)]; },
    read: (fh, offset, count) => {
      const { v, ino } = this.target(fh);
      // Into a reused buffer: the reply is sent (copied) before the next request runs.
      const r = v.read(ino, offset, count, this.scratch);
      return [r.data, r.eof];
    },
    write: (fh, offset, data, stable) => {
      const { v, ino } = this.target(fh);
      const keepTimes = (stable & WRITE_KEEP_TIMES) !== 0;
      const attr = attrToWire(v.write(ino, offset, Buffer.from(data.buffer, data.byteOffset, data.byteLength), keepTimes));
      if ((stable & WRITE_STABLE_MASK) > 0) this.waitFor(this.hooks.commit());
      this.changed(v, { data: [ino], known: [[ino, attr]] });
      return [attr, data.byteLength, this.hooks.verifier];
    },
    create: (dir, name, mode, uid, gid, exclusive) => this.made(dir, name, (v, d, n) => v.create(d, n, mode, uid, gid, exclusive)),
    mkdir: (dir, name, mode, uid, gid) => this.made(dir, name, (v, d, n) => v.mkdir(d, n, mode, uid, gid)),
    reserve: (fh, count) => {
      const { v } = this.target(fh);
      const n = Math.min(count, RESERVE_BATCH);
      if (n === 0) return [0, []];
      const first = v.reserveInos(n);
      const handles: Uint8Array[] = [];
      for (let ino = first; ino < first + n; ino++) {
        this.reserved.add(reservedKey(v.rec.id, ino));
        handles.push(this.fh(v, ino));
      }
      // An agent uses what it reserves: one that hoards loses its oldest numbers (host memory stays bounded).
      for (const k of this.reserved) {
        if (this.reserved.size <= MAX_RESERVED) break;
        this.reserved.delete(k);
      }
      return [first, handles];
    },
    createAt: (dir, name, mode, uid, gid, fh, time) => this.madeAt(dir, name, fh, (v, d, n, at) => v.create(d, n, mode, uid, gid, true, at), time),
    mkdirAt: (dir, name, mode, uid, gid, fh, time) => this.madeAt(dir, name, fh, (v, d, n, at) => v.mkdir(d, n, mode, uid, gid, at), time),
    symlink: (dir, name, target, uid, gid) => this.made(dir, name, (v, d, n) => v.symlink(d, n, Buffer.from(target), uid, gid)),
    mknod: (dir, name, mode, rdev, uid, gid) => this.made(dir, name, (v, d, n) => v.mknod(d, n, mode, rdev, uid, gid)),
    remove: (dir, name) => this.removed(dir, Buffer.from(name), false),
    removeAt: (dir, name, time) => this.removed(dir, Buffer.from(name), false, [time[0], time[1]]),
    rmdir: (dir, name) => this.removed(dir, Buffer.from(name), true),
    rename: (fromDir, fromRaw, toDir, toRaw, flags) => this.renamed(fromDir, fromRaw, toDir, toRaw, flags),
    renameAt: (fromDir, fromRaw, toDir, toRaw, flags, time) => this.renamed(fromDir, fromRaw, toDir, toRaw, flags, [time[0], time[1]]),
    link: (fh, dirFh, rawName) => {
      const src = this.target(fh);
      const dir = this.target(dirFh);
      if (src.v !== dir.v) throw new PrismError('EXDEV', 'link across volumes');
      const name = Buffer.from(rawName);
      const attr = src.v.link(src.ino, dir.ino, name);
      this.changed(src.v, { attrs: [src.ino, dir.ino], entries: [[dir.ino, name]] });
      return [attrToWire(attr)];
    },
    readdir: (dir, cookie, count) => {
      const { page, eof } = this.page(dir, cookie, count);
      return [page.map(direntToWire), eof];
    },
    readdirplus: (dir, cookie, count) => {
      const meta = this.hooks.meta;
      const { v, ino, page, eof } = this.page(dir, cookie, count);
      return [page.map((e): WireDirentPlus => {
        const fh = this.fh(v, e.ino);
        const attr = attrToWire(v.getattr(e.ino));
        meta?.sawEntry(v, ino, e.name, { fh, ino: e.ino });
        meta?.sawAttr(v, e.ino, attr);
        return [e.name, fh, attr];
      }), eof];
    },
    fsstat: (fh) => {
      const { v } = this.target(fh);
      const s = this.store.statfs(v.name);
      return [s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.namemax];
    },
    fsinfo: (fh) => { this.target(fh); return [MAX_IO, MAX_IO, MAX_FILE_SIZE, BLOCK_SIZE]; },
    pathconf: (fh) => { this.target(fh); return [65000, MAX_NAME]; },
    commit: (fh) => { this.target(fh); this.waitFor(this.hooks.commit()); return [this.hooks.verifier]; },
    getxattr: (fh, name) => { const { v, ino } = this.target(fh); return [v.getxattr(ino, Buffer.from(name))]; },
    setxattr: (fh, name, value, how) => {
      const { v, ino } = this.target(fh);
      v.setxattr(ino, Buffer.from(name), Buffer.from(value), how === 1 ? 'create' : how === 2 ? 'replace' : 'either');
      this.changed(v, { attrs: [ino] });
      return [];
    },
    listxattr: (fh) => { const { v, ino } = this.target(fh); return [v.listxattr(ino)]; },
    removexattr: (fh, name) => { const { v, ino } = this.target(fh); v.removexattr(ino, Buffer.from(name)); this.changed(v, { attrs: [ino] }); return []; },
    // Pins are this VM's: another VM's CLOSE cannot release them (docs/store-limits.md).
    open: (fh) => { const { v, ino } = this.target(fh); v.open(ino, this.vm.name); return []; },
    close: (fh) => { const { v, ino } = this.target(fh); v.close(ino, this.vm.name); return []; },
    fallocate: (fh, offset, length, mode) => {
      const { v, ino } = this.target(fh);
      if (mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) throw new PrismError('ENOTSUP', `fallocate mode ${mode} is not supported`);
      const attr = v.fallocate(ino, offset, length, { keepSize: !!(mode & FALLOC_KEEP_SIZE), punchHole: !!(mode & FALLOC_PUNCH_HOLE), zeroRange: !!(mode & FALLOC_ZERO_RANGE) });
      this.changed(v, { data: [ino] });
      return [attrToWire(attr)];
    },
    seek: (fh, offset, whence) => {
      const { v, ino } = this.target(fh);
      if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new PrismError('EINVAL', 'whence must be SEEK_DATA (3) or SEEK_HOLE (4)');
      return [v.seek(ino, offset, whence === SEEK_DATA ? 'data' : 'hole')];
    },
    copyRange: (srcFh, srcOffset, dstFh, dstOffset, length) => {
      const src = this.target(srcFh);
      const dst = this.target(dstFh);
      if (src.v !== dst.v) throw new PrismError('EXDEV', 'copy across volumes');
      const r = dst.v.copyRange(src.ino, srcOffset, dst.ino, dstOffset, length);
      this.changed(dst.v, { data: [dst.ino] });
      return [r.copied, attrToWire(r.attr)];
    },
  };

  private readonly handlers = handlersByProc(this.procs);

  /** One page of a directory (READDIR, READDIRPLUS): at most `count` entries (1-4096) after `cookie`. */
  private page(dir: Uint8Array, cookie: Uint8Array, count: number): { v: Volume; ino: number; page: DirEntry[]; eof: boolean } {
    const { v, ino } = this.target(dir);
    const limit = Math.max(1, Math.min(count, 4096));
    const entries = v.readdir(ino, cookie.length ? Buffer.from(cookie) : null, limit + 1);
    return { v, ino, page: entries.slice(0, limit), eof: entries.length <= limit };
  }

  /** RENAME, RENAME_AT (`at`: the agent's time for the change). */
  private renamed(fromDir: Uint8Array, fromRaw: Uint8Array, toDir: Uint8Array, toRaw: Uint8Array, flags: number, at?: Time): [] {
    const from = this.target(fromDir);
    const to = this.target(toDir);
    if (from.v !== to.v) throw new PrismError('EXDEV', 'rename across volumes');
    const fromName = Buffer.from(fromRaw), toName = Buffer.from(toRaw);
    const moved = [this.childOf(from.v, from.ino, fromName), this.childOf(to.v, to.ino, toName)].filter((x): x is number => x !== undefined);
    from.v.rename(from.ino, fromName, to.ino, toName, { noreplace: !!(flags & RENAME_NOREPLACE), exchange: !!(flags & RENAME_EXCHANGE) }, at);
    // A directory moved to another parent has a new "..".
    const parents: Array<[number, Buffer]> = from.ino === to.ino ? [] : moved.map((m) => [m, DOTDOT]);
    this.changed(from.v, { attrs: [from.ino, to.ino, ...moved], entries: [[from.ino, fromName], [to.ino, toName], ...parents] });
    return [];
  }

  /** REMOVE, REMOVE_AT (`at`: the agent's time for the change), RMDIR. */
  private removed(dir: Uint8Array, name: Buffer, isDir: boolean, at?: Time): [] {
    const { v, ino } = this.target(dir);
    const child = this.childOf(v, ino, name);
    if (isDir) v.rmdir(ino, name);
    else v.unlink(ino, name, at);
    const gone: Array<[number, Buffer]> = isDir && child !== undefined ? [[child, DOTDOT]] : [];
    // The name points at nothing now (it was just removed).
    this.changed(v, { attrs: child === undefined ? [ino] : [ino, child], entries: [[ino, name, null], ...gone] });
    return [];
  }

  private made(dirFh: Uint8Array, rawName: Uint8Array, make: (v: Volume, dir: number, name: Buffer) => Attr): [Uint8Array, WireAttr] {
    const { v, ino } = this.target(dirFh);
    const name = Buffer.from(rawName);
    const made = make(v, ino, name);
    return [this.fh(v, made.ino), this.publishMade(v, ino, name, made)];
  }

  /**
   * CREATE_AT, MKDIR_AT: make the inode the agent reserved (RESERVE) and already told its kernel of,
   * at the time it chose. Each reserved number is made once: a number this VM was not given, or used
   * already, is EINVAL; one sent again after a reconnect whose make was applied answers as then.
   */
  private madeAt(dirFh: Uint8Array, rawName: Uint8Array, fh: Uint8Array, make: (v: Volume, dir: number, name: Buffer, at: MadeAt) => Attr,
    time: [number, number]): [WireAttr] {
    const { v, ino } = this.target(dirFh);
    const child = this.target(fh);
    if (child.v !== v) throw new PrismError('EINVAL', 'the new inode\'s handle names another volume');
    const name = Buffer.from(rawName);
    if (!this.reserved.delete(reservedKey(v.rec.id, child.ino))) {
      let there: number | undefined;
      try { there = v.lookup(ino, name).ino; } catch { /* not made */ }
      if (there === child.ino) return [attrToWire(v.getattr(child.ino))];
      throw new PrismError('EINVAL', `inode ${child.ino} is not one this VM reserved and has not used`);
    }
    return [this.publishMade(v, ino, name, make(v, ino, name, { ino: child.ino, time: [time[0], time[1]] }))];
  }

  /** Tell the tables of a new inode: its directory changed, the name, its attributes (as the store answered them). */
  private publishMade(v: Volume, dir: number, name: Buffer, made: Attr): WireAttr {
    const attr = attrToWire(made);
    this.changed(v, { attrs: [dir], entries: [[dir, name, made.ino]], known: [[made.ino, attr]] });
    // A new directory is empty: shared whole (complete) at once, so its first lookups need no RPC.
    if (isDir(made.mode)) this.hooks.meta?.sawDir(v, made.ino);
    return attr;
  }
}

function reservedKey(volumeId: number, ino: number): string {
  return `${volumeId}:${ino}`;
}
