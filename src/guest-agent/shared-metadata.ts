// Answers from the host's metadata table (src/metadata-share), mapped read-only: LOOKUP, GETATTR,
// ".." and "no extended attributes" without an RPC when the table holds them. Each answer or miss
// is counted; a miss means the caller asks the host.
import { PrismError } from '../errors.js';
import type { MetaTable, SharedEntry } from '../metadata-share/table.js';
import { attrFromWire } from '../protocol/wire.js';
import { now } from '../posix/clock.js';
import { isDir } from '../posix/mode.js';
import type { Attr, Time } from '../posix/types.js';
import type { AgentCounters } from './counters.js';
import type { Entry } from './fuse/fs.js';
import type { NodeTable } from './node-table.js';

const DOTDOT = Buffer.from('..');

/** "." and "..": never answered absent from a directory's completeness (the table may not hold them). */
function isDot(name: Buffer): boolean {
  return name.length <= 2 && name.length > 0 && name.every((b) => b === 0x2e);
}

export class SharedMetadata {
  constructor(
    private readonly table: MetaTable,
    /** The volume's id, as handles carry it (bytes 1-4): the table's key. */
    private readonly volumeId: number,
    private readonly nodes: NodeTable,
    private readonly counters: AgentCounters,
    /** Whether writes of ours to a node are still on their way (the table cannot know their size yet). */
    private readonly writing: (id: bigint) => boolean,
    /** Whether a posted change of ours may be adding `name` to a directory (a rename into it, a create of it): its absence is not the table's to say. */
    private readonly gaining: (dir: bigint, name: Buffer) => boolean = () => false,
  ) {}

  /**
   * `name` in `parent` when the table holds both the name and the child's attributes; ENOENT when it
   * knows there is none (a name held as absent, or not held in a directory the table holds complete).
   */
  lookup(parent: bigint, name: Buffer): Entry | undefined {
    const dir = this.nodes.inoOf(parent);
    const e = this.table.getEntry(this.volumeId, dir, name);
    if (this.absent(dir, name, e) && !this.gaining(parent, name)) {
      this.counters.add('lookupsLocal');
      throw new PrismError('ENOENT', 'no such file or directory');
    }
    const attr = e && this.attr(this.nodes.nodeId(e.ino));
    if (e && attr) {
      this.counters.add('lookupsLocal');
      return this.nodes.entry(Buffer.from(e.fh), attr, parent, name);
    }
    this.counters.add('lookupMisses');
    return undefined;
  }

  /** The table says `name` is not in directory `dir` (inode): held as absent, or not held in a directory it holds complete. */
  private absent(dir: number, name: Buffer, e: SharedEntry | null | undefined): boolean {
    return e === null || (e === undefined && !isDot(name) && this.table.isComplete(this.volumeId, dir));
  }

  getattr(id: bigint): Attr | undefined {
    const attr = this.attr(id);
    this.counters.add(attr ? 'getattrsLocal' : 'getattrMisses');
    return attr;
  }

  /**
   * The node `name` in `parent` is, when the agent may remove it itself and post the REMOVE: the volume
   * is written by this VM alone (the host's mark), the table holds the name and the child's attributes,
   * the child is no directory, and no change of ours to it is still on its way. Then the host
   * can only answer as the table says (its other errors, EIO or a full store, are reported later).
   * The kernel (default_permissions) has already checked the caller may.
   */
  removable(parent: bigint, name: Buffer): bigint | undefined {
    // A posted change of the directory (another unlink in it) leaves its other names right: only the
    // name it removed is stale, and that child's attributes are not answered until its reply.
    if (!this.table.isSole(this.volumeId)) return undefined;
    const c = this.child(parent, name);
    return c && !isDir(c.attr.mode) ? c.id : undefined;
  }

  /** The node `name` in `parent` and its attributes, when the table holds both (and no change of ours to it is on its way). */
  child(parent: bigint, name: Buffer): { id: bigint; attr: Attr } | undefined {
    const e = this.table.getEntry(this.volumeId, this.nodes.inoOf(parent), name);
    if (!e) return undefined;
    const id = this.nodes.nodeId(e.ino);
    const attr = this.attr(id);
    return attr && { id, attr };
  }

