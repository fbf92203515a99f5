// The metadata table a host shares read-only with a guest (issue 6): fixed-size slots holding
// attributes by inode and directory entries by (directory, name), each guarded by a sequence counter
// (a seqlock: odd while the host writes it), so a reader in another process never takes a torn entry.
// Only the host writes; a full probe window evicts (the host decides what stays). Pure logic over a
// buffer: mapping it is the caller's business. Layout, version 1 (docs/metadata-share.md):
//
//   header (4096 bytes): u32 magic "PMET", u32 version, u32 slots, u32 slotSize, u32 generation
//   slot i at 4096 + i * 512:
//     0  u32 seq          4 u8 kind (0 empty, 1 attr, 2 entry, 3 no such entry), u8 nameLen, u8 fhLen
//     8  u32 volume id   12 u32 hash          16 f64 inode (kind 1) or directory inode (kinds 2, 3)
//     24 f64 x 16 attr (the wire attr of docs/protocol.md)   152 handle (64)   216 name (255)
import type { WireAttr } from '../protocol/wire.js';

export const META_MAGIC = 0x54454d50; // bytes "PMET"
export const META_VERSION = 1;
export const HEADER_SIZE = 4096;
export const SLOT_SIZE = 512;
/** Slots looked at for one key (open addressing, linear probing). */
export const PROBE = 8;
/** Longest name an entry can hold (longer ones are never shared: the reader asks the host). */
export const MAX_SHARED_NAME = 255;

const KIND_EMPTY = 0, KIND_ATTR = 1, KIND_ENTRY = 2, KIND_NONE = 3;
const ATTR_FIELDS = 16;
const O_KIND = 4, O_NAMELEN = 5, O_FHLEN = 6, O_VOLUME = 8, O_HASH = 12, O_INO = 16, O_ATTR = 24, O_FH = 152, O_NAME = 216;

export interface SharedEntry { fh: Uint8Array; attr: WireAttr }

export class MetaTableError extends Error {}

export class MetaTable {
  readonly slots: number;
  private readonly i32: Int32Array;
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private evict = 0;

  private constructor(buffer: ArrayBufferLike) {
    this.i32 = new Int32Array(buffer);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
    this.slots = this.view.getUint32(8, true);
  }

  /** Slots that fit in `size` bytes. */
  static slotsFor(size: number): number {
    return Math.floor((size - HEADER_SIZE) / SLOT_SIZE);
  }

  /** Initialize a table over a zeroed or reused buffer (host side); bumps the generation. */
  static create(buffer: ArrayBufferLike): MetaTable {
    const v = new DataView(buffer);
    const slots = MetaTable.slotsFor(buffer.byteLength);
    if (slots < PROBE) throw new MetaTableError(`a metadata table needs at least ${HEADER_SIZE + PROBE * SLOT_SIZE} bytes`);
    const gen = v.getUint32(0, true) === META_MAGIC ? (v.getUint32(16, true) + 1) >>> 0 : 1;
    new Uint8Array(buffer, HEADER_SIZE).fill(0);
    v.setUint32(4, META_VERSION, true);
    v.setUint32(8, slots, true);
    v.setUint32(12, SLOT_SIZE, true);
    v.setUint32(16, gen, true);
    v.setUint32(0, META_MAGIC, true);
    return new MetaTable(buffer);
  }

  /** Use a table the host made (guest side, typically over a read-only mapping). */
  static attach(buffer: ArrayBufferLike): MetaTable {
    if (buffer.byteLength < HEADER_SIZE) throw new MetaTableError('too small for a metadata table');
    const v = new DataView(buffer);
    if (v.getUint32(0, true) !== META_MAGIC) throw new MetaTableError('not a metadata table (bad magic)');
    if (v.getUint32(4, true) !== META_VERSION) throw new MetaTableError(`metadata table version ${v.getUint32(4, true)}, expected ${META_VERSION}`);
    const slots = v.getUint32(8, true);
    if (v.getUint32(12, true) !== SLOT_SIZE || slots < PROBE || HEADER_SIZE + slots * SLOT_SIZE > buffer.byteLength) {
      throw new MetaTableError('metadata table geometry does not fit its buffer');
    }
    return new MetaTable(buffer);
  }

  get generation(): number { return this.view.getUint32(16, true); }

  // ---- writer (host) -------------------------------------------------------------------------

  putAttr(volume: number, ino: number, attr: WireAttr): void {
    this.put(KIND_ATTR, volume, ino, EMPTY, attr, EMPTY);
  }

  /** A directory entry and its child's handle and attributes; null: the name is known not to exist. */
  putEntry(volume: number, dir: number, name: Uint8Array, value: SharedEntry | null): void {
    if (name.length === 0 || name.length > MAX_SHARED_NAME) return;
    if (value) this.put(KIND_ENTRY, volume, dir, name, value.attr, value.fh);
    else this.put(KIND_NONE, volume, dir, name, null, EMPTY);
  }

  removeAttr(volume: number, ino: number): void {
    const at = this.find(KIND_ATTR, volume, ino, EMPTY, hashOf(volume, ino, EMPTY));
    if (at >= 0) this.write(at, () => { this.bytes[at + O_KIND] = KIND_EMPTY; });
  }

  /** Forget what is known of a name (present or absent). */
  removeEntry(volume: number, dir: number, name: Uint8Array): void {
    const h = hashOf(volume, dir, name);
    for (const kind of [KIND_ENTRY, KIND_NONE]) {
      const at = this.find(kind, volume, dir, name, h);
      if (at >= 0) this.write(at, () => { this.bytes[at + O_KIND] = KIND_EMPTY; });
    }
  }

