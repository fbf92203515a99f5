// The FileSystem the agent mounts: every FUSE operation becomes a VRPC call to the host, through the
// procedures' stubs (protocol/stubs.ts). It composes the node table (node ids <-> handles), answers
// from the host's metadata table, open files and their pins, write-behind, and directory listings.
import { PrismError } from '../errors.js';
import { Proc, type ArgsOf, type ResultOf } from '../protocol/procs.js';
import { makeStubs, type Stubs } from '../protocol/stubs.js';
import { attrFromWire, setAttrToWire, setsSize } from '../protocol/wire.js';
import type { MetaTable } from '../metadata-share/table.js';
import { cmpTime, now } from '../posix/clock.js';
import { coarseNow } from '../native/mount.js';
import { MAX_NAME } from '../posix/limits.js';
import { S_IFDIR, S_IFMT, S_IFREG, isDir, madeIn } from '../posix/mode.js';
import type { Attr, Time } from '../posix/types.js';
import { CountedLink } from './counted-link.js';
import { AgentCounters } from './counters.js';
import { fuseAttr } from './fuse-attr.js';
import type { Ctx, Entry, FileSystem, FuseAttr, FuseDirEntry, FuseSetAttr, FuseStatFs } from './fuse/fs.js';
import type { Link } from './host-link.js';
import { InodePool } from './inode-pool.js';
import { NodeTable, type KernelCacheKeys } from './node-table.js';
import { OpenFiles } from './open-files.js';
import { PostedChanges, setattrApplied, setattrPrediction } from './posted-changes.js';
import { Privileges } from './privileges.js';
import { listDirectory } from './readdir.js';
import { SharedMetadata } from './shared-metadata.js';
import { bornOf } from './unstable.js';
import { WriteBehind } from './write-behind.js';

const O_TRUNC = 0o1000;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const O_EXCL = 0o200;
const MAX_COPY = 2 ** 40;
const CAPS = 'security.capability';
/** How much later than the host's a ctime the kernel sends back may be and still be the same change (a 100 Hz tick). */
const CTIME_SLACK_NS = 10_000_000n;
/** How long after an unlink or rename of ours the kernel's ctime of the file is still taken as that change's. */
const OWN_CTIME_WINDOW_NS = 1_000_000_000n;
/** Files unlinked or renamed, remembered for the times the kernel sends back (VrpcFs.renamed): it forgets them soon after. */
const MAX_RENAMED = 4096;

export interface VrpcFsOptions {
  /** The VM's metadata table, mapped read-only: LOOKUP and GETATTR answered without an RPC when it holds the answer. */
  shared?: MetaTable;
  counters?: AgentCounters;
  /**
   * The kernel's writeback cache (write errors then reported at flush and fsync only: write-behind.ts).
   * 'auto' turns it on where nothing else changes the files under this kernel unseen: the metadata
   * table marks the volume as this VM's alone and the kernel can be told to drop a node the host
   * changed (`kernelPrunes`: FUSE_NOTIFY_PRUNE, for a `prism put`). Default false.
   */
  writebackCache?: boolean | 'auto';
  /** Whether the kernel takes FUSE_NOTIFY_PRUNE (fuse/protocol.ts kernelTakesPrune). */
  kernelPrunes?: boolean;
  /**
   * Whether the kernel writes a file's dirty pages back at close without FLUSH (fuse/protocol.ts
   * kernelWritesBackWithoutFlush): with the writeback cache, FLUSH may then be turned off.
   */
  kernelWritesBackAtClose?: boolean;
  /**
   * A posted create or mkdir failed: make the kernel forget the name (it was told the node exists).
   * Not from the thread serving requests: the kernel may hold the directory's lock for a request
   * queued behind this one (the cache notifier's thread does it).
   */
  unmade?: (dir: bigint, name: Buffer) => Promise<void>;
}

/** What a new directory's size and blocks are (the store reports every directory so). */
const DIR_SIZE = 4096;

