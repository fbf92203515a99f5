// Metadata changes the agent answers itself and posts (docs/agent.md, "posted metadata changes"):
// what is on its way to the host, so that answers about the directories and names concerned are
// not taken from the table (which the host updates only when it applies them) until the replies are
// read, and what the kernel is told meanwhile (the directory's attributes as the host will make them).
import type { Proc } from '../protocol/procs.js';
import { now } from '../posix/clock.js';
import type { Attr, Time } from '../posix/types.js';
import { fuseAttr } from './fuse-attr.js';
import type { FuseAttr, FuseSetAttr } from './fuse/fs.js';
import type { WriteBehind } from './write-behind.js';

export class PostedChanges {
  /** Directories with posted changes of their names not answered yet: how many. */
  private readonly changing = new Map<bigint, number>();
  /** Directories a posted rename adds a name to, not answered yet: how many. */
  private readonly gaining = new Map<bigint, number>();

  constructor(private readonly writeBehind: WriteBehind) {}

  /** A posted change of names in the directory is not answered yet: its attributes are predicted (`asChanged`). */
  changes(dir: bigint): boolean {
    return this.changing.has(dir);
  }

  /** A posted rename adds a name to the directory: none of its "absent" answers may come from the table. */
  gains(dir: bigint): boolean {
    return this.gaining.has(dir);
  }

  /**
   * Post a change of names in `dirs` (of which `gains` get a name the table cannot say), counted until
   * its reply is read; `nodes` are every node it touches (writeBehind.postMeta).
   */
  postDirChange(dirs: bigint[], gains: bigint[], nodes: bigint[], proc: Proc, args: unknown[]): Promise<void> {
    for (const d of dirs) count(this.changing, d, 1);
    for (const d of gains) count(this.gaining, d, 1);
    return this.writeBehind.postMeta(nodes, proc, args).then(() => {
      for (const d of dirs) count(this.changing, d, -1);
      for (const d of gains) count(this.gaining, d, -1);
    });
  }
}

/** Add `by` to a counter kept in a map; a counter back at 0 is removed. */
function count(m: Map<bigint, number>, key: bigint, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n > 0) m.set(key, n);
  else m.delete(key);
}

/**
 * The attributes a posted SETATTR gives (as Volume.setattr makes them), for the kernel's reply only:
 * not to be cached (validSec 0), since the host stamps ctime (and "now") with its own clock when it
 * applies it; the next stat asks again and gets the host's values.
 */
export function setattrPrediction(a: Attr, s: FuseSetAttr): FuseAttr {
  const t0 = now();
  const time = (t: FuseSetAttr['atime'], old: Time) => (t === undefined ? old : t === 'now' ? t0 : t);
  return {
    ...fuseAttr(a),
    mode: s.mode === undefined ? a.mode : (a.mode & 0o170000) | (s.mode & 0o7777),
    uid: s.uid ?? a.uid, gid: s.gid ?? a.gid,
    atime: time(s.atime, a.atime), mtime: time(s.mtime, a.mtime), ctime: t0,
    validSec: 0,
  };
}
