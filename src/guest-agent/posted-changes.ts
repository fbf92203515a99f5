// Metadata changes the agent answers itself and posts (docs/agent.md, "posted metadata changes"):
// what is on its way to the host, so that answers about the directories and names concerned are
// not taken from the table (which the host updates only when it applies them) until the replies are
// read, and what the kernel is told meanwhile (the directory's attributes as the host will make them).
import type { PrismError } from '../errors.js';
import type { Proc } from '../protocol/procs.js';
import { now } from '../posix/clock.js';
import type { Attr, Time } from '../posix/types.js';
import { fuseAttr } from './fuse-attr.js';
import type { FuseAttr, FuseSetAttr } from './fuse/fs.js';
import type { WriteBehind } from './write-behind.js';

export class PostedChanges {
  /** Directories with posted changes of their names not answered yet: how many. */
  private readonly changing = new Map<bigint, number>();
  /** Names posted renames add to directories, by directory (latin1), not answered yet: how many. */
  private readonly gaining = new Map<bigint, Map<string, number>>();
  /** Names posted creates and mkdirs are making, by directory (latin1), not answered yet. */
  private readonly making = new Map<bigint, Set<string>>();
  /**
   * Directories posted mkdirs add a subdirectory to, not all answered yet: their link count once all
   * are applied, and how many are not answered. (The table's own count may or may not include those
   * the host has applied and we have not read the reply of: it is taken only while none is pending.)
   */
  private readonly subdirs = new Map<bigint, { nlink: number; pending: number }>();
  /** Nodes with posted SETATTRs not answered yet (their mode and group in the table may be old): how many. */
  private readonly setting = new Map<bigint, number>();
  /** What the latest of those makes of the node, where that is known exactly (attrsOnceSet). */
  private readonly attrsAfter = new Map<bigint, Attr>();
  /**
   * Directories with posted changes not answered yet: the time the host will stamp them with, when
   * every one of those changes carries our time (CREATE_AT, MKDIR_AT, REMOVE_AT, RENAME_AT: the last
   * one's); null while one the host stamps itself is among them.
   */
  private readonly stamps = new Map<bigint, Time | null>();
  /** Nodes of posted makes not answered yet: settles once the reply is read (and a failed one's name forgotten). */
  private readonly makes = new Map<bigint, Promise<void>>();

  /** `unmade`: a posted make failed; the kernel, told it exists, must forget the name (settles once it has). */
  constructor(private readonly writeBehind: WriteBehind, private readonly unmade?: (dir: bigint, name: Buffer) => Promise<void>) {}

  /** A posted change of names in the directory is not answered yet: its attributes are predicted (`asChanged`). */
  changes(dir: bigint): boolean {
    return this.changing.has(dir);
  }

  /**
   * The mtime and ctime the host will give the directory once its posted changes are applied, if
   * they are all stamped with our time: the prediction is then exact, and the kernel may keep it.
   */
  stampOf(dir: bigint): Time | undefined {
    return this.stamps.get(dir) ?? undefined;
  }

  /**
   * Whether the table's "absent" may be stale for `name` in `dir`: a posted rename, create or mkdir
   * adds that name. (Only that one: the directory's other names stay as the table has them.)
   */
  gains(dir: bigint, name: Buffer): boolean {
    const key = name.toString('latin1');
    return (this.gaining.get(dir)?.has(key) ?? false) || (this.making.get(dir)?.has(key) ?? false);
  }

  /** The directory's link count once the posted mkdirs in it are applied, if there are any. */
  nlinkOf(dir: bigint): number | undefined {
    return this.subdirs.get(dir)?.nlink;
  }

  /** A posted SETATTR of the node is on its way: its mode and group in the table may be old. */
  setsAttrs(id: bigint): boolean {
    return this.setting.has(id);
  }

  /**
   * Settles once a posted make of the node is answered, and if it failed, once the kernel has
   * forgotten its name: a close that reports the failure returns after that, so the name is gone.
   */
  made(id: bigint): Promise<void> | undefined {
    return this.makes.get(id);
  }

  /**
   * Post a change of names in `dirs` (`gains`: a name it adds that the table cannot say yet), counted until
   * its reply is read; `nodes` are every node it touches (writeBehind.postMeta); `at`, the time the
   * host stamps the directories with, when the call carries it. Settles with the host's error, if
   * any (already recorded for the nodes).
   */
  postDirChange(dirs: bigint[], gains: { dir: bigint; name: Buffer } | undefined, nodes: bigint[], proc: Proc, args: unknown[], at?: Time): Promise<PrismError | undefined> {
    for (const d of dirs) {
      this.stamps.set(d, at !== undefined && (!this.changing.has(d) || this.stamps.get(d)) ? at : null);
      count(this.changing, d, 1);
    }
    const gain = gains && this.gain(gains.dir, gains.name.toString('latin1'));
    return this.writeBehind.postMeta(nodes, proc, args).then((err) => {
      for (const d of dirs) {
        count(this.changing, d, -1);
        if (!this.changing.has(d)) this.stamps.delete(d);
      }
      gain?.();
      return err;
    });
  }