export class VrpcFs implements FileSystem {
  /** The volume's id, as handles carry it (bytes 1-4): the metadata table's key. */
  readonly volumeId: number;
  readonly counters: AgentCounters;
  private readonly host: Link;
  private readonly rpc: Stubs;
  private readonly nodes: NodeTable;
  private readonly shared: SharedMetadata | undefined;
  private readonly files: OpenFiles;
  private readonly writeBehind: WriteBehind;
  private readonly privileges: Privileges;
  private readonly posted: PostedChanges;
  /** Inode numbers reserved for posted creates: where the link can post and a table says when it may. */
  private readonly pool: InodePool | undefined;
  /**
   * Files this agent just unlinked or renamed, with their attributes as that left them, while the
   * kernel holds them: with the writeback cache it sends their times back right after (timesKept),
   * when the table no longer holds the file or not yet as renamed (a posted change on its way).
   */
  private readonly renamed = new Map<bigint, Attr>();
  /** The host takes SETATTR_AT (known from the first one's reply). */
  private setattrAt: boolean | undefined;
  /** Set-id bits and capabilities are dropped here (privileges.ts), not by the kernel before every write. */
  readonly killsPrivileges = true;
  /** The writeback cache asked of the kernel at INIT (VrpcFsOptions.writebackCache, resolved). */
  readonly writebackCache: boolean;
  /** FLUSH may be answered ENOSYS, after which the kernel sends no more (`flush`). */
  private readonly flushOptional: boolean;
  /** A FLUSH was answered ENOSYS: the kernel sends none for the rest of this mount. */
  private flushesOff = false;
  private nextFh = 1n;

  constructor(host: Link, rootFh: Buffer, readonly rootIno: number, opts: VrpcFsOptions = {}) {
    this.volumeId = rootFh.readUInt32BE(1);
    this.counters = opts.counters ?? new AgentCounters();
    const link = (this.host = new CountedLink(host, this.counters));
    this.rpc = makeStubs((proc, args, take) => link.call(proc, args, take));
    this.nodes = new NodeTable(rootFh, rootIno);
    this.files = new OpenFiles(this.nodes, this.rpc);
    const wb = opts.writebackCache ?? false;
    // Where this VM alone changes the volume; on a kernel without FUSE_NOTIFY_PRUNE the host is told
    // (the region's keepsSizes flag), so that it never lets another VM change the volume meanwhile.
    this.writebackCache = wb === 'auto' ? (opts.shared?.isSole(this.volumeId) ?? false) : wb;
    this.flushOptional = this.writebackCache && (opts.kernelWritesBackAtClose ?? false);
    this.writeBehind = new WriteBehind(link, this.rpc, this.counters, rootFh, this.writebackCache);
    const behind = this.writeBehind;
    const posted = (this.posted = new PostedChanges(behind, opts.unmade));
    this.shared = opts.shared && new SharedMetadata(opts.shared, this.volumeId, this.nodes, this.counters, (id) => behind.writing(id), (dir, name) => posted.gains(dir, name));
    const post = link.post, connection = link.connection;
    this.pool = this.shared && post && connection ? new InodePool((p, a) => post.call(link, p, a), () => connection.call(link), rootFh) : undefined;
    this.privileges = new Privileges(this.rpc, this.nodes, this.shared);
  }

  /** The mount ended: no more background COMMITs. */
  close(): void {
    this.writeBehind.close();
  }

  /** Attach a volume: its root handle and inode number. */
  static async attach(link: Link, volume: string, opts: VrpcFsOptions = {}): Promise<VrpcFs> {
    const [fh, attr] = await makeStubs((proc, args, take) => link.call(proc, args, take)).attach(volume);
    return new VrpcFs(link, fh, attr.ino, opts);
  }

  kernelCacheKeys(): KernelCacheKeys {
    return this.nodes.kernelCacheKeys();
  }

  remember(e: Entry): void {
    this.nodes.remember(e);
  }

  forget(id: bigint, nlookup: bigint): void {
    this.renamed.delete(id);
    this.nodes.forget(id, nlookup, this.files.has(id));
  }

  async lookup(_c: Ctx, parent: bigint, name: string): Promise<Entry> {
    const dirFh = this.nodes.fh(parent);
    const raw = nameBytes(name);
    let local = this.shared?.lookup(parent, raw);
    // Missed only because a posted change of ours is on its way: read its reply; the table is current then.
    if (!local && this.shared && this.writeBehind.writing(parent) && await this.writeBehind.caughtUp(parent)) local = this.shared.lookup(parent, raw);
    if (local) return local;
    const [fh, attr] = await this.rpc.lookup(dirFh, raw);
    return this.nodes.entry(fh, attr, parent, raw);
  }

  async getattr(_c: Ctx, id: bigint): Promise<FuseAttr> {
    return this.nodes.told(id, await this.currentAttr(id));
  }

