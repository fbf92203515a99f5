// The FUSE request loop: read a request from /dev/fuse (worker thread), decode, call the
// FileSystem, encode, write the reply. Requests are handled concurrently (many in flight).
import fs from 'node:fs';
import { PrismError } from '../../errors.js';
import type { Ctx, FileSystem, SetAttrIn } from './fs.js';
import * as native from './native.js';
import * as P from './protocol.js';

const ENOSYS = 38;
const EIO = 5;

export class Session {
  private closed = false;
  private readonly dirs = new Map<bigint, Buffer[]>();
  constructor(readonly fd: number, readonly fs: FileSystem) {}

  /** Serve until the file system is unmounted (read returns ENODEV). */
  async serve(): Promise<void> {
    for (;;) {
      const buf = Buffer.allocUnsafe(P.BUFFER_SIZE);
      let n: number;
      try {
        n = await native.readRequest(this.fd, buf);
      } catch (e) {
        const errno = (e as { errno?: number }).errno;
        if (errno === 2 /* ENOENT: interrupted request */) continue;
        this.closed = true;
        if (errno === 19 /* ENODEV: unmounted */) return;
        throw e;
      }
      if (n === 0) return;
      void this.handle(buf.subarray(0, n));
    }
  }

  private reply(unique: bigint, errno: number, body?: Buffer): void {
    if (this.closed) return;
    try {
      fs.writeSync(this.fd, P.encodeReply(unique, errno, body));
    } catch {
      /* the kernel dropped the request (interrupted) or the mount is gone */
    }
  }

  private async handle(req: Buffer): Promise<void> {
    const h = P.decodeInHeader(req);
    const body = req.subarray(P.IN_HEADER);
    const ctx: Ctx = { uid: h.uid, gid: h.gid, pid: h.pid };
    try {
      const out = await this.dispatch(h, body, ctx);
      if (out !== null) this.reply(h.unique, 0, out);
    } catch (e) {
      this.reply(h.unique, e instanceof PrismError ? e.errno : e instanceof NoSys ? ENOSYS : EIO);
    }
  }

