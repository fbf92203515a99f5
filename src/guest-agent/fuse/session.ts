// The FUSE request loop: read requests from /dev/fuse as the event loop sees it readable, decode,
// call the FileSystem, encode, write the reply. Requests are handled concurrently (many in flight).
import fs from 'node:fs';
import { PrismError, errnoOf } from '../../errors.js';
import { log } from '../../log.js';
import type { Ctx, FileSystem, FuseSetAttr } from './fs.js';
import type { Time } from '../../posix/types.js';
import * as native from '../../native/mount.js';
import * as P from './protocol.js';
import { entriesThatFit, firstAfter, inPositionOrder, type PositionedListing } from './dir-positions.js';

const ENOSYS = errnoOf('ENOSYS');
const EIO = errnoOf('EIO');
const EINTR = errnoOf('EINTR');

export interface SessionOptions extends Partial<P.CacheTimes> {
  /**
   * Let the kernel keep directory listings (FOPEN_CACHE_DIR), files' pages across opens
   * (FOPEN_KEEP_CACHE) and names found absent (negative dentries, for the entry timeout), until a
   * change invalidates them: its own mutations do (the kernel bumps the directory's version, writes go
   * through its page cache, a create replaces the negative dentry), and the caller must send
   * FUSE_NOTIFY_INVAL_ENTRY / INVAL_INODE with pages for every change made elsewhere. AUTO_INVAL_DATA
   * comes with it: whenever the kernel refreshes attributes it drops the pages of a node whose mtime or
   * size moved, and a listing filled while the change happened (docs/agent.md).
   */
  keepCaches?: boolean;
  /**
   * FUSE_WRITEBACK_CACHE: writes land in the kernel's page cache and reach the file system merged, at
   * writeback, fsync or close. The kernel then trusts its own size, mtime and ctime of a regular file
   * over any answer (an invalidation cannot refresh them), so only for a volume no one else changes
   * (docs/agent.md, "Writeback cache").
   */
  writebackCache?: boolean;
}

/** Requests that change nothing: when the kernel interrupts one, it is answered EINTR at once. */
const ABANDONABLE = new Set<number>([
  P.Op.LOOKUP, P.Op.GETATTR, P.Op.READLINK, P.Op.READ, P.Op.STATFS, P.Op.GETXATTR, P.Op.LISTXATTR,
  P.Op.FLUSH, P.Op.FSYNC, P.Op.FSYNCDIR, P.Op.OPENDIR, P.Op.READDIR, P.Op.READDIRPLUS, P.Op.ACCESS, P.Op.LSEEK,
]);

export class Session {
  private closed = false;
  /** Directories' listings by node, most recently fetched last (dir-positions.ts: any reader may resume in any). */
  private readonly listings = new Map<bigint, CachedListing>();
  /** The kernel opens directories without asking (set at INIT: FUSE_NO_OPENDIR_SUPPORT, where it keeps listings). */
  private opensDirsItself = false;
  /** Requests being handled: unique -> opcode. A reply is sent only while its request is here. */
  private readonly inFlight = new Map<bigint, number>();
  private readonly pool: Buffer[] = [];
  readonly times: P.CacheTimes;
  private readonly keepCaches: boolean;
  private readonly writebackCache: boolean;
  /** open_flags of an OPEN or CREATE reply: keep the file's pages where the caller keeps them coherent. */
  private readonly fileOpenFlags: number;

  constructor(readonly fd: number, readonly fs: FileSystem, opts: SessionOptions = {}) {
    this.times = { entrySec: opts.entrySec ?? 1, attrSec: opts.attrSec ?? 1 };
    this.keepCaches = opts.keepCaches ?? false;
    this.writebackCache = opts.writebackCache ?? false;
    this.fileOpenFlags = this.keepCaches ? P.FOPEN.KEEP_CACHE : 0;
  }