  /** Count `key` as a name a posted change adds to `dir`; the returned function uncounts it. */
  private gain(dir: bigint, key: string): () => void {
    let names = this.gaining.get(dir);
    if (!names) this.gaining.set(dir, (names = new Map()));
    count(names, key, 1);
    return () => {
      count(names, key, -1);
      if (names.size === 0 && this.gaining.get(dir) === names) this.gaining.delete(dir);
    };
  }

  /**
   * Post a SETATTR of the node's mode, owner or times; `after`, the node's attributes once it is
   * applied, when they are known exactly (a SETATTR_AT from attributes known exactly).
   */
  postSetattr(id: bigint, proc: Proc, args: unknown[], after?: Attr): void {
    count(this.setting, id, 1);
    if (after) this.attrsAfter.set(id, after);
    else this.attrsAfter.delete(id);
    void this.writeBehind.postMeta([id], proc, args).then((err) => {
      count(this.setting, id, -1);
      if (err || !this.setting.has(id)) this.attrsAfter.delete(id);
    });
  }

  /**
   * The node's attributes once its posted SETATTRs are applied, when they are all that is on its
   * way for it and what they make is known exactly: a utime right after a chmod (as tar and `cp -p`
   * do) starts from them, and neither waits for the host nor asks it.
   */
  attrsOnceSet(id: bigint): Attr | undefined {
    const after = this.attrsAfter.get(id);
    return after && this.writeBehind.inFlight(id) === this.setting.get(id) ? after : undefined;
  }

  /**
   * Post a CREATE_AT or MKDIR_AT of `name` in `dir` (node `child`) made at `at`: until its reply is read, lookups
   * of the name read the reply first, the directory's attributes are predicted, and a mkdir counts
   * as a link of the directory, whose count is now `dirNlink` (the table's, when no mkdir of ours in
   * it is pending). A failure makes the kernel forget the name (`unmade`); the error is the child's
   * (its close reports it) and the directory's (fsync).
   */
  postMake(dir: bigint, dirNlink: number, name: Buffer, child: bigint, isDir: boolean, proc: Proc, args: unknown[], at: Time): void {
    const key = name.toString('latin1');
    let names = this.making.get(dir);
    if (!names) this.making.set(dir, (names = new Set()));
    names.add(key);
    let links: { nlink: number; pending: number } | undefined;
    if (isDir) {
      links = this.subdirs.get(dir);
      if (!links) this.subdirs.set(dir, (links = { nlink: dirNlink, pending: 0 }));
      links.nlink++;
      links.pending++;
    }
    const done = this.postDirChange([dir], undefined, [dir, child], proc, args, at).then(async (err) => {
      names.delete(key);
      if (names.size === 0 && this.making.get(dir) === names) this.making.delete(dir);
      // A failed mkdir's link never comes: the next prediction starts from the table again.
      if (links && (--links.pending === 0 || err) && this.subdirs.get(dir) === links) this.subdirs.delete(dir);
      if (err) await this.unmade?.(dir, name);
    }).finally(() => {
      if (this.makes.get(child) === done) this.makes.delete(child);
    });
    this.makes.set(child, done);
  }
}

/** Add `by` to a counter kept in a map; a counter back at 0 is removed. */
function count<K>(m: Map<K, number>, key: K, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}

/**
 * The attributes a posted SETATTR gives (as Volume.setattr makes them) at time `at`: its ctime, and
 * the time of a "now". `exact` when the host takes `at` too (SETATTR_AT): the kernel may cache them.
 * Otherwise the host stamps the change with its own clock, so they are for the kernel's reply only
 * (validSec 0): the next stat asks again and gets the host's values.
 */
export function setattrPrediction(a: Attr, s: FuseSetAttr, at: Time = now(), exact = false): FuseAttr {
  const predicted = fuseAttr(setattrApplied(a, s, at));
  if (!exact) predicted.validSec = 0;
  return predicted;
}

/** What a SETATTR of mode, owner or times at time `at` makes of attributes `a` (as Volume.setattr does). */
export function setattrApplied<A extends Pick<Attr, 'mode' | 'uid' | 'gid' | 'atime' | 'mtime' | 'ctime'>>(a: A, s: FuseSetAttr, at: Time): A {
  const time = (t: FuseSetAttr['atime'], old: Time) => (t === undefined ? old : t === 'now' ? at : t);
  return {
    ...a,
    mode: s.mode === undefined ? a.mode : (a.mode & 0o170000) | (s.mode & 0o7777),
    uid: s.uid ?? a.uid, gid: s.gid ?? a.gid,
    atime: time(s.atime, a.atime), mtime: time(s.mtime, a.mtime), ctime: at,
  };
}