  /**
   * The node a rename moves, and the one it replaces if any, when the agent may rename itself and post
   * the RENAME: as for `removable`, the source is a non-directory the table holds; the target name is
   * absent by the table, or a non-directory it holds (another inode: a rename onto a hard link of
   * itself changes nothing and is left to the host). Undefined when the host's answer is not certain.
   */
  renamable(parent: bigint, name: Buffer, newParent: bigint, newName: Buffer): { child: bigint; replaced?: bigint } | undefined {
    if (parent === newParent && name.equals(newName)) return undefined;
    const child = this.removable(parent, name);
    if (child === undefined) return undefined;
    const dir = this.nodes.inoOf(newParent);
    const d = this.table.getEntry(this.volumeId, dir, newName);
    if (this.absent(dir, newName, d) && !this.gaining(newParent, newName)) return { child };
    if (!d || d.ino === this.nodes.inoOf(child)) return undefined;
    const replaced = this.nodes.nodeId(d.ino);
    const attr = this.attr(replaced);
    return attr && !isDir(attr.mode) ? { child, replaced } : undefined;
  }

  /** The host marks the volume as written by this VM alone. */
  sole(): boolean {
    return this.table.isSole(this.volumeId);
  }

  /**
   * The host marks the volume as written by this VM alone and bounded by nothing it could run into
   * (no quota, room on the store's disk): what this agent posts can fail only as a disk does (EIO).
   */
  unbounded(): boolean {
    return this.table.isSoleUnbounded(this.volumeId);
  }

  /**
   * A node's current attributes, when the agent may change its mode, owner or times itself and post
   * the SETATTR: the volume is written by this VM alone, the table holds them, and no change of ours
   * to it is on its way. The host then cannot refuse (the kernel checked permissions) but for EIO or
   * a full store, reported later.
   */
  settable(id: bigint): Attr | undefined {
    if (!this.table.isSole(this.volumeId)) return undefined;
    return this.attr(id);
  }

  /**
   * The attributes of the directory `name` may be made in, when the agent may make it itself and post
   * the CREATE_AT or MKDIR_AT: the volume is written by this VM alone, the name is absent by the
   * table (as for a negative lookup) and no posted change of ours may be adding it, and the table holds
   * the directory's attributes (as the host has them: the caller checks no posted SETATTR of ours is
   * changing them; posted changes of its names change only its times and links). The kernel
   * (default_permissions) has checked the caller may write the directory.
   */
  creatable(parent: bigint, name: Buffer): Attr | undefined {
    if (!this.table.isSole(this.volumeId)) return undefined;
    const dir = this.nodes.inoOf(parent);
    if (!this.absent(dir, name, this.table.getEntry(this.volumeId, dir, name)) || this.gaining(parent, name)) return undefined;
    const w = this.table.getAttr(this.volumeId, dir);
    return w && attrFromWire(w);
  }

  /**
   * A directory's attributes while changes of ours to its names are posted and not applied yet: the
   * table's (it holds the directory as before them), with mtime and ctime `at` when every such change
   * carries our time (every posted change of names does: the host stamps the directory with it, so the
   * prediction is exact), else of now, which the host is about to stamp, and `nlink` links when
   * posted mkdirs change it. A non-directory's removal, move or making changes nothing else of its
   * directory. Without `at`, for a reply the kernel does not cache: once the host has answered, the
   * table has its exact values.
   */
  asChanged(dir: bigint, nlink?: number, at?: Time): Attr | undefined {
    const w = this.table.getAttr(this.volumeId, this.nodes.inoOf(dir));
    if (!w) return undefined;
    this.counters.add('getattrsLocal');
    const t = at ?? now();
    const a = attrFromWire(w);
    return { ...a, nlink: nlink ?? a.nlink, mtime: t, ctime: t };
  }

  /** The inode number of a directory's parent, if the table holds its ".." entry. */
  parentIno(id: bigint): number | undefined {
    const e = this.table.getEntry(this.volumeId, this.nodes.inoOf(id), DOTDOT);
    if (!e) return undefined;
    this.counters.add('lookupsLocal');
    return e.ino;
  }

  /** The table says the node has no extended attributes (`ls -l` asks for some on every file). */
  noXattrs(id: bigint): boolean {
    if (!this.table.noXattrs(this.volumeId, this.nodes.inoOf(id))) return false;
    this.counters.add('xattrsLocal');
    return true;
  }

  /** A node's attributes from the table, unless writes of ours are still on their way. */
  private attr(id: bigint): Attr | undefined {
    if (this.writing(id)) return undefined;
    const w = this.table.getAttr(this.volumeId, this.nodes.inoOf(id));
    return w && attrFromWire(w);
  }
}
