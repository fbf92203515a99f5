// A copy-on-write B+tree whose nodes are shared between volumes and reference-counted
// (after Rodeh, "B-trees, Shadowing, and Clones"). Cloning a tree is one reference-count
// increment on its root; a write copies only the shared nodes on its path.
//
// Pure logic: nodes live in a NodeStore (LMDB-backed in the store, a Map in tests).
// Leaf values are treated as immutable: a change always puts a new value object.

export type LeafNode<V> = { l: 1; k: Buffer[]; v: V[] };
export type InnerNode = { l: 0; k: Buffer[]; c: number[] };
export type Node<V> = LeafNode<V> | InnerNode;

export interface NodeStore<V> {
  get(id: number): Node<V>;
  /**
   * An owned node, to be changed in place and put back. It may be a copy of what get() returns: a
   * commit in progress may be writing that one (src/store/nodes.ts).
   */
  edit(id: number): Node<V>;
  /** Record that an owned node changed (it was mutated in place). */
  put(id: number, node: Node<V>): void;
  alloc(node: Node<V>): number;
  free(id: number): void;
  refs(id: number): number;
  setRefs(id: number, n: number): void;
}

/** Leaf values may hold references to other objects (content blocks); the tree keeps them counted. */
export interface ValueRefs<V> {
  retain(v: V): void;
  release(v: V): void;
}

export const LEAF_MAX = 64;
export const INNER_MAX = 128;

/** Byte-wise order. Keys are short: a JS loop beats the native call of Buffer.compare here. */
export function compareKeys(a: Buffer, b: Buffer): number {
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Index of key in sorted keys, or ~insertionPoint. */
function search(keys: Buffer[], key: Buffer): number {
  let lo = 0, hi = keys.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareKeys(keys[mid], key);
    if (c < 0) lo = mid + 1;
    else if (c > 0) hi = mid - 1;
    else return mid;
  }
  return ~lo;
}

/** The child of an inner node whose range holds key (inner keys are subtree minimums). */
function childIndex(keys: Buffer[], key: Buffer): number {
  const i = search(keys, key);
  if (i >= 0) return i;
  return Math.max(0, ~i - 1);
}

interface InsertResult { id: number; split?: { key: Buffer; id: number } }

export class CowTree<V> {
  constructor(private readonly ns: NodeStore<V>, private readonly vr: ValueRefs<V>) {}

  get(root: number, key: Buffer): V | undefined {
    if (!root) return undefined;
    let n = this.ns.get(root);
    while (n.l === 0) n = this.ns.get(n.c[childIndex(n.k, key)]);
    const i = search(n.k, key);
    return i >= 0 ? n.v[i] : undefined;
  }

  /** Insert or replace; returns the (possibly new) root id. */
  put(root: number, key: Buffer, val: V): number {
    if (!root) {
      this.vr.retain(val);
      return this.ns.alloc({ l: 1, k: [key], v: [val] });
    }
    const r = this.insert(root, key, val);
    if (!r.split) return r.id;
    const left = this.ns.get(r.id);
    return this.ns.alloc({ l: 0, k: [left.k[0], r.split.key], c: [r.id, r.split.id] });
  }

  /** Remove key if present; returns the new root id (0 when the tree is empty). */
  del(root: number, key: Buffer): number {
    if (!root || this.get(root, key) === undefined) return root;
    let r = this.remove(root, key);
    // Collapse single-child roots; the child inherits the root's reference.
    while (r) {
      const n = this.ns.get(r);
      if (n.l === 1 || n.c.length !== 1) break;
      const only = n.c[0];
      this.ns.free(r);
      r = only;
    }
    return r;
  }

  /** Calls fn for each entry with lo <= key < hi, in order; fn returns false to stop. */
  each(root: number, lo: Buffer, hi: Buffer | null, fn: (k: Buffer, v: V) => boolean | void): void {
    if (root) this.walk(root, lo, hi, fn);
  }

  /** First entry with lo <= key < hi. */
  first(root: number, lo: Buffer, hi: Buffer | null): [Buffer, V] | undefined {
    let found: [Buffer, V] | undefined;
    this.each(root, lo, hi, (k, v) => { found = [k, v]; return false; });
    return found;
  }

  /** Remove all keys in [lo, hi). */
  delRange(root: number, lo: Buffer, hi: Buffer): number {
    const keys: Buffer[] = [];
    this.each(root, lo, hi, (k) => { keys.push(k); });
    for (const k of keys) root = this.del(root, k);
    return root;
  }

  /** Take one more reference to a tree (a clone). */
  retain(root: number): void {
    if (root) this.ns.setRefs(root, this.ns.refs(root) + 1);
  }

  /** Drop one reference to a tree; frees every node and value no one else references. */
  release(root: number): void {
    if (!root) return;
    const stack = [root];
    while (stack.length) {
      const id = stack.pop()!;
      const rc = this.ns.refs(id);
      if (rc > 1) { this.ns.setRefs(id, rc - 1); continue; }
      const n = this.ns.get(id);
      if (n.l === 1) for (const v of n.v) this.vr.release(v);
      else stack.push(...n.c);
      this.ns.free(id);
    }
  }

