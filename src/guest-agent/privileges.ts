// Set-id bits and file capabilities that a write, truncation or change of owner takes away, as Linux
// does (fs/attr.c, security/commoncap.c). The agent mounts with FUSE_HANDLE_KILLPRIV_V2, so the
// kernel leaves this to it: without that flag the kernel asks GETXATTR security.capability before
// every write(), a FUSE round trip each time. Most files have neither, and then this costs nothing:
// the node or the metadata table already says "no capabilities", and set-id bits are dropped only
// when the kernel says the caller's write must drop them.
import fs from 'node:fs';
import { PrismError } from '../errors.js';
import { S_ISGID, S_ISUID, S_IXGRP, isDir } from '../posix/mode.js';
import type { Attr } from '../posix/types.js';
import type { Stubs } from '../protocol/stubs.js';
import type { Ctx } from './fuse/fs.js';
import type { NodeTable } from './node-table.js';
import type { SharedMetadata } from './shared-metadata.js';

const CAPS = Buffer.from('security.capability');

/**
 * The mode without the set-id bits that a write, truncation or chown by a caller without CAP_FSETID
 * drops (fs/attr.c): setuid always; setgid when the group may execute, or when the caller is not in
 * the file's group.
 */
export function withoutSetId(mode: number, callerInGroup: boolean): number {
  return mode & ~S_ISUID & ~(mode & S_IXGRP || !callerInGroup ? S_ISGID : 0);
}

/** Whether the caller is in group `gid`: its own group, or one of its supplementary groups (/proc). */
function inGroup(ctx: Ctx, gid: number): boolean {
  if (ctx.gid === gid) return true;
  try {
    const line = fs.readFileSync(`/proc/${ctx.pid}/status`, 'latin1').split('\n').find((l) => l.startsWith('Groups:'));
    return line !== undefined && line.slice(7).trim().split(/\s+/).some((g) => g !== '' && Number(g) === gid);
  } catch {
    return false; // the caller is gone: as if it were not in the group (the bit goes, as for a stranger)
  }
}

export class Privileges {
  constructor(private readonly rpc: Stubs, private readonly nodes: NodeTable, private readonly shared: SharedMetadata | undefined) {}

  /**
   * Before a write: capabilities go (any writer, as on Linux), set-id bits when the kernel says so
   * (a caller without CAP_FSETID: FUSE_WRITE_KILL_SUIDGID). Sent ahead of the write on the same ring,
   * so the host applies them first.
   */
  beforeWrite(ctx: Ctx, id: bigint, fh: Buffer, killSuidgid: boolean): Promise<void> | undefined {
    if (!killSuidgid && this.noCaps(id)) return undefined; // the usual case: nothing to wait for
    return (async () => {
      await this.dropCaps(id, fh);
      if (killSuidgid) await this.dropSetId(ctx, id, fh);
    })();
  }

  /**
   * The mode a SETATTR must also set: a truncation by a caller without CAP_FSETID (FATTR_KILL_SUIDGID)
   * and any change of owner or group of a non-directory drop set-id bits; both drop capabilities.
   * Undefined when the mode stays as it is (or the SETATTR sets one itself).
   */
  async forSetattr(ctx: Ctx, id: bigint, fh: Buffer, s: { mode?: number; uid?: number; gid?: number; size?: bigint; killSuidgid?: boolean }): Promise<number | undefined> {
    const chown = s.uid !== undefined || s.gid !== undefined;
    if (!chown && s.size === undefined) return undefined;
    if (!chown && !s.killSuidgid) {
      await this.dropCaps(id, fh);
      return undefined;
    }
    const attr = await this.attr(id, fh);
    if (chown && isDir(attr.mode)) return undefined; // directories keep theirs (and have no capabilities)
    await this.dropCaps(id, fh);
    if (s.mode !== undefined) return undefined;
    // A chown by root (CAP_FSETID) drops setgid only where the group may execute.
    const mode = withoutSetId(attr.mode, (chown && ctx.uid === 0) || inGroup(ctx, attr.gid));
    return mode === attr.mode ? undefined : mode & 0o7777;
  }

  private async dropSetId(ctx: Ctx, id: bigint, fh: Buffer): Promise<void> {
    const { mode, gid } = await this.attr(id, fh);
    const kept = withoutSetId(mode, inGroup(ctx, gid));
    if (kept !== mode) await this.rpc.setattr(fh, [kept & 0o7777, null, null, null, null, null]);
  }

  /** security.capability removed, unless the node or the table knows there is none (then no RPC). */
  /** The table first (kept coherent with other VMs' changes), else what this agent learnt of the node. */
  private noCaps(id: bigint): boolean {
    return this.shared?.noXattrs(id) === true || this.nodes.get(id)?.noCaps === true;
  }

  private async dropCaps(id: bigint, fh: Buffer): Promise<void> {
    if (this.noCaps(id)) return;
    const node = this.nodes.get(id);
    try {
      await this.rpc.removexattr(fh, CAPS);
    } catch (e) {
      if (!(e instanceof PrismError && e.code === 'ENODATA')) throw e;
    }
    if (node) node.noCaps = true;
  }

  private async attr(id: bigint, fh: Buffer): Promise<Attr> {
    const local = this.shared?.getattr(id);
    if (local) return local;
    const [attr] = await this.rpc.getattr(fh);
    return attr;
  }
}
