// Tree nodes and their reference counts in LMDB, behind a write-back cache: changes stay in memory
// until the store commits them, all in one transaction.
import type { Database } from 'lmdb';
import { PrismError } from '../errors.js';
import type { Node, NodeStore } from './btree.js';

const CACHE_MAX = 200_000;

export class LmdbNodeStore<V> implements NodeStore<V> {
  private dirty = new Map<number, Node<V> | null>();
  private rcDirty = new Map<number, number>();
  private cache = new Map<number, Node<V>>();
  private rcCache = new Map<number, number>();

  constructor(
    private readonly db: Database<Node<V>, number>,
    private readonly refsDb: Database<number, number>,
    public nextId: number,
  ) {}

  get(id: number): Node<V> {
    const d = this.dirty.get(id);
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
    const d = this.rcDirty.get(id) ?? this.rcCache.get(id);
    if (d !== undefined) return d;
    // A pending node with no pending count was allocated since the last commit, or changed in place,
    // which the tree only does to nodes it owns alone: either way its count is 1.
    if (this.dirty.has(id)) return 1;
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

  /** Write pending changes; must run inside the store's write transaction. */
  commit(): void {
    for (const [id, n] of this.dirty) {
      if (n) this.db.put(id, n);
      else this.db.remove(id);
    }
    for (const [id, n] of this.rcDirty) {
      if (n === 1) this.refsDb.remove(id);
      else this.refsDb.put(id, n);
    }
  }

  /** After a successful commit: keep written nodes cached, forget the pending set. */
  committed(): void {
    for (const [id, n] of this.dirty) {
      if (n) {
        if (this.cache.size >= CACHE_MAX) this.evict();
        this.cache.set(id, n);
      }
    }
    for (const [id, n] of this.rcDirty) {
      if (this.dirty.get(id) === null) this.rcCache.delete(id);
      else if (this.rcCache.size < CACHE_MAX) this.rcCache.set(id, n);
    }
    this.dirty.clear();
    this.rcDirty.clear();
  }

  private evict(): void {
    let drop = this.cache.size >>> 1;
    for (const id of this.cache.keys()) {
      if (drop-- <= 0) break;
      this.cache.delete(id);
    }
  }
}