  private async currentAttr(id: bigint): Promise<FuseAttr> {
    const fh = this.nodes.fh(id);
    // Predictions are cached by the kernel only when exact (every posted change of the directory
    // carries our time): then it is the table's answer once they are applied, and the replies need
    // not be read first (a turn of the event loop, a third of a GETATTR); else, once the changes
    // are applied, the table's answer is cached.
    if (this.posted.changes(id) && !this.posted.stampOf(id)) await this.writeBehind.arrived();
    if (this.posted.changes(id)) {
      const at = this.posted.stampOf(id);
      const predicted = this.shared?.asChanged(id, this.posted.nlinkOf(id), at);
      if (predicted) return at ? fuseAttr(predicted) : { ...fuseAttr(predicted), validSec: 0 };
    }
    let local = this.shared?.getattr(id);
    if (!local && this.shared && this.writeBehind.writing(id) && await this.writeBehind.caughtUp(id)) local = this.shared.getattr(id);
    if (local) return fuseAttr(local);
    const [attr] = await this.rpc.getattr(fh);
    return fuseAttr(attr);
  }

  async setattr(c: Ctx, id: bigint, s: FuseSetAttr): Promise<FuseAttr> {
    return this.nodes.told(id, await this.changeAttr(c, id, s));
  }

  private async changeAttr(c: Ctx, id: bigint, s: FuseSetAttr): Promise<FuseAttr> {
    const behind = this.timesBehindWrites(id, s);
    if (behind) return behind;
    const kept = await this.timesKept(id, s);
    if (kept) return kept;
    const killed = await this.privileges.forSetattr(c, id, this.nodes.fh(id), s);
    if (killed !== undefined) s = { ...s, mode: killed };
    const set = setAttrToWire({
      mode: s.mode === undefined ? undefined : s.mode & 0o7777, uid: s.uid, gid: s.gid,
      size: s.size === undefined ? undefined : Number(s.size), atime: s.atime, mtime: s.mtime,
    });
    const fh = this.nodes.fh(id);
    // A truncation changes data: kept, like a write, until committed (a resend must not undo it).
    if (setsSize(set)) return fuseAttr((await this.writeBehind.dataChange(fh, Proc.SETATTR, [fh, set]))[0]);
    let base = this.host.post ? this.shared?.settable(id) : undefined;
    // Only posted SETATTR_ATs of ours on their way (a chmod before this utime): what they make is known.
    if (!base && this.host.post && this.shared?.sole()) base = this.posted.attrsOnceSet(id);
    const chained = base ? undefined : this.changeBehind(id, s, fh, set);
    if (chained) return chained;
    // Another posted change of the node may be answered already: read its reply.
    if (!base && this.host.post && this.writeBehind.writing(id)) {
      await this.writeBehind.arrived();
      base = this.shared?.settable(id);
    }
    if (base) {
      // Stamped with our time (SETATTR_AT), the host makes exactly what we answer (the table holds the
      // node only while no posted change of ours is on its way): the kernel may keep it.
      const at = now();
      if (this.setattrAt) {
        const after = setattrApplied(base, s, at);
        this.posted.postSetattr(id, Proc.SETATTR_AT, [fh, set, at], after);
        return fuseAttr(after);
      }
      if (this.setattrAt === undefined) {
        // The first one waits: a host without SETATTR_AT leaves us posting SETATTRs, stamped by the
        // host, so answered uncached.
        const attr = await this.setattrAtNow(fh, set, at);
        if (attr) return fuseAttr(attr);
      }
      this.posted.postSetattr(id, Proc.SETATTR, [fh, set]);
      return setattrPrediction(base, s, at);
    }
    // Asked of the host now. Where posts are SETATTR_ATs (this VM's volume), as one too: the first
    // SETATTR learns whether the host takes them, whichever way it goes (else a chmod waiting for a
    // sleeping host left every later one waiting as well).
    const attr = this.shared?.sole() ? await this.setattrAtNow(fh, set, now()) : undefined;
    return fuseAttr(attr ?? (await this.rpc.setattr(fh, set))[0]);
  }

  /**
   * A SETATTR_AT stamped `at`, answered now; undefined from a host without it (ENOSYS: added within
   * protocol version 2), which is not asked again.
   */
  private async setattrAtNow(fh: Buffer, set: ReturnType<typeof setAttrToWire>, at: Time): Promise<Attr | undefined> {
    if (this.setattrAt === false) return undefined;
    try {
      const [attr] = await this.rpc.setattrAt(fh, set, at);
      this.setattrAt = true;
      return attr;
    } catch (e) {
      if (!(e instanceof PrismError && e.code === 'ENOSYS')) throw e;
      this.setattrAt = false;
      return undefined;
    }
  }