  private put(kind: number, volume: number, ino: number, name: Uint8Array, attr: WireAttr | null, fh: Uint8Array): void {
    if (fh.length > 64) throw new MetaTableError('handle longer than 64 bytes');
    const h = hashOf(volume, ino, name);
    // The same key under either entry kind is replaced, so a name is never both present and absent.
    let at = this.find(kind, volume, ino, name, h);
    if (at < 0 && (kind === KIND_ENTRY || kind === KIND_NONE)) at = this.find(kind === KIND_ENTRY ? KIND_NONE : KIND_ENTRY, volume, ino, name, h);
    if (at < 0) at = this.freeSlot(h);
    this.write(at, () => {
      const v = this.view;
      this.bytes[at + O_KIND] = kind;
      this.bytes[at + O_NAMELEN] = name.length;
      this.bytes[at + O_FHLEN] = fh.length;
      v.setUint32(at + O_VOLUME, volume, true);
      v.setUint32(at + O_HASH, h, true);
      v.setFloat64(at + O_INO, ino, true);
      for (let i = 0; i < ATTR_FIELDS; i++) v.setFloat64(at + O_ATTR + i * 8, attr ? attr[i] ?? 0 : 0, true);
      this.bytes.set(fh, at + O_FH);
      this.bytes.set(name, at + O_NAME);
    });
  }

  /** Seqlock write: odd while changing, even when done. */
  private write(at: number, change: () => void): void {
    const seq = at >>> 2;
    Atomics.add(this.i32, seq, 1);
    change();
    Atomics.add(this.i32, seq, 1);
  }

  private freeSlot(h: number): number {
    for (let p = 0; p < PROBE; p++) {
      const at = this.slotAt(h, p);
      if (this.bytes[at + O_KIND] === KIND_EMPTY) return at;
    }
    return this.slotAt(h, this.evict++ % PROBE); // all taken: the host evicts one in turn
  }

  /** The slot holding this key (writer's view: no concurrent writer, so no seqlock needed). */
  private find(kind: number, volume: number, ino: number, name: Uint8Array, h: number): number {
    for (let p = 0; p < PROBE; p++) {
      const at = this.slotAt(h, p);
      if (this.matches(at, kind, volume, ino, name, h)) return at;
    }
    return -1;
  }

  // ---- reader (guest) ------------------------------------------------------------------------

  /** The attributes of an inode, or undefined when the table does not hold them. */
  getAttr(volume: number, ino: number): WireAttr | undefined {
    const r = this.read(KIND_ATTR, volume, ino, EMPTY);
    return r ? r.attr : undefined;
  }

  /** The entry for a name: its handle and attributes, null if known not to exist, undefined if not held. */
  getEntry(volume: number, dir: number, name: Uint8Array): SharedEntry | null | undefined {
    if (name.length === 0 || name.length > MAX_SHARED_NAME) return undefined;
    const r = this.read(KIND_ENTRY, volume, dir, name) ?? this.read(KIND_NONE, volume, dir, name);
    if (!r) return undefined;
    return r.kind === KIND_NONE ? null : { fh: r.fh, attr: r.attr };
  }

  private read(kind: number, volume: number, ino: number, name: Uint8Array): { kind: number; attr: WireAttr; fh: Uint8Array } | undefined {
    const h = hashOf(volume, ino, name);
    for (let p = 0; p < PROBE; p++) {
      const at = this.slotAt(h, p);
      const seq = at >>> 2;
      // A slot being written is retried a few times, then counted a miss (the RPC answers instead).
      for (let tries = 0; tries < 64; tries++) {
        const s1 = Atomics.load(this.i32, seq);
        if (s1 & 1) continue;
        if (!this.matches(at, kind, volume, ino, name, h)) {
          if (Atomics.load(this.i32, seq) === s1) break; // a stable non-match: next slot
          continue;
        }
        const attr: WireAttr = new Array<number>(ATTR_FIELDS);
        for (let i = 0; i < ATTR_FIELDS; i++) attr[i] = this.view.getFloat64(at + O_ATTR + i * 8, true);
        const fhLen = Math.min(64, this.bytes[at + O_FHLEN]!);
        const fh = this.bytes.slice(at + O_FH, at + O_FH + fhLen);
        if (Atomics.load(this.i32, seq) !== s1) continue; // changed under us: read again
        return { kind, attr, fh };
      }
    }
    return undefined;
  }

  private slotAt(h: number, probe: number): number {
    return HEADER_SIZE + ((h + probe) % this.slots) * SLOT_SIZE;
  }

  private matches(at: number, kind: number, volume: number, ino: number, name: Uint8Array, h: number): boolean {
    const b = this.bytes, v = this.view;
    if (b[at + O_KIND] !== kind || v.getUint32(at + O_HASH, true) !== h || v.getUint32(at + O_VOLUME, true) !== volume) return false;
    if (v.getFloat64(at + O_INO, true) !== ino || b[at + O_NAMELEN] !== name.length) return false;
    for (let i = 0; i < name.length; i++) if (b[at + O_NAME + i] !== name[i]) return false;
    return true;
  }
}

const EMPTY = new Uint8Array(0);

/** FNV-1a over (volume, inode, name). */
export function hashOf(volume: number, ino: number, name: Uint8Array): number {
  let h = 0x811c9dc5;
  const mix = (byte: number) => { h = Math.imul(h ^ byte, 0x01000193); };
  for (let i = 0; i < 4; i++) mix((volume >>> (i * 8)) & 0xff);
  let x = ino;
  for (let i = 0; i < 7; i++) { mix(x % 256); x = Math.floor(x / 256); }
  for (let i = 0; i < name.length; i++) mix(name[i]!);
  return h >>> 0;
}