  /** Serve until the file system is unmounted (a read then fails with ENODEV). */
  serve(): Promise<void> {
    return new Promise((resolve, reject) => {
      const stop = native.watch(this.fd, () => {
        const err = this.readOne();
        if (err === undefined) return;
        stop();
        this.closed = true;
        if (err === null) resolve();
        else reject(err);
      });
    });
  }

  /**
   * Read one waiting request (the fd is non-blocking) and start handling it. Returns undefined to go
   * on, null once unmounted, or an unexpected error. One read per wake-up: the watch is
   * level-triggered, so more requests call again, and no read is wasted on an empty queue (EAGAIN).
   */
  private readOne(): Error | null | undefined {
    const buf = this.pool.pop() ?? Buffer.allocUnsafe(P.BUFFER_SIZE);
    let n: number;
    try {
      n = fs.readSync(this.fd, buf, 0, buf.length, null);
    } catch (e) {
      this.pool.push(buf);
      const code = (e as NodeJS.ErrnoException).code;
      // EAGAIN: another wake-up took it; ENOENT/EINTR: the request was interrupted meanwhile.
      if (code === 'EAGAIN' || code === 'ENOENT' || code === 'EINTR') return undefined;
      return code === 'ENODEV' ? null : (e as Error);
    }
    if (n === 0) { this.pool.push(buf); return null; }
    void this.handle(buf.subarray(0, n)).finally(() => { if (this.pool.length < 16) this.pool.push(buf); });
    return undefined;
  }

  private reply(unique: bigint, errno: number, body?: Buffer): void {
    if (this.closed || !this.inFlight.delete(unique)) return;
    try {
      const header = P.encodeOutHeader(unique, errno, body?.length ?? 0);
      if (body && body.length) fs.writevSync(this.fd, [header, body]);
      else fs.writeSync(this.fd, header);
    } catch {
      /* the kernel dropped the request (interrupted) or the mount is gone */
    }
  }

  private async handle(req: Buffer): Promise<void> {
    const h = P.decodeInHeader(req);
    const body = req.subarray(P.IN_HEADER);
    const ctx: Ctx = { uid: h.uid, gid: h.gid, pid: h.pid };
    this.inFlight.set(h.unique, h.opcode);
    try {
      const out = await this.dispatch(h, body, ctx);
      if (out !== null) this.reply(h.unique, 0, out);
      else if (h.opcode !== P.Op.READ) this.inFlight.delete(h.unique);
    } catch (e) {
      const errno = e instanceof PrismError ? e.errno : e instanceof NoSys ? ENOSYS : EIO;
      if (errno === EIO) log.warn({ op: h.opcode, err: (e as Error).message }, 'request failed');
      this.reply(h.unique, errno);
    }
  }