  /**
   * With the writeback cache the kernel sends back the mtime and ctime it kept (a SETATTR after every
   * rename, link or write of the file). When the host already has that mtime and a ctime as new (it
   * set ctime itself at the change), the SETATTR would change nothing that matters: answered from the
   * table, no RPC. The kernel's times come from its coarse clock, taken after the change's reply: up
   * to a tick later than the host's, hence CTIME_SLACK_NS. A utimensat carries a ctime of now, newer
   * than the host's unless the file changed within that slack: it is sent.
   */
  private async timesKept(id: bigint, s: FuseSetAttr): Promise<FuseAttr | undefined> {
    if (!timesOnly(s)) return undefined;
    // Right after an unlink or rename of ours: the kernel stamped its ctime once our reply was back,
    // however long the caller then waited for a core, so only "not before it" is asked (once).
    const own = this.renamed.get(id);
    if (own && cmpTime(own.mtime, s.mtime) === 0 && nsOf(s.ctime) + CTIME_SLACK_NS >= nsOf(own.ctime) && nsOf(s.ctime) < nsOf(own.ctime) + OWN_CTIME_WINDOW_NS) {
      this.renamed.delete(id);
      return fuseAttr(own);
    }
    // The table's; else read the replies of posted changes of ours, then the table is current.
    let host = this.shared?.getattr(id);
    if (!host && this.shared && this.writeBehind.writing(id) && await this.writeBehind.caughtUp(id)) host = this.shared.getattr(id);
    if (!host || cmpTime(host.mtime, s.mtime) !== 0 || nsOf(host.ctime) + CTIME_SLACK_NS < nsOf(s.ctime)) return undefined;
    return fuseAttr(host);
  }

  /**
   * A change of mode, owner or times of a regular file whose own changes (its create, WRITEs) are
   * still on their way (tar and `cp -p` set them right after writing the file): posted behind them on
   * the same ring, stamped with our time (SETATTR_AT), and answered with what the kernel holds so
   * changed, not cached (size and blocks are the WRITEs' to make; with the writeback cache the
   * kernel keeps its own size, mtime and ctime anyway). Waiting for their replies instead cost a
   * wake-up of the host and a round trip per file. Only where this VM alone changes the volume.
   */
  private changeBehind(id: bigint, s: FuseSetAttr, fh: Buffer, set: ReturnType<typeof setAttrToWire>): FuseAttr | undefined {
    if (!this.writebackCache || !this.host.post || !this.setattrAt || !this.writeBehind.writing(id) || !this.shared?.sole()) return undefined;
    const held = this.nodes.get(id)?.attr;
    if (!held || (held.mode & S_IFMT) !== S_IFREG) return undefined;
    return this.postBehind(id, held, s, fh, set, now());
  }

  /**
   * Post a SETATTR_AT stamped `at` behind the node's changes on their way, and answer with what the
   * kernel holds (`held`) so changed, not cached: what those changes make is the host's to say.
   */
  private postBehind(id: bigint, held: FuseAttr, s: FuseSetAttr, fh: Buffer, set: ReturnType<typeof setAttrToWire>, at: Time): FuseAttr {
    this.posted.postSetattr(id, Proc.SETATTR_AT, [fh, set, at]);
    return { ...setattrApplied(held, s, at), validSec: 0 };
  }

  /**
   * The kernel's times of a file whose WRITEs of ours are still on their way (it sends them at close,
   * after flushing its pages): these times follow the WRITEs, posted on the same ring (a host without
   * WRITE_KEEP_TIMES stamps the file's mtime as it applies each WRITE), and the kernel gets back what
   * it holds with them, not cached (validSec 0). Waiting for the WRITEs' replies first cost one more wake-up per
   * file written. Only where this VM alone changes the volume: no one else's change can come between.
   */
  private timesBehindWrites(id: bigint, s: FuseSetAttr): FuseAttr | undefined {
    if (!this.writebackCache || !this.host.post || !timesOnly(s) || !this.writeBehind.writingData(id) || !this.shared?.sole()) return undefined;
    const held = this.nodes.get(id)?.attr;
    if (!held) return undefined;
    // Stamped with the kernel's ctime (SETATTR_AT: a host that shares this table's version has it),
    // the host keeps the ctime the kernel shows, not one of its own a moment later.
    return this.postBehind(id, held, s, this.nodes.fh(id), setAttrToWire({ mtime: s.mtime }), s.ctime);
  }

