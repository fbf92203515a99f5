// The agent's node table: FUSE names files by node id, VRPC by handle. Each node the kernel knows
// has its handle, the kernel's lookup count and the names it got the node under. FUSE's root is
// node 1; the volume's root keeps its own inode number, and the two trade places.
import { PrismError } from '../errors.js';
import type { Attr } from '../posix/types.js';
import { fuseAttr } from './fuse-attr.js';
import type { Entry, FuseAttr } from './fuse/fs.js';

export const ROOT_ID = 1n;

/** Names remembered per node (hard links beyond this are forgotten oldest first). */
const NAMES_PER_NODE = 8;

export interface Node {
  fh: Buffer;
  lookups: bigint;
  /** The host said it has no security.capability xattr (a write drops it: privileges.ts). */
  noCaps?: boolean;
  /** Names the kernel got this node under (parent, name), so a fenced agent can make it forget them all. */
  names?: Array<[parent: bigint, name: Buffer]>;
  /** The attributes last told to the kernel (an entry, GETATTR or SETATTR reply): what it holds. */
  attr?: FuseAttr;
}

/** What the kernel may cache from this agent: its nodes (attributes, pages) and the names it got them under. */
export interface KernelCacheKeys { nodes: bigint[]; names: Array<[parent: bigint, name: Uint8Array]> }

// FUSE's root is node 1; the volume's root keeps its own inode number. The two trade places.
export function nodeIdOf(ino: number, rootIno: number): bigint {
  return ino === rootIno ? ROOT_ID : ino === 1 ? BigInt(rootIno) : BigInt(ino);
}

export class NodeTable {
  private readonly nodes = new Map<bigint, Node>();

  constructor(rootFh: Buffer, readonly rootIno: number) {
    this.nodes.set(ROOT_ID, { fh: rootFh, lookups: 1n << 62n });
  }

  get(id: bigint): Node | undefined {
    return this.nodes.get(id);
  }

  /** A known node's handle; ESTALE once the kernel forgot it. */
  fh(id: bigint): Buffer {
    const n = this.nodes.get(id);
    if (!n) throw new PrismError('ESTALE', `node ${id} is not known (forgotten)`);
    return n.fh;
  }

  nodeId(ino: number): bigint {
    return nodeIdOf(ino, this.rootIno);
  }

  /** The host's inode number of a node (the inverse of nodeId). */
  inoOf(id: bigint): number {
    return id === ROOT_ID ? this.rootIno : id === BigInt(this.rootIno) ? 1 : Number(id);
  }

  /**
   * A node found as `name` in `parent`, with handle `fh` (kept if the node is new: not shared with
   * anything that may change it) and attributes `a`, as an entry; `count` records the kernel's new lookup.
   */
  entry(fh: Buffer, a: Attr, parent: bigint, name: Buffer, count = true): Entry {
    const attr = fuseAttr(a);
    const id = this.nodeId(a.ino);
    let n = this.nodes.get(id);
    if (n) { if (count) n.lookups++; } else this.nodes.set(id, (n = { fh, lookups: count ? 1n : 0n }));
    n.attr = attr;
    const names = (n.names ??= []);
    if (!names.some(([p, x]) => p === parent && x.equals(name))) {
      if (names.push([parent, name]) > NAMES_PER_NODE) names.shift();
    }
    return { ino: id, attr };
  }

  /**
   * Everything the kernel may cache from this agent, for a fenced agent that lost change-log records
   * and must make its kernel forget it all. What this agent itself assumed (no capabilities) goes too.
   */
  kernelCacheKeys(): KernelCacheKeys {
    const out: KernelCacheKeys = { nodes: [], names: [] };
    for (const [id, n] of this.nodes) {
      n.noCaps = undefined;
      out.nodes.push(id);
      for (const x of n.names ?? []) out.names.push(x);
    }
    return out;
  }

  /** The kernel was told these attributes of a node it knows (a GETATTR or SETATTR reply); returns them. */
  told(id: bigint, a: FuseAttr): FuseAttr {
    const n = this.nodes.get(id);
    if (n) n.attr = a;
    return a;
  }

  /** The kernel took an entry (READDIRPLUS): one more lookup. */
  remember(e: Entry): void {
    const n = this.nodes.get(e.ino);
    if (n) n.lookups++;
  }

  /** The kernel forgot `nlookup` lookups; the node goes with its last one unless it is open. */
  forget(id: bigint, nlookup: bigint, open: boolean): void {
    const n = this.nodes.get(id);
    if (!n || id === ROOT_ID) return;
    n.lookups -= nlookup;
    if (n.lookups <= 0n && !open) this.nodes.delete(id);
  }

  /** A node's last open closed: it goes if the kernel holds no lookup of it either. */
  closed(id: bigint): void {
    const n = this.nodes.get(id);
    if (n && n.lookups <= 0n) this.nodes.delete(id);
  }
}