  /** Returns the reply body, undefined for an empty reply, null for no reply at all. */
  private async dispatch(h: P.InHeader, b: Buffer, ctx: Ctx): Promise<Buffer | undefined | null> {
    const f = this.fs;
    const ino = h.nodeid;
    const t = this.times;
    switch (h.opcode) {
      case P.Op.INIT:
        this.opensDirsItself = this.keepCaches && (b.readUInt32LE(12) & P.InitFlag.NO_OPENDIR_SUPPORT) !== 0;
        return P.encodeInitOut(b.readUInt32LE(12),
          (this.keepCaches ? P.InitFlag.AUTO_INVAL_DATA : 0) | (this.writebackCache ? P.InitFlag.WRITEBACK_CACHE : 0)
          | (f.killsPrivileges ? P.InitFlag.HANDLE_KILLPRIV_V2 : 0));
      case P.Op.DESTROY:
        return undefined;
      case P.Op.INTERRUPT: {
        const target = b.readBigUInt64LE(0);
        const op = this.inFlight.get(target);
        if (op !== undefined && ABANDONABLE.has(op)) this.reply(target, EINTR);
        return null;
      }
      case P.Op.FORGET:
        f.forget?.(ino, b.readBigUInt64LE(0));
        return null;
      case P.Op.BATCH_FORGET: {
        const count = b.readUInt32LE(0);
        for (let i = 0; i < count; i++) f.forget?.(b.readBigUInt64LE(8 + i * 16), b.readBigUInt64LE(16 + i * 16));
        return null;
      }
      case P.Op.LOOKUP: {
        const name = P.cstring(b, 0)[0];
        try {
          return P.encodeEntry(await f.lookup(ctx, ino, name), t);
        } catch (e) {
          // The kernel keeps the absence as a negative dentry: the caller's invalidations of names made
          // elsewhere (FUSE_NOTIFY_INVAL_ENTRY) drop those too.
          if (this.keepCaches && e instanceof PrismError && e.code === 'ENOENT') return P.encodeNegativeEntry(t);
          throw e;
        }
      }
      case P.Op.GETATTR:
        return P.encodeAttrOut(await f.getattr(ctx, ino), t);
      case P.Op.SETATTR: {
        const valid = b.readUInt32LE(0);
        const s: FuseSetAttr = {};
        const time = (sec: number, nsec: number): Time => [Number(b.readBigInt64LE(sec)), b.readUInt32LE(nsec)];
        if (valid & P.FATTR.MODE) s.mode = b.readUInt32LE(68);
        if (valid & P.FATTR.UID) s.uid = b.readUInt32LE(76);
        if (valid & P.FATTR.GID) s.gid = b.readUInt32LE(80);
        if (valid & P.FATTR.SIZE) s.size = b.readBigUInt64LE(16);
        if (valid & P.FATTR.ATIME) s.atime = valid & P.FATTR.ATIME_NOW ? 'now' : time(32, 56);
        if (valid & P.FATTR.MTIME) s.mtime = valid & P.FATTR.MTIME_NOW ? 'now' : time(40, 60);
        if (valid & P.FATTR.CTIME) s.ctime = time(48, 64);
        if (valid & P.FATTR.KILL_SUIDGID) s.killSuidgid = true;
        return P.encodeAttrOut(await need(f.setattr).call(f, ctx, ino, s), t);
      }
      case P.Op.READLINK:
        return Buffer.from(await need(f.readlink).call(f, ctx, ino), 'latin1');
      case P.Op.SYMLINK: {
        const [name, o] = P.cstring(b, 0);
        return P.encodeEntry(await need(f.symlink).call(f, ctx, ino, name, P.cstring(b, o)[0]), t);
      }
      case P.Op.MKNOD:
        return P.encodeEntry(await need(f.mknod).call(f, ctx, ino, P.cstring(b, 16)[0], b.readUInt32LE(0) & ~b.readUInt32LE(8), b.readUInt32LE(4)), t);
      case P.Op.MKDIR:
        return P.encodeEntry(await need(f.mkdir).call(f, ctx, ino, P.cstring(b, 8)[0], b.readUInt32LE(0) & ~b.readUInt32LE(4)), t);
      case P.Op.UNLINK:
        await need(f.unlink).call(f, ctx, ino, P.cstring(b, 0)[0]);
        return undefined;
      case P.Op.RMDIR:
        await need(f.rmdir).call(f, ctx, ino, P.cstring(b, 0)[0]);
        return undefined;
      case P.Op.RENAME:
      case P.Op.RENAME2: {
        const two = h.opcode === P.Op.RENAME2;
        const [from, o] = P.cstring(b, two ? 16 : 8);
        await need(f.rename).call(f, ctx, ino, from, b.readBigUInt64LE(0), P.cstring(b, o)[0], two ? b.readUInt32LE(8) : 0);
        return undefined;
      }
      case P.Op.LINK:
        return P.encodeEntry(await need(f.link).call(f, ctx, b.readBigUInt64LE(0), ino, P.cstring(b, 8)[0]), t);
      case P.Op.OPEN:
        return P.encodeOpenOut(f.open ? await f.open(ctx, ino, b.readUInt32LE(0), (b.readUInt32LE(4) & P.OPEN_KILL_SUIDGID) !== 0) : 0n, this.fileOpenFlags);
      case P.Op.CREATE: {
        const r = await need(f.create).call(f, ctx, ino, P.cstring(b, 16)[0], b.readUInt32LE(4) & ~b.readUInt32LE(8), b.readUInt32LE(0), (b.readUInt32LE(12) & P.OPEN_KILL_SUIDGID) !== 0);
        return Buffer.concat([P.encodeEntry(r.entry, t), P.encodeOpenOut(r.fh, this.fileOpenFlags)]);
      }
      case P.Op.READ: {
        // The data is written to the kernel as it arrives (straight from shared memory).
        const send = (d: Uint8Array) => this.reply(h.unique, 0, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
        await need(f.read).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readUInt32LE(16), send);
        return null;
      }
      case P.Op.WRITE: {
        const size = b.readUInt32LE(16);
        const n = await need(f.write).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.subarray(40, 40 + size), (b.readUInt32LE(20) & P.WRITE_KILL_SUIDGID) !== 0);
        return P.encodeCount(n);
      }
      case P.Op.FLUSH:
        if (f.flush) await f.flush(ctx, ino, b.readBigUInt64LE(0));
        return undefined;
      case P.Op.RELEASE:
        if (f.release) await f.release(ctx, ino, b.readBigUInt64LE(0));
        return undefined;
      case P.Op.FSYNC:
      case P.Op.FSYNCDIR:
        if (f.fsync) await f.fsync(ctx, ino, b.readBigUInt64LE(0), (b.readUInt32LE(8) & 1) !== 0);
        return undefined;
      case P.Op.OPENDIR:
        // ENOSYS once, and the kernel stops sending OPENDIR and RELEASEDIR: it then opens every
        // directory as KEEP_CACHE | CACHE_DIR, which is what this session answers where it keeps caches.
        if (this.opensDirsItself) throw new NoSys();
        return P.encodeOpenOut(f.opendir ? await f.opendir(ctx, ino) : 0n, this.keepCaches ? P.FOPEN.CACHE_DIR | P.FOPEN.KEEP_CACHE : 0);
      case P.Op.READDIR:
      case P.Op.READDIRPLUS:
        return this.readdir(ctx, ino, b, h.opcode === P.Op.READDIRPLUS);
      case P.Op.RELEASEDIR:
        if (f.releasedir) await f.releasedir(ctx, ino, b.readBigUInt64LE(0));
        return undefined;
      case P.Op.STATFS:
        return P.encodeStatfs(f.statfs ? await f.statfs(ctx, ino) : { blocks: 0n, bfree: 0n, bavail: 0n, files: 0n, ffree: 0n, bsize: 4096, namelen: 255 });
      case P.Op.ACCESS:
        if (f.access) await f.access(ctx, ino, b.readUInt32LE(0));
        return undefined;
      case P.Op.GETXATTR: {
        const value = await need(f.getxattr).call(f, ctx, ino, P.cstring(b, 8)[0]);
        return sized(value, b.readUInt32LE(0));
      }
      case P.Op.LISTXATTR: {
        const names = await need(f.listxattr).call(f, ctx, ino);
        return sized(Buffer.concat(names.map((n) => Buffer.from(`${n}\0`, 'latin1'))), b.readUInt32LE(0));
      }
      case P.Op.SETXATTR: {
        const size = b.readUInt32LE(0);
        const [name, o] = P.cstring(b, 8);
        await need(f.setxattr).call(f, ctx, ino, name, Buffer.from(b.subarray(o, o + size)), b.readUInt32LE(4));
        return undefined;
      }
      case P.Op.REMOVEXATTR:
        await need(f.removexattr).call(f, ctx, ino, P.cstring(b, 0)[0]);
        return undefined;
      case P.Op.FALLOCATE:
        await need(f.fallocate).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readUInt32LE(24));
        return undefined;
      case P.Op.LSEEK: {
        return P.encodeOffset(await need(f.lseek).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readUInt32LE(16)));
      }
      case P.Op.COPY_FILE_RANGE: {
        const n = await need(f.copyFileRange).call(f, ctx,
          { ino, fh: b.readBigUInt64LE(0), offset: b.readBigUInt64LE(8) },
          { ino: b.readBigUInt64LE(16), fh: b.readBigUInt64LE(24), offset: b.readBigUInt64LE(32) },
          b.readBigUInt64LE(40));
        return P.encodeCount(n);
      }
      default:
        throw new NoSys();
    }
  }

  /**
   * READDIR(PLUS) from a position: the listing is fetched at the start of a directory (the kernel
   * reads from 0 after every open or rewind where it keeps no listing) and served from the session's
   * copy for the next positions, for a short while: a plus listing carries attributes, which must not
   * grow old in it.
   */
  private async readdir(ctx: Ctx, ino: bigint, b: Buffer, plus: boolean): Promise<Buffer> {
    const pos = Number(b.readBigUInt64LE(8));
    const size = b.readUInt32LE(16);
    let l = this.listings.get(ino);
    if (!l || pos === 0 || (plus && !l.plus) || performance.now() - l.at > LISTING_REUSE_MS) {
      const list = await need(this.fs.readdir).call(this.fs, ctx, ino, b.readBigUInt64LE(0), plus);
      l = { ...inPositionOrder(list), plus, at: performance.now() };
      this.listings.delete(ino);
      this.listings.set(ino, l);
      if (this.listings.size > MAX_LISTINGS) this.listings.delete(this.listings.keys().next().value!);
    }
    const start = firstAfter(l, pos);
    const n = entriesThatFit(l, start, size, (e) => P.direntSize(e.name.length, plus));
    if (plus && this.fs.remember) {
      for (let i = start; i < start + n; i++) {
        const e = l.entries[i]!;
        if (e.entry && e.name !== '.' && e.name !== '..') this.fs.remember(e.entry); // the kernel now holds a lookup on it
      }
    }
    return P.encodeDirents(l.entries, l.positions, start, n, plus, this.times);
  }
}

