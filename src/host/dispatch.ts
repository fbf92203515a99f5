// One VM's view of the store: turns validated VRPC requests into store calls. Everything a guest
// names goes through a handle that must verify with this VM's key and name one of its volumes.
import { PrismError } from '../errors.js';
import { HandleKey } from '../protocol/handles.js';
import { MAX_IO, Proc } from '../protocol/procs.js';
import { validateArgs } from '../protocol/validate.js';
import { attrToWire, setAttrFromWire, type WireSetAttr } from '../protocol/wire.js';
import { MAX_FILE_SIZE, MAX_NAME } from '../posix/limits.js';
import { BLOCK_SIZE } from '../store/layout.js';
import type { Store } from '../store/store.js';
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
  }

  private volumeById(id: number): Volume {
    for (const name of this.vm.volumes) {
      if (!this.store.has(name)) continue;
      const v = this.store.volume(name);
      if (v.rec.id === id) return v;
    }
    throw new PrismError('ESTALE', 'handle names no volume of this VM');
  }

  private target(fh: unknown): { v: Volume; ino: number } {
    const t = this.key.open(fh as Uint8Array);
    return { v: this.volumeById(t.volumeId), ino: t.ino };
  }

  private fh(v: Volume, ino: number): Buffer {
    return this.key.make({ volumeId: v.rec.id, ino });
  }

  /** A change the reply must wait for: other VMs' kernels forgetting what it made stale. */
  private pending: Promise<void> | undefined;

  /**
   * Run one request; throws PrismError on failure. The result is a promise only when the request
   * changed metadata that another VM's kernel may cache: it settles once that VM has let go.
   */
  call(proc: number, rawArgs: unknown[]): unknown[] | Promise<unknown[]> {
    this.pending = undefined;
    const result = this.run(proc, rawArgs);
    const pending = this.takePending();
    return pending ? pending.then(() => result) : result;
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
    const a = validateArgs(proc, rawArgs);
    const meta = this.hooks.meta;
    const b = (i: number) => Buffer.from(a[i] as Uint8Array);
    const n = (i: number) => a[i] as number;
    switch (proc) {
      case Proc.NULL: return [];
      case Proc.ATTACH: {
        const name = a[0] as string;
        if (!this.vm.volumes.includes(name)) throw new PrismError('EACCES', `volume ${name} is not attached to VM ${this.vm.name}`);
        const v = this.store.volume(name);
        const attr = attrToWire(v.getattr(v.rootIno));
        meta?.sawAttr(v, v.rootIno, attr);
        return [this.fh(v, v.rootIno), attr];
      }
      case Proc.GETATTR: {
        const { v, ino } = this.target(a[0]);
        const attr = attrToWire(v.getattr(ino));
        meta?.sawAttr(v, ino, attr);
        return [attr];
      }
      case Proc.SETATTR: {
        const { v, ino } = this.target(a[0]);
        const s = a[1] as WireSetAttr;
        const attr = v.setattr(ino, setAttrFromWire(s));
        this.changed(v, s[3] === null ? { attrs: [ino] } : { data: [ino] });
        return [attrToWire(attr)];
      }
      case Proc.LOOKUP: {
        const { v, ino } = this.target(a[0]);
        const name = b(1);
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
      }
      case Proc.ACCESS: { const { v, ino } = this.target(a[0]); v.access(ino, n(2), a[3] as number[], n(1)); return []; }
      case Proc.READLINK: { const { v, ino } = this.target(a[0]); return [v.readlink(ino)]; }
      case Proc.READ: {
        const { v, ino } = this.target(a[0]);
        // Into a reused buffer: the reply is sent (copied) before the next request runs.
        const r = v.read(ino, n(1), n(2), this.scratch);
        return [r.data, r.eof];
      }
      case Proc.WRITE: {
        const { v, ino } = this.target(a[0]);
        const data = a[2] as Uint8Array;
        const attr = v.write(ino, n(1), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        if (n(3) > 0) this.waitFor(this.hooks.commit());
        this.changed(v, { data: [ino] });
        return [attrToWire(attr), data.byteLength, this.hooks.verifier];
      }
      case Proc.CREATE: return this.made(a[0], b(1), (v, d) => v.create(d, b(1), n(2), n(3), n(4), a[5] as boolean));
      case Proc.MKDIR: return this.made(a[0], b(1), (v, d) => v.mkdir(d, b(1), n(2), n(3), n(4)));
      case Proc.SYMLINK: return this.made(a[0], b(1), (v, d) => v.symlink(d, b(1), b(2), n(3), n(4)));
      case Proc.MKNOD: return this.made(a[0], b(1), (v, d) => v.mknod(d, b(1), n(2), n(3), n(4), n(5)));
      case Proc.REMOVE:
      case Proc.RMDIR: {
        const { v, ino } = this.target(a[0]);
        const child = this.childOf(v, ino, b(1));
        if (proc === Proc.REMOVE) v.unlink(ino, b(1));
        else v.rmdir(ino, b(1));
        const gone: Array<[number, Buffer]> = proc === Proc.RMDIR && child !== undefined ? [[child, DOTDOT]] : [];
        this.changed(v, { attrs: child === undefined ? [ino] : [ino, child], entries: [[ino, b(1)], ...gone] });
        return [];
      }
      case Proc.RENAME: {
        const from = this.target(a[0]);
        const to = this.target(a[2]);
        if (from.v !== to.v) throw new PrismError('EXDEV', 'rename across volumes');
        const flags = n(4);
        const moved = [this.childOf(from.v, from.ino, b(1)), this.childOf(to.v, to.ino, b(3))].filter((x): x is number => x !== undefined);
        from.v.rename(from.ino, b(1), to.ino, b(3), { noreplace: !!(flags & RENAME_NOREPLACE), exchange: !!(flags & RENAME_EXCHANGE) });
        // A directory moved to another parent has a new "..".
        const parents: Array<[number, Buffer]> = from.ino === to.ino ? [] : moved.map((m) => [m, DOTDOT]);
        this.changed(from.v, { attrs: [from.ino, to.ino, ...moved], entries: [[from.ino, b(1)], [to.ino, b(3)], ...parents] });
        return [];
      }
      case Proc.LINK: {
        const src = this.target(a[0]);
        const dir = this.target(a[1]);
        if (src.v !== dir.v) throw new PrismError('EXDEV', 'link across volumes');
        const attr = src.v.link(src.ino, dir.ino, b(2));
        this.changed(src.v, { attrs: [src.ino, dir.ino], entries: [[dir.ino, b(2)]] });
        return [attrToWire(attr)];
      }
      case Proc.READDIR:
      case Proc.READDIRPLUS: {
        const { v, ino } = this.target(a[0]);
        const cookie = a[1] as Uint8Array;
        const limit = Math.max(1, Math.min(n(2), 4096));
        const entries = v.readdir(ino, cookie.length ? Buffer.from(cookie) : null, limit + 1);
        const eof = entries.length <= limit;
        const page = entries.slice(0, limit);
        if (proc === Proc.READDIR) return [page.map((e) => [e.name, e.ino, e.type]), eof];
        return [page.map((e) => {
          const fh = this.fh(v, e.ino);
          const attr = attrToWire(v.getattr(e.ino));
          meta?.sawEntry(v, ino, e.name, { fh, ino: e.ino });
          meta?.sawAttr(v, e.ino, attr);
          return [e.name, fh, attr];
        }), eof];
      }
      case Proc.FSSTAT: {
        const { v } = this.target(a[0]);
        const s = this.store.statfs(v.name);
        return [s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.namemax];
      }
      case Proc.FSINFO: this.target(a[0]); return [MAX_IO, MAX_IO, MAX_FILE_SIZE, BLOCK_SIZE];
      case Proc.PATHCONF: this.target(a[0]); return [65000, MAX_NAME];
      case Proc.COMMIT: this.target(a[0]); this.waitFor(this.hooks.commit()); return [this.hooks.verifier];
      case Proc.GETXATTR: { const { v, ino } = this.target(a[0]); return [v.getxattr(ino, b(1))]; }
      case Proc.SETXATTR: {
        const { v, ino } = this.target(a[0]);
        const how = n(3) === 1 ? 'create' : n(3) === 2 ? 'replace' : 'either';
        v.setxattr(ino, b(1), b(2), how);
        this.changed(v, { attrs: [ino] });
        return [];
      }
      case Proc.LISTXATTR: { const { v, ino } = this.target(a[0]); return [v.listxattr(ino)]; }
      case Proc.REMOVEXATTR: { const { v, ino } = this.target(a[0]); v.removexattr(ino, b(1)); this.changed(v, { attrs: [ino] }); return []; }
      // Pins are this VM's: another VM's CLOSE cannot release them (docs/store-limits.md).
      case Proc.OPEN: { const { v, ino } = this.target(a[0]); v.open(ino, this.vm.name); return []; }
      case Proc.CLOSE: { const { v, ino } = this.target(a[0]); v.close(ino, this.vm.name); return []; }
      case Proc.FALLOCATE: {
        const { v, ino } = this.target(a[0]);
        const mode = n(3);
        if (mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) throw new PrismError('ENOTSUP', `fallocate mode ${mode} is not supported`);
        const attr = v.fallocate(ino, n(1), n(2), { keepSize: !!(mode & FALLOC_KEEP_SIZE), punchHole: !!(mode & FALLOC_PUNCH_HOLE), zeroRange: !!(mode & FALLOC_ZERO_RANGE) });
        this.changed(v, { data: [ino] });
        return [attrToWire(attr)];
      }
      case Proc.SEEK: {
        const { v, ino } = this.target(a[0]);
        if (n(2) !== SEEK_DATA && n(2) !== SEEK_HOLE) throw new PrismError('EINVAL', 'whence must be SEEK_DATA (3) or SEEK_HOLE (4)');
        return [v.seek(ino, n(1), n(2) === SEEK_DATA ? 'data' : 'hole')];
      }
      case Proc.COPY_RANGE: {
        const src = this.target(a[0]);
        const dst = this.target(a[2]);
        if (src.v !== dst.v) throw new PrismError('EXDEV', 'copy across volumes');
        const r = dst.v.copyRange(src.ino, n(1), dst.ino, n(3), n(4));
        this.changed(dst.v, { data: [dst.ino] });
        return [r.copied, attrToWire(r.attr)];
      }
      default: throw new PrismError('ENOSYS', `procedure ${proc} is not supported`);
    }
  }

  private made(dirFh: unknown, name: Buffer, make: (v: Volume, dir: number) => { ino: number }): unknown[] {
    const { v, ino } = this.target(dirFh);
    const attr = make(v, ino);
    this.changed(v, { attrs: [ino], entries: [[ino, name]] });
    return [this.fh(v, attr.ino), attrToWire(v.getattr(attr.ino))];
  }
}
