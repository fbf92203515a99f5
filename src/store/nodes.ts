// Tree nodes and their reference counts in LMDB, behind a write-back cache: changes stay in memory
// until the store commits them, all in one transaction.
//
// A commit is cut (cut()) before it is written: the changes so far are frozen and handed to it while
// new changes collect in fresh maps. Frozen nodes are never changed again (edit() copies one out), so
// what the commit writes is exactly the state at the cut, however long its fsyncs take.
import type { Database } from 'lmdb';
import { PrismError } from '../errors.js';
import type { Node, NodeStore } from './btree.js';

const CACHE_MAX = 200_000;

/** Changes handed to one commit: written as they were at the cut. */
export interface FrozenNodes<V> {
  readonly dirty: Map<number, Node<V> | null>;
  readonly rcDirty: Map<number, number>;
  readonly gen: number;
}

export class LmdbNodeStore<V> implements NodeStore<V> {
  private dirty = new Map<number, Node<V> | null>();
  private rcDirty = new Map<number, number>();
  /** Cut but not yet committed, oldest first (usually none or one). */
  private frozen: Array<FrozenNodes<V>> = [];
  private gens = 0;
  private settledGen = 0;
  private cache = new Map<number, Node<V>>();
  private rcCache = new Map<number, number>();

  constructor(
    private readonly db: Database<Node<V>, number>,
    private readonly refsDb: Database<number, number>,
    public nextId: number,
  ) {}

  /** The newest pending version of a node: live, else frozen (newest first); undefined if none. */
  private pendingNode(id: number): Node<V> | null | undefined {
    const d = this.dirty.get(id);
    if (d !== undefined) return d;
    for (let i = this.frozen.length - 1; i >= 0; i--) {
      const f = this.frozen[i].dirty.get(id);
      if (f !== undefined) return f;
    }
    return undefined;
  }

  get(id: number): Node<V> {
    const d = this.pendingNode(id);
    if (d) return d;
    if (d === null) throw new PrismError('EIO', `metadata node ${id} used after it was freed`);
    let n = this.cache.get(id);
    if (!n) {
      n = this.db.get(id);
      if (!n) throw new PrismError('EIO', `metadata node ${id} is missing`);
      if (this.cache.size >= CACHE_MAX) this.evict();
      this.cache.set(id, n);
    }
    return n;
  }

  /** A node the caller owns and is about to change: never one a commit in progress is writing. */
  edit(id: number): Node<V> {
    const d = this.dirty.get(id);
    if (d) return d;
    const n = this.get(id);
    if (!this.frozen.some((f) => f.dirty.get(id) === n)) return n;
    const copy = (n.l === 1 ? { l: 1, k: n.k.slice(), v: n.v.slice() } : { l: 0, k: n.k.slice(), c: n.c.slice() }) as Node<V>;
    this.dirty.set(id, copy);
    return copy;
  }

  put(id: number, node: Node<V>): void {
    this.dirty.set(id, node);
  }

  alloc(node: Node<V>): number {
    const id = this.nextId++;
    this.dirty.set(id, node);
    return id;
  }

  free(id: number): void {
    this.dirty.set(id, null);
    this.cache.delete(id);
    this.rcDirty.set(id, 1);
  }

  refs(id: number): number {
    let d = this.rcDirty.get(id);
    for (let i = this.frozen.length - 1; d === undefined && i >= 0; i--) d = this.frozen[i].rcDirty.get(id);
    d ??= this.rcCache.get(id);
    if (d !== undefined) return d;
    // A pending node with no pending count was allocated since the last commit, or changed in place,
    // which the tree only does to nodes it owns alone: either way its count is 1.
    if (this.pendingNode(id) !== undefined) return 1;
    const n = this.refsDb.get(id) ?? 1;
    if (this.rcCache.size >= CACHE_MAX) this.rcCache.clear();
    this.rcCache.set(id, n);
    return n;
  }

  setRefs(id: number, n: number): void {
    this.rcDirty.set(id, n);
  }

  get pending(): number {
    return this.dirty.size + this.rcDirty.size;
  }

  /** Freeze the changes so far for a commit; new changes collect apart from them. */
  cut(): FrozenNodes<V> {
    const f: FrozenNodes<V> = { dirty: this.dirty, rcDirty: this.rcDirty, gen: ++this.gens };
    this.frozen.push(f);
    this.dirty = new Map();
    this.rcDirty = new Map();
    return f;
  }

  /** Write frozen changes; must run inside the store's write transaction. */
  write(f: FrozenNodes<V>): void {
    for (const [id, n] of f.dirty) {
      if (n) this.db.put(id, n);
      else this.db.remove(id);
    }
    for (const [id, n] of f.rcDirty) {
      if (n === 1) this.refsDb.remove(id);
      else this.refsDb.put(id, n);
    }
  }

  /**
   * After f is durable: forget it and every older cut still frozen, keeping their nodes and counts
   * cached (unless a newer commit already settled). The older ones are in LMDB already, ordered before
   * f (a commit async in flight, written but not yet flushed, overtaken by a blocking commit()): left
   * frozen, reads would prefer their versions to f's newer ones. They are settled as if they had
   * settled first, so the cache, which may still hold what preceded them, ends as LMDB holds it; their
   * own settled() later finds nothing to do.
   */
  settled(f: FrozenNodes<V>): void {
    const i = this.frozen.indexOf(f);
    if (i < 0) return;
    for (const g of this.frozen.splice(0, i + 1)) this.forget(g);
  }

  private forget(f: FrozenNodes<V>): void {
    const newer = f.gen < this.settledGen;
    this.settledGen = Math.max(this.settledGen, f.gen);
    for (const [id, n] of f.dirty) {
      if (n && !newer) {
        if (this.cache.size >= CACHE_MAX) this.evict();
        this.cache.set(id, n);
      } else {
        this.cache.delete(id);
      }
    }
    for (const [id, n] of f.rcDirty) {
      if (f.dirty.get(id) === null || newer) this.rcCache.delete(id);
      else if (this.rcCache.size < CACHE_MAX) this.rcCache.set(id, n);
    }
  }

  /** The commit of f failed: its changes are pending again (under any newer ones). */
  failed(f: FrozenNodes<V>): void {
    const i = this.frozen.indexOf(f);
    if (i < 0) return;
    this.frozen.splice(i, 1);
    for (const [id, n] of f.dirty) if (!this.dirty.has(id)) this.dirty.set(id, n);
    for (const [id, n] of f.rcDirty) if (!this.rcDirty.has(id)) this.rcDirty.set(id, n);
  }

  private evict(): void {
    let drop = this.cache.size >>> 1;
    for (const id of this.cache.keys()) {
      if (drop-- <= 0) break;
      this.cache.delete(id);
    }
  }
}