interface CachedListing extends PositionedListing {
  /** Entries carry attributes (READDIRPLUS). */
  plus: boolean;
  /** When it was fetched (performance.now()). */
  at: number;
}
/** Directories whose listings are kept at once. */
const MAX_LISTINGS = 64;
/** How long a listing serves the positions after the first (ms). */
const LISTING_REUSE_MS = 1000;

/** An xattr reply: the size alone when asked with size 0, ERANGE when it does not fit. */
function sized(value: Buffer, size: number): Buffer {
  if (size === 0) return P.encodeCount(value.length);
  if (value.length > size) throw new PrismError('ERANGE', 'buffer too small');
  return value;
}

class NoSys extends Error {}
function need<T>(m: T | undefined): T {
  if (!m) throw new NoSys();
  return m;
}

/** Mount `filesystem` on `mountpoint` and start serving; `done` settles when it is unmounted. */
export interface MountOptions extends SessionOptions {
  fsname?: string;
  /** Runs once the kernel has let go of the mount, before its /dev/fuse descriptor is closed. */
  beforeClose?(): Promise<void>;
}

export function mountAndServe(mountpoint: string, filesystem: FileSystem, opts: MountOptions = {}): { session: Session; fd: number; done: Promise<void> } {
  const fd = native.mount(mountpoint, opts.fsname ?? 'prism');
  const session = new Session(fd, filesystem, opts);
  const done = session.serve().finally(() => opts.beforeClose?.()).finally(() => native.close(fd));
  return { session, fd, done };
}