  async readlink(_c: Ctx, id: bigint): Promise<string> {
    const [target] = await this.rpc.readlink(this.nodes.fh(id));
    return target.toString('latin1');
  }

  /** A node just made (MKDIR, SYMLINK, MKNOD): surely a new file, so nothing kept under its handle is its. */
  private async made(parent: bigint, raw: Buffer, reply: Promise<[Buffer, Attr]>): Promise<Entry> {
    const [fh, attr] = await reply;
    this.writeBehind.created(fh);
    return this.nodes.entry(fh, attr, parent, raw);
  }

  async symlink(c: Ctx, parent: bigint, name: string, target: string): Promise<Entry> {
    const raw = nameBytes(name);
    return this.made(parent, raw, this.rpc.symlink(this.nodes.fh(parent), raw, bytes(target), c.uid, c.gid));
  }

  async mknod(c: Ctx, parent: bigint, name: string, mode: number, rdev: number): Promise<Entry> {
    const raw = nameBytes(name);
    return this.made(parent, raw, this.rpc.mknod(this.nodes.fh(parent), raw, mode, rdev, c.uid, c.gid));
  }

  async mkdir(c: Ctx, parent: bigint, name: string, mode: number): Promise<Entry> {
    const raw = nameBytes(name);
    const here = this.makeHere(c, parent, raw, S_IFDIR | (mode & 0o7777));
    if (here) return here;
    return this.made(parent, raw, this.rpc.mkdir(this.nodes.fh(parent), raw, mode & 0o7777, c.uid, c.gid));
  }

  async unlink(_c: Ctx, parent: bigint, name: string): Promise<void> {
    this.files.pinAll();
    const dirFh = this.nodes.fh(parent);
    const raw = nameBytes(name);
    // Answered here when the result is certain (shared-metadata.ts `removable`); posted where the link can post.
    const child = this.host.post ? this.shared?.removable(parent, raw) : undefined;
    const named = this.writebackCache ? this.shared?.child(parent, raw) : undefined;
    if (child !== undefined) {
      // Stamped with our time (REMOVE_AT), the host makes the directory exactly as predicted.
      const at = changeTime();
      if (named) this.renamedNow(named.id, named.attr, -1, at);
      // The kernel asks for the directory's attributes right after (to check the next unlink's
      // permission): answered as the host will make them (asChanged), not waited for.
      void this.posted.postDirChange([parent], undefined, [parent, child], Proc.REMOVE_AT, [dirFh, raw, at], at);
      return;
    }
    await this.rpc.remove(dirFh, raw);
    if (named) this.renamedNow(named.id, named.attr, -1);
  }

  /** Remember a file's attributes as an unlink (`links` -1) or rename of ours just left them (`renamed`), at `at`. */
  private renamedNow(id: bigint, attr: Attr, links = 0, at: Time = now()): void {
    if (this.renamed.size >= MAX_RENAMED) this.renamed.delete(this.renamed.keys().next().value!);
    this.renamed.set(id, { ...attr, nlink: attr.nlink + links, ctime: at });
  }


  async rmdir(_c: Ctx, parent: bigint, name: string): Promise<void> {
    this.files.pinAll();
    await this.rpc.rmdir(this.nodes.fh(parent), nameBytes(name));
  }