  /** Visit every node reachable from root once per path (for fsck and space accounting). */
  visitNodes(root: number, fn: (id: number, n: Node<V>, shared: boolean) => boolean | void, shared = false): void {
    if (!root) return;
    const s = shared || this.ns.refs(root) > 1;
    const n = this.ns.get(root);
    if (fn(root, n, s) === false) return;
    if (n.l === 0) for (const c of n.c) this.visitNodes(c, fn, s);
  }

  private walk(id: number, lo: Buffer, hi: Buffer | null, fn: (k: Buffer, v: V) => boolean | void): boolean {
    const n = this.ns.get(id);
    if (n.l === 1) {
      let i = search(n.k, lo);
      if (i < 0) i = ~i;
      for (; i < n.k.length; i++) {
        if (hi && compareKeys(n.k[i], hi) >= 0) return false;
        if (fn(n.k[i], n.v[i]) === false) return false;
      }
      return true;
    }
    for (let i = childIndex(n.k, lo); i < n.c.length; i++) {
      if (hi && i > 0 && compareKeys(n.k[i], hi) >= 0) return false;
      if (!this.walk(n.c[i], lo, hi, fn)) return false;
    }
    return true;
  }

  /** Make node id exclusively ours, copying it if it is shared. */
  private own(id: number): number {
    const rc = this.ns.refs(id);
    if (rc <= 1) return id;
    const n = this.ns.get(id);
    let copy: Node<V>;
    if (n.l === 1) {
      copy = { l: 1, k: n.k.slice(), v: n.v.slice() };
      for (const v of n.v) this.vr.retain(v);
    } else {
      copy = { l: 0, k: n.k.slice(), c: n.c.slice() };
      for (const c of n.c) this.ns.setRefs(c, this.ns.refs(c) + 1);
    }
    this.ns.setRefs(id, rc - 1);
    return this.ns.alloc(copy);
  }

  private insert(id: number, key: Buffer, val: V): InsertResult {
    id = this.own(id);
    const n = this.ns.edit(id);
    if (n.l === 1) {
      const i = search(n.k, key);
      if (i >= 0) {
        const old = n.v[i];
        this.vr.retain(val);
        n.v[i] = val;
        this.vr.release(old);
      } else {
        n.k.splice(~i, 0, key);
        n.v.splice(~i, 0, val);
        this.vr.retain(val);
      }
      this.ns.put(id, n);
      if (n.k.length <= LEAF_MAX) return { id };
      const half = n.k.length >>> 1;
      const right: LeafNode<V> = { l: 1, k: n.k.splice(half), v: n.v.splice(half) };
      this.ns.put(id, n);
      return { id, split: { key: right.k[0], id: this.ns.alloc(right) } };
    }
    const ci = childIndex(n.k, key);
    const r = this.insert(n.c[ci], key, val);
    n.c[ci] = r.id;
    if (ci === 0 && compareKeys(key, n.k[0]) < 0) n.k[0] = key;
    if (r.split) {
      n.k.splice(ci + 1, 0, r.split.key);
      n.c.splice(ci + 1, 0, r.split.id);
    }
    this.ns.put(id, n);
    if (n.c.length <= INNER_MAX) return { id };
    const half = n.c.length >>> 1;
    const right: InnerNode = { l: 0, k: n.k.splice(half), c: n.c.splice(half) };
    this.ns.put(id, n);
    return { id, split: { key: right.k[0], id: this.ns.alloc(right) } };
  }

  /** Remove key below id; returns the node's new id, or 0 if it became empty and was freed. */
  private remove(id: number, key: Buffer): number {
    id = this.own(id);
    const n = this.ns.edit(id);
    if (n.l === 1) {
      const i = search(n.k, key);
      if (i < 0) return id;
      const old = n.v[i];
      n.k.splice(i, 1);
      n.v.splice(i, 1);
      this.vr.release(old);
      if (n.k.length === 0) { this.ns.free(id); return 0; }
      this.ns.put(id, n);
      return id;
    }
    const ci = childIndex(n.k, key);
    const r = this.remove(n.c[ci], key);
    if (r === 0) {
      n.k.splice(ci, 1);
      n.c.splice(ci, 1);
      if (n.c.length === 0) { this.ns.free(id); return 0; }
    } else {
      n.c[ci] = r;
    }
    this.ns.put(id, n);
    return id;
  }
}

/** An in-memory NodeStore, for tests and tools. */
export class MemoryNodeStore<V> implements NodeStore<V> {
  readonly nodes = new Map<number, Node<V>>();
  readonly rc = new Map<number, number>();
  private next = 1;
  get(id: number): Node<V> {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`node ${id} missing`);
    return n;
  }
  edit(id: number): Node<V> { return this.get(id); }
  put(id: number, node: Node<V>): void { this.nodes.set(id, node); }
  alloc(node: Node<V>): number { const id = this.next++; this.nodes.set(id, node); return id; }
  free(id: number): void { this.nodes.delete(id); this.rc.delete(id); }
  refs(id: number): number { return this.rc.get(id) ?? 1; }
  setRefs(id: number, n: number): void { if (n === 1) this.rc.delete(id); else this.rc.set(id, n); }
}