  /** Returns the reply body, undefined for an empty reply, null for no reply at all. */
  private async dispatch(h: P.InHeader, b: Buffer, ctx: Ctx): Promise<Buffer | undefined | null> {
    const f = this.fs;
    const ino = h.nodeid;
    switch (h.opcode) {
      case P.Op.INIT:
        return P.encodeInitOut(b.readUInt32LE(12));
      case P.Op.DESTROY:
        return undefined;
      case P.Op.INTERRUPT:
        return null;
      case P.Op.FORGET:
        f.forget?.(ino, b.readBigUInt64LE(0));
        return null;
      case P.Op.BATCH_FORGET: {
        const count = b.readUInt32LE(0);
        for (let i = 0; i < count; i++) f.forget?.(b.readBigUInt64LE(8 + i * 16), b.readBigUInt64LE(16 + i * 16));
        return null;
      }
      case P.Op.LOOKUP:
        return P.encodeEntry(await f.lookup(ctx, ino, P.cstring(b, 0)[0]));
      case P.Op.GETATTR:
        return P.encodeAttrOut(await f.getattr(ctx, ino));
      case P.Op.SETATTR: {
        const valid = b.readUInt32LE(0);
        const s: SetAttrIn = {};
        const now = Date.now();
        if (valid & P.FATTR.MODE) s.mode = b.readUInt32LE(68);
        if (valid & P.FATTR.UID) s.uid = b.readUInt32LE(76);
        if (valid & P.FATTR.GID) s.gid = b.readUInt32LE(80);
        if (valid & P.FATTR.SIZE) s.size = b.readBigUInt64LE(16);
        if (valid & P.FATTR.ATIME) s.atimeMs = valid & P.FATTR.ATIME_NOW ? now : Number(b.readBigUInt64LE(32)) * 1000 + b.readUInt32LE(56) / 1e6;
        if (valid & P.FATTR.MTIME) s.mtimeMs = valid & P.FATTR.MTIME_NOW ? now : Number(b.readBigUInt64LE(40)) * 1000 + b.readUInt32LE(60) / 1e6;
        return P.encodeAttrOut(await need(f.setattr).call(f, ctx, ino, s));
      }
      case P.Op.READLINK:
        return Buffer.from(await need(f.readlink).call(f, ctx, ino));
      case P.Op.SYMLINK: {
        const [name, o] = P.cstring(b, 0);
        return P.encodeEntry(await need(f.symlink).call(f, ctx, ino, name, P.cstring(b, o)[0]));
      }
      case P.Op.MKNOD:
        return P.encodeEntry(await need(f.mknod).call(f, ctx, ino, P.cstring(b, 16)[0], b.readUInt32LE(0) & ~b.readUInt32LE(8), b.readUInt32LE(4)));
      case P.Op.MKDIR:
        return P.encodeEntry(await need(f.mkdir).call(f, ctx, ino, P.cstring(b, 8)[0], b.readUInt32LE(0) & ~b.readUInt32LE(4)));
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
        return P.encodeEntry(await need(f.link).call(f, ctx, b.readBigUInt64LE(0), ino, P.cstring(b, 8)[0]));
      case P.Op.OPEN:
        return P.encodeOpenOut(f.open ? await f.open(ctx, ino, b.readUInt32LE(0)) : 0n);
      case P.Op.CREATE: {
        const r = await need(f.create).call(f, ctx, ino, P.cstring(b, 16)[0], b.readUInt32LE(4) & ~b.readUInt32LE(8), b.readUInt32LE(0));
        return Buffer.concat([P.encodeEntry(r.entry), P.encodeOpenOut(r.fh)]);
      }
      case P.Op.READ:
        return Buffer.from(await need(f.read).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readUInt32LE(16)));
      case P.Op.WRITE: {
        const size = b.readUInt32LE(16);
        const n = await need(f.write).call(f, ctx, ino, b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.subarray(40, 40 + size));
        const out = Buffer.alloc(8);
        out.writeUInt32LE(n, 0);
        return out;
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
      case P.Op.OPENDIR: {
        const fh = f.opendir ? await f.opendir(ctx, ino) : 0n;
        return P.encodeOpenOut(fh);
      }
      case P.Op.READDIR: {
        const fh = b.readBigUInt64LE(0);
        const off = Number(b.readBigUInt64LE(8));
        const size = b.readUInt32LE(16);
        const key = (h.unique & 0n) + ino * 0x10000n + fh; // per open directory listing
        let ents = this.dirs.get(key);
        if (!ents || off === 0) {
          const list = await need(f.readdir).call(f, ctx, ino, fh);
          ents = list.map((e, i) => P.encodeDirent(e.ino, BigInt(i + 1), e.type, e.name));
          this.dirs.set(key, ents);
        }
        const parts: Buffer[] = [];
        let used = 0;
        for (let i = off; i < ents.length; i++) {
          if (used + ents[i]!.length > size) break;
          parts.push(ents[i]!);
          used += ents[i]!.length;
        }
        return Buffer.concat(parts);
      }
      case P.Op.RELEASEDIR: {
        this.dirs.delete(ino * 0x10000n + b.readBigUInt64LE(0));
        if (f.releasedir) await f.releasedir(ctx, ino, b.readBigUInt64LE(0));
        return undefined;
      }
      case P.Op.STATFS:
        return P.encodeStatfs(f.statfs ? await f.statfs(ctx, ino) : { blocks: 0n, bfree: 0n, bavail: 0n, files: 0n, ffree: 0n, bsize: 4096, namelen: 255 });
      case P.Op.ACCESS:
        if (f.access) await f.access(ctx, ino, b.readUInt32LE(0));
        return undefined;
      default:
        throw new NoSys();
    }
  }
}

class NoSys extends Error {}
function need<T>(m: T | undefined): T {
  if (!m) throw new NoSys();
  return m;
}

/** Mount `filesystem` on `mountpoint` and start serving; `done` settles when it is unmounted. */
export function mountAndServe(mountpoint: string, filesystem: FileSystem, fsname = 'prism'): { session: Session; done: Promise<void> } {
  const fd = native.mount(mountpoint, fsname);
  const session = new Session(fd, filesystem);
  const done = session.serve().finally(() => fs.closeSync(fd));
  return { session, done };
}