  async rename(_c: Ctx, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void> {
    if (flags & ~3) throw new PrismError('EINVAL', 'only RENAME_NOREPLACE and RENAME_EXCHANGE are supported');
    this.files.pinAll();
    const raw = nameBytes(name), newRaw = nameBytes(newName);
    const args = [this.nodes.fh(parent), raw, this.nodes.fh(newParent), newRaw, flags];
    // Answered here when the result is certain (shared-metadata.ts `renamable`), as an unlink is.
    const r = this.host.post && !(flags & RENAME_EXCHANGE) ? this.shared?.renamable(parent, raw, newParent, newRaw) : undefined;
    if (r && !(flags & RENAME_NOREPLACE && r.replaced !== undefined)) {
      const dirs = parent === newParent ? [parent] : [parent, newParent];
      const at = changeTime(); // RENAME_AT: the host stamps the directories and files with it
      if (this.writebackCache) this.rememberRenamed(r.child, r.replaced, at);
      void this.posted.postDirChange(dirs, { dir: newParent, name: newRaw }, [...dirs, r.child, ...(r.replaced === undefined ? [] : [r.replaced])], Proc.RENAME_AT, [...args, at], at);
      return;
    }
    const before = this.writebackCache ? this.shared?.renamable(parent, raw, newParent, newRaw) : undefined;
    await this.rpc.rename(...(args as ArgsOf<Proc.RENAME>));
    if (before) this.rememberRenamed(before.child, before.replaced);
  }

  /** The times the kernel sends back after a rename, of the file moved and the one replaced: see `renamed`. */
  private rememberRenamed(child: bigint, replaced: bigint | undefined, at?: Time): void {
    const moved = this.shared?.getattr(child);
    if (moved) this.renamedNow(child, moved, 0, at);
    const gone = replaced === undefined ? undefined : this.shared?.getattr(replaced);
    if (gone) this.renamedNow(replaced!, gone, -1, at);
  }

  async link(_c: Ctx, id: bigint, newParent: bigint, newName: string): Promise<Entry> {
    const fh = this.nodes.fh(id);
    const raw = nameBytes(newName);
    const [attr] = await this.rpc.link(fh, this.nodes.fh(newParent), raw);
    return this.nodes.entry(fh, attr, newParent, raw);
  }

  async open(c: Ctx, id: bigint, flags: number, killSuidgid = false): Promise<bigint> {
    if (flags & O_TRUNC) await this.setattr(c, id, { size: 0n, killSuidgid });
    this.files.opened(id);
    return this.nextFh++;
  }

  async create(c: Ctx, parent: bigint, name: string, mode: number, flags: number, killSuidgid = false): Promise<{ entry: Entry; fh: bigint }> {
    const raw = nameBytes(name);
    // Exact whatever O_EXCL and O_TRUNC say: the name is known absent.
    const here = this.makeHere(c, parent, raw, S_IFREG | (mode & 0o7777));
    if (here) {
      this.files.opened(here.ino);
      return { entry: here, fh: this.nextFh++ };
    }
    const [fh, attr] = await this.rpc.create(this.nodes.fh(parent), raw, mode & 0o7777, c.uid, c.gid, (flags & O_EXCL) !== 0);
    // An existing file (a create that is not exclusive) keeps what is kept for it; a file born since does not.
    this.writeBehind.created(fh, bornOf(attr));
    let entry = this.nodes.entry(fh, attr, parent, raw);
    const node = this.nodes.get(entry.ino);
    if (node && entry.attr.size === 0n && entry.attr.nlink === 1) node.noCaps ??= true; // just made (or empty): no capabilities
    if (flags & O_TRUNC && entry.attr.size > 0n) entry = { ino: entry.ino, attr: await this.setattr(c, entry.ino, { size: 0n, killSuidgid }) };
    this.files.opened(entry.ino);
    return { entry, fh: this.nextFh++ };
  }

  /**
   * A create or mkdir answered here and posted (docs/agent.md, "posted creates"), when the result is
   * certain (shared-metadata.ts `creatable`) and a reserved inode number is at hand: the node gets
   * the attributes the host will give it (the store's rules, the time chosen here and sent along),
   * so the kernel may cache them. Undefined: ask the host.
   */
  private makeHere(c: Ctx, parent: bigint, raw: Buffer, mode: number): Entry | undefined {
    if (!this.pool || !this.shared || this.posted.setsAttrs(parent)) return undefined;
    // A refused create is reported at close, by a FLUSH: with none to come, only the host may say.
    if (this.flushesOff && !isDir(mode) && this.closeWaits()) return undefined;
    const dir = this.shared.creatable(parent, raw);
    const r = dir && this.pool.take();
    if (!dir || !r) return undefined;
    const t = changeTime();
    const made = madeIn(dir.mode, dir.gid, mode, c.gid);
    const d = isDir(mode);
    const attr = attrFromWire([r.ino, made.mode, d ? 2 : 1, c.uid, made.gid, 0, d ? DIR_SIZE : 0, d ? DIR_SIZE / 512 : 0, ...t, ...t, ...t, ...t]);
    const args = [this.nodes.fh(parent), raw, mode & 0o7777, c.uid, c.gid, r.fh, [t[0], t[1]]];
    this.writeBehind.created(r.fh);
    const entry = this.nodes.entry(r.fh, attr, parent, raw);
    const node = this.nodes.get(entry.ino);
    if (node) node.noCaps = true;
    this.posted.postMake(parent, this.posted.nlinkOf(parent) ?? dir.nlink, raw, entry.ino, d, d ? Proc.MKDIR_AT : Proc.CREATE_AT, args, t);
    return entry;
  }

  async release(_c: Ctx, id: bigint): Promise<void> {
    if (this.closeWaits()) await this.writeBehind.done(id, undefined).catch(() => { /* reported at flush; release cannot fail */ });
    this.files.released(id);
  }

  async read(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, size: number, send: (d: Uint8Array) => void): Promise<void> {
    // Taken in place (no copy): `send` runs while the data may still be a view of shared memory.
    const args: ArgsOf<Proc.READ> = [this.nodes.fh(id), Number(offset), size];
    await this.host.call(Proc.READ, args, (r) => send((r as ResultOf<Proc.READ>)[0]));
  }

  async write(c: Ctx, id: bigint, _fh: bigint, offset: bigint, data: Uint8Array, killSuidgid = false): Promise<number> {
    const fh = this.nodes.fh(id);
    const dropping = this.privileges.beforeWrite(c, id, fh, killSuidgid);
    if (dropping) await dropping;
    const n = await this.writeBehind.write(id, fh, Number(offset), data);
    // No FLUSH will wait for it: the kernel's close, which waits for its WRITEs, does (its error
    // then reaches close and fsync as the kernel keeps writeback errors: EIO, or ENOSPC).
    if (this.flushesOff && this.closeWaits()) await this.writeBehind.done(id, fh);
    return n;
  }

  /**
   * Whether a close must wait for the host to take the file's posted changes. Not on a volume of
   * this VM's with nothing to refuse them (no quota, room on the host's disk: the table says so):
   * they can then fail only as a disk does, an error a local file system too reports at fsync, not
   * at close. Errors already in are still reported at close.
   */
  private closeWaits(): boolean {
    return !this.shared?.unbounded();
  }

  /**
   * A close. Where it has nothing to wait for (`closeWaits`) and the kernel writes the file's dirty
   * pages back at close by itself (the writeback cache, Linux 5.8 and later), it is answered ENOSYS
   * once errors already in are reported: the kernel then sends no FLUSH for the rest of the mount,
   * one round trip less per close. Should the volume be bounded later (a quota, a host short of
   * disk, another VM attaching it), WRITEs wait for the host instead (`write`) and files are created
   * by the host (`makeHere`), so that a close still reports what the host refused and leaves the
   * data on the host for the next VM to open it.
   */
  async flush(_c: Ctx, id: bigint): Promise<void> {
    this.counters.add('flushes');
    if (!this.closeWaits()) {
      this.host.collect?.();
      const fh = this.nodes.get(id)?.fh;
      if (fh) this.writeBehind.arrivedError(id, fh);
      if (this.flushOptional) {
        this.flushesOff = true;
        throw new PrismError('ENOSYS', 'a close has nothing to wait for: no FLUSH is needed');
      }
      return;
    }
    try {
      await this.writeBehind.done(id, this.nodes.get(id)?.fh);
    } finally {
      // A posted create that failed is reported here: once the kernel has forgotten the name.
      await this.posted.made(id);
    }
  }

  // fsync succeeds only once a COMMIT answered with the verifier of every kept change of the file
  // covers it: if the host restarted since it acknowledged them, they are sent again first.
  async fsync(_c: Ctx, id: bigint): Promise<void> {
    await this.writeBehind.commit(id, this.nodes.fh(id));
  }

  async opendir(): Promise<bigint> {
    return this.nextFh++;
  }

  readdir(_c: Ctx, id: bigint, _fh: bigint, plus: boolean): Promise<FuseDirEntry[]> {
    return listDirectory(this.rpc, this.nodes, this.shared, id, plus);
  }

  async statfs(_c: Ctx, id: bigint): Promise<FuseStatFs> {
    const [bsize, blocks, bfree, bavail, files, ffree, namemax] = await this.rpc.fsstat(this.nodes.fh(id));
    return { bsize, blocks: BigInt(blocks), bfree: BigInt(bfree), bavail: BigInt(bavail), files: BigInt(files), ffree: BigInt(ffree), namelen: namemax };
  }

  async access(c: Ctx, id: bigint, mask: number): Promise<void> {
    await this.rpc.access(this.nodes.fh(id), mask & 7, c.uid, [c.gid]);
  }

  async getxattr(_c: Ctx, id: bigint, name: string): Promise<Buffer> {
    const node = this.nodes.get(id);
    if ((name === CAPS && node?.noCaps) || this.shared?.noXattrs(id)) throw new PrismError('ENODATA', 'no such attribute');
    try {
      const [value] = await this.rpc.getxattr(this.nodes.fh(id), xname(name));
      return value;
    } catch (e) {
      if (name === CAPS && node && e instanceof PrismError && e.code === 'ENODATA') node.noCaps = true;
      throw e;
    }
  }

  async listxattr(_c: Ctx, id: bigint): Promise<string[]> {
    const fh = this.nodes.fh(id);
    if (this.shared?.noXattrs(id)) return [];
    const [names] = await this.rpc.listxattr(fh);
    return names.map((n) => n.toString('latin1'));
  }

  async setxattr(_c: Ctx, id: bigint, name: string, value: Buffer, flags: number): Promise<void> {
    if (flags & ~3) throw new PrismError('EINVAL', 'unknown setxattr flags');
    if (name === CAPS) this.forgetCaps(id);
    await this.rpc.setxattr(this.nodes.fh(id), xname(name), value, flags);
  }

  private forgetCaps(id: bigint): void {
    const node = this.nodes.get(id);
    if (node) node.noCaps = false;
  }

  async removexattr(_c: Ctx, id: bigint, name: string): Promise<void> {
    await this.rpc.removexattr(this.nodes.fh(id), xname(name));
  }

  async fallocate(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, length: bigint, mode: number): Promise<void> {
    const fh = this.nodes.fh(id);
    await this.writeBehind.dataChange(fh, Proc.FALLOCATE, [fh, Number(offset), Number(length), mode]);
  }

  async lseek(_c: Ctx, id: bigint, _fh: bigint, offset: bigint, whence: number): Promise<bigint> {
    // With the writeback cache the kernel sends LSEEK without writing its dirty pages back first: the
    // host would place data and holes by what it has so far. ENOSYS makes the kernel answer itself
    // from the size it holds (all data, one hole at the end), as POSIX allows, for this mount.
    if (this.writebackCache) throw new PrismError('ENOSYS', 'SEEK_DATA/SEEK_HOLE are answered by the kernel with the writeback cache');
    const [off] = await this.rpc.seek(this.nodes.fh(id), Number(offset), whence);
    return BigInt(off);
  }

  async copyFileRange(_c: Ctx, src: { ino: bigint; offset: bigint }, dst: { ino: bigint; offset: bigint }, length: bigint): Promise<number> {
    const len = Number(length > BigInt(MAX_COPY) ? BigInt(MAX_COPY) : length);
    const [copied] = await this.rpc.copyRange(this.nodes.fh(src.ino), Number(src.offset), this.nodes.fh(dst.ino), Number(dst.offset), len);
    return copied;
  }
}

function nsOf(t: Time): bigint {
  return BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
}


function bytes(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/**
 * The time of a change the agent answers itself and posts with it (CREATE_AT, MKDIR_AT, REMOVE_AT,
 * RENAME_AT): the kernel's coarse clock, what it stamps inode times with, so that a write within the
 * same tick finds a new file's times current and leaves them (no SETATTR of its times at close).
 */
function changeTime(): Time {
  return coarseNow() ?? now();
}

/**
 * A name of an entry: ENAMETOOLONG past NAME_MAX, as the host and ext4 say, checked here too
 * because the agent answers some changes itself (a posted create or rename).
 */
function nameBytes(s: string): Buffer {
  const b = bytes(s);
  if (b.length > MAX_NAME) throw new PrismError('ENAMETOOLONG', `a name of ${b.length} bytes (at most ${MAX_NAME})`);
  return b;
}

/** POSIX ACLs would be stored but not enforced (the kernel is not told to): refuse them, as a file system without ACLs does. */
function xname(name: string): Buffer {
  if (name.startsWith('system.posix_acl_')) throw new PrismError('ENOTSUP', 'POSIX ACLs are not supported');
  return bytes(name);
}

/** A SETATTR of mtime and ctime alone, as the kernel sends the times it kept with the writeback cache. */
function timesOnly(s: FuseSetAttr): s is FuseSetAttr & { mtime: Time; ctime: Time } {
  return s.ctime !== undefined && Array.isArray(s.mtime) && s.mode === undefined && s.uid === undefined && s.gid === undefined
    && s.size === undefined && s.atime === undefined;
}
