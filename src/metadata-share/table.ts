// The metadata table a host shares read-only with a guest (issue 6): fixed-size slots holding
// attributes by inode and directory entries by (directory, name), each guarded by a sequence counter
// (a seqlock: odd while the host writes it), so a reader in another process never takes a torn entry;
// and a log of changes the guest's kernel cache must forget. Only the host writes; a full probe
// window evicts (the host decides what stays). A fence word says the host has stopped waiting for
// this VM's acknowledgements: its reader answers nothing until the agent has revalidated (issue 11).
// A directory can be marked complete (every name it holds is in the table), so a name not held there
// does not exist: negative lookups are answered without an RPC (version 3).
// Pure logic over a buffer: mapping it is the caller's business. Layout, version 5: docs/metadata-share.md.
import type { WireAttr } from '../protocol/wire.js';

export const META_MAGIC = 0x54454d50; // bytes "PMET"
export const META_VERSION = 5;
export const HEADER_SIZE = 4096;
export const SLOT_SIZE = 512;
export const LOG_RECORD_SIZE = 320;
/** Log records in a table of the default geometry. */
export const LOG_RECORDS = 4096;
/** Slots looked at for one key (open addressing, linear probing). */
export const PROBE = 16;
/** Longest name an entry can hold (longer ones are never shared: the reader asks the host). */
export const MAX_SHARED_NAME = 255;
/**
 * The longest kernel cache time an agent may announce as its lease (the guest's word: a hostile one
 * could claim hours). The host caps what it waits for at this; the agent refuses longer cache times.
 */
export const MAX_LEASE_MS = 60_000;

// Header words (u32 index). The generation is a seqlock over the whole table: odd while the host
// clears it (start, stop), so a reader that sees it move drops what it read.
const H_MAGIC = 0, H_VERSION = 1, H_SLOTS = 2, H_SLOT_SIZE = 3, H_GENERATION = 4, H_LOG_RECORDS = 5, H_LOG_RECORD_SIZE = 6, H_SLOTS_AT = 7;
/** Byte offset of the log head (records ever written): its own cache line, the word guests futex-wait on. */
export const LOG_HEAD_OFFSET = 64;
/**
 * Byte offset of the fence (its own cache line): odd while the host does not wait for this VM's
 * acknowledgements (it missed a deadline), so its kernel may hold what other VMs changed; a reader
 * answers nothing then. The agent acknowledges the odd value once it has revalidated its kernel's
 * cache (docs/metadata-share.md, "Fencing"); the host then makes it even again.
 */
export const FENCE_OFFSET = 128;

const KIND_EMPTY = 0, KIND_ATTR = 1, KIND_ENTRY = 2, KIND_NONE = 3;
/** Keyed like an inode's attributes: the directory's every name is in the table (present ones as entries). */
const KIND_COMPLETE = 4;
/** Since version 4: the volume is written by this VM alone (keyed by volume, inode 0; docs/metadata-share.md). */
const KIND_SOLE = 5;
/** In the sole mark's first value, since version 5: the volume has no quota (bytes nor inodes). */
const SOLE_UNBOUNDED = 1;
const ATTR_FIELDS = 16;
const O_KIND = 4, O_NAMELEN = 5, O_FHLEN = 6, O_VOLUME = 8, O_HASH = 12, O_INO = 16, O_ATTR = 24, O_FH = 152, O_NAME = 216;
/** Attribute slots keep there, where entries keep the handle, whether the inode has extended attributes. */
const O_XATTRS = O_FH;
const XATTRS_UNKNOWN = 0, XATTRS_NONE = 1, XATTRS_SOME = 2;
// Log record: u32 seq (record number + 1 once complete, 0 while written), u8 kind, u8 name length,
// u32 volume at 8, f64 inode at 16, name at 24.
const L_KIND = 4, L_NAMELEN = 5, L_VOLUME = 8, L_INO = 16, L_NAME = 24;

/** A directory entry as shared: the child's VRPC handle and inode number (its attributes are a separate key). */
export interface SharedEntry { fh: Uint8Array; ino: number }

/** What a guest's kernel must forget: an inode's attributes (and with `data`, its cached pages), or a name. */
export type Change =
  | { kind: 'attr' | 'data'; volume: number; ino: number }
  | { kind: 'entry'; volume: number; dir: number; name: Uint8Array };

const CHANGE_KINDS = ['attr', 'data', 'entry'] as const;

export class MetaTableError extends Error {}

export interface Geometry { slots: number; logRecords: number; slotsAt: number }

export class MetaTable {
  readonly slots: number;
  readonly logRecords: number;
  private readonly slotsAt: number;
  private readonly i32: Int32Array;
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private evict = 0;

  private constructor(readonly buffer: ArrayBufferLike) {
    this.i32 = new Int32Array(buffer);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
    this.slots = this.view.getUint32(H_SLOTS * 4, true);
    this.logRecords = this.view.getUint32(H_LOG_RECORDS * 4, true);
    this.slotsAt = this.view.getUint32(H_SLOTS_AT * 4, true);
  }

  /** How a table of `size` bytes is laid out (the log takes at most 1/16 of it). */
  static geometry(size: number, logRecords = LOG_RECORDS): Geometry {
    const records = Math.max(16, Math.min(logRecords, Math.floor(size / 16 / LOG_RECORD_SIZE)));
    const slotsAt = align4096(HEADER_SIZE + records * LOG_RECORD_SIZE);
    return { slots: Math.max(0, Math.floor((size - slotsAt) / SLOT_SIZE)), logRecords: records, slotsAt };
  }

  /**
   * Initialize a table over a zeroed buffer or the host's previous table (host side). A previous
   * table is cleared slot by slot under the seqlocks, since a guest may be reading it right now.
   */
  static create(buffer: ArrayBufferLike, logRecords = LOG_RECORDS): MetaTable {
    const v = new DataView(buffer);
    const g = MetaTable.geometry(buffer.byteLength, logRecords);
    if (g.slots < PROBE) throw new MetaTableError(`a metadata table needs at least ${g.slotsAt + PROBE * SLOT_SIZE} bytes`);
    const ours = v.getUint32(0, true) === META_MAGIC;
    if (ours && v.getUint32(4, true) !== META_VERSION) {
      // Another version's table: its readers miss while the generation is odd; nothing of it is kept.
      MetaTable.retire(buffer);
      new Uint8Array(buffer, HEADER_SIZE).fill(0);
      v.setUint32(FENCE_OFFSET, 0, true);
    }
    const reused = ours && v.getUint32(4, true) === META_VERSION;
    if (reused) {
      const old = new MetaTable(buffer);
      old.beginReset();
      const same = old.slots === g.slots && old.slotsAt === g.slotsAt && old.logRecords === g.logRecords;
      if (same) { old.clearSlots(); old.endReset(); return old; }
      // A new geometry: nothing of the old layout can be trusted, and the generation stays odd until set.
      new Uint8Array(buffer, HEADER_SIZE).fill(0);
    }
    const gen = ours ? v.getUint32(H_GENERATION * 4, true) : 0; // never back to a value a reader saw
    v.setUint32(H_VERSION * 4, META_VERSION, true);
    v.setUint32(H_SLOTS * 4, g.slots, true);
    v.setUint32(H_SLOT_SIZE * 4, SLOT_SIZE, true);
    v.setUint32(H_LOG_RECORDS * 4, g.logRecords, true);
    v.setUint32(H_LOG_RECORD_SIZE * 4, LOG_RECORD_SIZE, true);
    v.setUint32(H_SLOTS_AT * 4, g.slotsAt, true);
    v.setUint32(H_GENERATION * 4, (gen | 1) + 1, true); // even: usable
    v.setUint32(H_MAGIC * 4, META_MAGIC, true);
    return new MetaTable(buffer);
  }

  /**
   * Leave a table of any version dead for its readers (generation odd, the word every version keeps
   * at byte 16), so an agent still mapping it asks the host instead.
   */
  static retire(buffer: ArrayBufferLike): void {
    if (buffer.byteLength < HEADER_SIZE) return;
    const i32 = new Int32Array(buffer, 0, HEADER_SIZE >> 2);
    if (Atomics.load(i32, H_MAGIC) >>> 0 !== META_MAGIC) return;
    if ((Atomics.load(i32, H_GENERATION) & 1) === 0) Atomics.add(i32, H_GENERATION, 1);
  }

  /** Use a table the host made (guest side, typically over a read-only mapping). */
  static attach(buffer: ArrayBufferLike): MetaTable {
    if (buffer.byteLength < HEADER_SIZE) throw new MetaTableError('too small for a metadata table');
    const v = new DataView(buffer);
    const word = (i: number) => v.getUint32(i * 4, true);
    if (word(H_MAGIC) !== META_MAGIC) throw new MetaTableError('not a metadata table (bad magic)');
    if (word(H_VERSION) !== META_VERSION) throw new MetaTableError(`metadata table version ${word(H_VERSION)}, expected ${META_VERSION}`);
    const slots = word(H_SLOTS), records = word(H_LOG_RECORDS), slotsAt = word(H_SLOTS_AT);
    if (word(H_SLOT_SIZE) !== SLOT_SIZE || word(H_LOG_RECORD_SIZE) !== LOG_RECORD_SIZE || slots < PROBE || records < 1
      || slotsAt < HEADER_SIZE + records * LOG_RECORD_SIZE || slotsAt + slots * SLOT_SIZE > buffer.byteLength) {
      throw new MetaTableError('metadata table geometry does not fit its buffer');
    }
    return new MetaTable(buffer);
  }

  get generation(): number { return Atomics.load(this.i32, H_GENERATION) >>> 0; }

  /** Records ever appended to the change log. */
  get logHead(): number { return Atomics.load(this.i32, LOG_HEAD_OFFSET >> 2) >>> 0; }

  /** The fence word: odd while fenced (free-running; each fence has its own odd value). */
  get fence(): number { return Atomics.load(this.i32, FENCE_OFFSET >> 2) >>> 0; }

  /** Fenced: the host no longer waits for this VM's acknowledgements, and its reader answers nothing. */
  get fenced(): boolean { return (this.fence & 1) === 1; }

  // ---- writer (host) -------------------------------------------------------------------------

  /** An inode's attributes (a WireAttr: its fields in wire order), and whether it has extended attributes (undefined: not said). */
  putAttr(volume: number, ino: number, attr: readonly number[], xattrs?: boolean): void {
    this.put(KIND_ATTR, volume, ino, EMPTY, attr, EMPTY, xattrs === undefined ? XATTRS_UNKNOWN : xattrs ? XATTRS_SOME : XATTRS_NONE);
  }

  /** Replace the attributes of an inode only if the table holds them (another VM's change). */
  refreshAttr(volume: number, ino: number, attr: readonly number[] | null, xattrs?: boolean): void {
    if (this.find(KIND_ATTR, volume, ino, EMPTY, hashOf(volume, ino, EMPTY)) < 0) return;
    if (attr) this.putAttr(volume, ino, attr, xattrs);
    else this.removeAttr(volume, ino);
  }

  /** A directory entry and its child's handle; null: the name is known not to exist. */
  putEntry(volume: number, dir: number, name: Uint8Array, value: SharedEntry | null): void {
    if (name.length === 0 || name.length > MAX_SHARED_NAME) return;
    if (value) this.put(KIND_ENTRY, volume, dir, name, [value.ino], value.fh);
    else this.put(KIND_NONE, volume, dir, name, null, EMPTY);
  }

  /** Whether the table holds anything (present or absent) for a name. */
  hasEntry(volume: number, dir: number, name: Uint8Array): boolean {
    const h = hashOf(volume, dir, name);
    return this.find(KIND_ENTRY, volume, dir, name, h) >= 0 || this.find(KIND_NONE, volume, dir, name, h) >= 0;
  }

  /**
   * Mark a directory complete: the caller has put every one of its names. Kept true by the host: a
   * name added later is put here too (publisher), and evicting one of its entries clears the mark first.
   */
  markComplete(volume: number, dir: number): void {
    this.put(KIND_COMPLETE, volume, dir, EMPTY, null, EMPTY);
  }

  /** Whether the writer has marked the directory complete. */
  holdsComplete(volume: number, dir: number): boolean {
    return this.find(KIND_COMPLETE, volume, dir, EMPTY, hashOf(volume, dir, EMPTY)) >= 0;
  }

  /** The directory's names may no longer all be here (one is evicted, or cannot be shared). */
  clearComplete(volume: number, dir: number): void {
    const at = this.find(KIND_COMPLETE, volume, dir, EMPTY, hashOf(volume, dir, EMPTY));
    if (at >= 0) this.empty(at);
  }

  /**
   * Mark the volume as written by this VM alone (no other VM attaches it): its agent may answer some
   * changes itself and post their RPCs (docs/agent.md). Losing the mark (evicted) only costs speed.
   */
  markSole(volume: number, unbounded = false): void {
    this.put(KIND_SOLE, volume, 0, EMPTY, [unbounded ? SOLE_UNBOUNDED : 0], EMPTY);
  }

  /** Someone else (`prism put`) is about to change the volume: the agent must ask the host again. */
  clearSole(volume: number): void {
    const at = this.find(KIND_SOLE, volume, 0, EMPTY, hashOf(volume, 0, EMPTY));
    if (at >= 0) this.empty(at);
  }

  /** The volume's whole tree was replaced (rollback, import): everything known of it goes, but its sole mark. */
  forgetVolume(volume: number): void {
    for (let i = 0; i < this.slots; i++) {
      const at = this.slotsAt + i * SLOT_SIZE;
      const kind = this.bytes[at + O_KIND];
      if (kind !== KIND_EMPTY && kind !== KIND_SOLE && this.view.getUint32(at + O_VOLUME, true) === volume) this.empty(at);
    }
  }

  removeAttr(volume: number, ino: number): void {
    const at = this.find(KIND_ATTR, volume, ino, EMPTY, hashOf(volume, ino, EMPTY));
    if (at >= 0) this.empty(at);
  }

  /** Forget what is known of a name (present or absent). */
  removeEntry(volume: number, dir: number, name: Uint8Array): void {
    const h = hashOf(volume, dir, name);
    for (const kind of [KIND_ENTRY, KIND_NONE]) {
      const at = this.find(kind, volume, dir, name, h);
      if (at < 0) continue;
      if (kind === KIND_ENTRY) this.clearComplete(volume, dir); // before the name goes: never "absent" for a present one
      this.empty(at);
    }
  }

  /** Append changes to the log (the caller wakes the reader once per batch). */
  appendLog(changes: readonly Change[]): void {
    let head = this.logHead;
    for (const c of changes) {
      const at = HEADER_SIZE + (head % this.logRecords) * LOG_RECORD_SIZE;
      Atomics.store(this.i32, at >> 2, 0);
      const name = c.kind === 'entry' ? c.name.subarray(0, MAX_SHARED_NAME) : EMPTY;
      this.bytes[at + L_KIND] = CHANGE_KINDS.indexOf(c.kind) + 1;
      this.bytes[at + L_NAMELEN] = name.length;
      this.view.setUint32(at + L_VOLUME, c.volume, true);
      this.view.setFloat64(at + L_INO, c.kind === 'entry' ? c.dir : c.ino, true);
      this.bytes.set(name, at + L_NAME);
      head = (head + 1) >>> 0;
      Atomics.store(this.i32, at >> 2, head); // record n is complete when its seq reads n + 1
    }
    Atomics.store(this.i32, LOG_HEAD_OFFSET >> 2, head);
  }

  /** Fence (host): stop answering from this table until the agent acknowledges the new odd value. */
  setFence(on: boolean): void {
    if (this.fenced !== on) Atomics.add(this.i32, FENCE_OFFSET >> 2, 1);
  }

  /** Empty the table for a new host (start) or none (stop: left odd, so readers miss until the next start). */
  reset(stopping = false): void {
    this.beginReset();
    this.clearSlots();
    if (!stopping) this.endReset();
  }

  private beginReset(): void {
    if ((this.generation & 1) === 0) Atomics.add(this.i32, H_GENERATION, 1);
  }

  private endReset(): void {
    Atomics.add(this.i32, H_GENERATION, 1);
  }

  private clearSlots(): void {
    for (let i = 0; i < this.slots; i++) {
      const at = this.slotsAt + i * SLOT_SIZE;
      if (this.bytes[at + O_KIND] !== KIND_EMPTY) this.empty(at);
    }
  }

  private empty(at: number): void {
    this.write(at, () => { this.bytes[at + O_KIND] = KIND_EMPTY; });
  }

  private put(kind: number, volume: number, ino: number, name: Uint8Array, values: readonly number[] | null, fh: Uint8Array, xattrs = XATTRS_UNKNOWN): void {
    if (fh.length > 64) throw new MetaTableError('handle longer than 64 bytes');
    const h = hashOf(volume, ino, name);
    // The same key under either entry kind is replaced, so a name is never both present and absent.
    let at = this.find(kind, volume, ino, name, h);
    if (at < 0 && (kind === KIND_ENTRY || kind === KIND_NONE)) at = this.find(kind === KIND_ENTRY ? KIND_NONE : KIND_ENTRY, volume, ino, name, h);
    if (at < 0) {
      at = this.freeSlot(h);
      // Evicting a directory's entry: its directory is not complete any more, and is marked so first,
      // so that no reader takes the evicted name as absent.
      if (this.bytes[at + O_KIND] === KIND_ENTRY) {
        if (kind === KIND_COMPLETE || kind === KIND_SOLE) return; // a mark is not worth a name (it could be one of this directory's)
        this.clearComplete(this.view.getUint32(at + O_VOLUME, true), this.view.getFloat64(at + O_INO, true));
      }
    }
    this.write(at, () => {
      const v = this.view;
      this.bytes[at + O_KIND] = kind;
      this.bytes[at + O_NAMELEN] = name.length;
      this.bytes[at + O_FHLEN] = fh.length;
      v.setUint32(at + O_VOLUME, volume, true);
      v.setUint32(at + O_HASH, h, true);
      v.setFloat64(at + O_INO, ino, true);
      if (values) for (let i = 0; i < values.length; i++) v.setFloat64(at + O_ATTR + i * 8, values[i] ?? 0, true);
      if (kind === KIND_ATTR) this.bytes[at + O_XATTRS] = xattrs;
      else this.bytes.set(fh, at + O_FH);
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
    const gen = this.usable();
    if (gen < 0) return undefined;
    const slot = this.read(KIND_ATTR, volume, ino, EMPTY);
    // A slot holds an attr's fields in wire order (ATTR_FIELDS of them).
    return this.generation === gen ? slot?.values as WireAttr | undefined : undefined;
  }

  /** True when the table holds an inode and says it has no extended attributes (`ls -l` asks for some on every file). */
  noXattrs(volume: number, ino: number): boolean {
    const gen = this.usable();
    if (gen < 0) return false;
    return this.read(KIND_ATTR, volume, ino, EMPTY)?.xattrs === XATTRS_NONE && this.generation === gen;
  }

  /** The entry for a name: its handle and inode, null if known not to exist, undefined if not held. */
  getEntry(volume: number, dir: number, name: Uint8Array): SharedEntry | null | undefined {
    if (name.length === 0 || name.length > MAX_SHARED_NAME) return undefined;
    const gen = this.usable();
    if (gen < 0) return undefined;
    const entry = this.read(KIND_ENTRY, volume, dir, name);
    const r = entry ? { fh: entry.fh, ino: entry.values[0]! } : this.read(KIND_NONE, volume, dir, name) ? null : undefined;
    return this.generation === gen ? r : undefined;
  }

  /**
   * Whether a name the table does not hold is known absent: its directory is complete. Read after
   * getEntry missed (the host clears the mark before it evicts an entry, so this order is safe).
   */
  isComplete(volume: number, dir: number): boolean {
    const gen = this.usable();
    if (gen < 0) return false;
    return this.read(KIND_COMPLETE, volume, dir, EMPTY) !== undefined && this.generation === gen;
  }

  /** Whether the host has marked the volume as written by this VM alone (markSole). */
  isSole(volume: number): boolean {
    return this.soleMark(volume) !== undefined;
  }

  /**
   * Whether the volume is marked as written by this VM alone and bounded by no quota (markSole): a
   * change of this VM's that the table shows possible then cannot fail for want of room.
   */
  isSoleUnbounded(volume: number): boolean {
    return ((this.soleMark(volume) ?? 0) & SOLE_UNBOUNDED) !== 0;
  }

  /** The sole mark's flags (0 before version 5), undefined without a mark. */
  private soleMark(volume: number): number | undefined {
    const gen = this.usable();
    if (gen < 0) return undefined;
    const mark = this.read(KIND_SOLE, volume, 0, EMPTY);
    return mark !== undefined && this.generation === gen ? mark.values[0] ?? 0 : undefined;
  }

  /** The generation when the table may answer; -1 while it is being cleared, dead, or this VM is fenced. */
  private usable(): number {
    const gen = this.generation;
    return (gen & 1) === 1 || this.fenced ? -1 : gen;
  }

  /** Find a key and copy its slot under the seqlock; undefined when absent (or always being rewritten). */
  private read(kind: number, volume: number, ino: number, name: Uint8Array): SlotCopy | undefined {
    const h = hashOf(volume, ino, name);
    const fields = kind === KIND_ATTR ? ATTR_FIELDS : 1;
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
        const values = new Array<number>(fields);
        for (let i = 0; i < fields; i++) values[i] = this.view.getFloat64(at + O_ATTR + i * 8, true);
        const fh = kind === KIND_ENTRY ? this.bytes.slice(at + O_FH, at + O_FH + Math.min(64, this.bytes[at + O_FHLEN]!)) : EMPTY;
        const xattrs = this.bytes[at + O_XATTRS]!;
        if (Atomics.load(this.i32, seq) !== s1) continue; // changed under us: read again
        return { values, fh, xattrs };
      }
    }
    return undefined;
  }

  /** The volume ids that have anything in the table (a scan: for checks and diagnostics). */
  heldVolumes(): Set<number> {
    const ids = new Set<number>();
    for (let i = 0; i < this.slots; i++) {
      const at = this.slotsAt + i * SLOT_SIZE;
      if (this.bytes[at + O_KIND] !== KIND_EMPTY) ids.add(this.view.getUint32(at + O_VOLUME, true));
    }
    return ids;
  }

  /** Change log record `n` (counting from 0), or 'lost' if the host has written over it. */
  readLog(n: number): Change | 'lost' {
    const at = HEADER_SIZE + (n % this.logRecords) * LOG_RECORD_SIZE;
    const want = (n + 1) >>> 0;
    if (Atomics.load(this.i32, at >> 2) >>> 0 !== want) return 'lost';
    const kind = CHANGE_KINDS[this.bytes[at + L_KIND]! - 1];
    const volume = this.view.getUint32(at + L_VOLUME, true);
    const ino = this.view.getFloat64(at + L_INO, true);
    const name = this.bytes.slice(at + L_NAME, at + L_NAME + this.bytes[at + L_NAMELEN]!);
    if (Atomics.load(this.i32, at >> 2) >>> 0 !== want || !kind) return 'lost';
    return kind === 'entry' ? { kind, volume, dir: ino, name } : { kind, volume, ino };
  }

  private slotAt(h: number, probe: number): number {
    return this.slotsAt + ((h + probe) % this.slots) * SLOT_SIZE;
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

/** A slot as read under its seqlock: attributes (or the child's inode), the handle, the xattr byte. */
interface SlotCopy { values: number[]; fh: Uint8Array; xattrs: number }

function align4096(n: number): number {
  return Math.ceil(n / 4096) * 4096;
}

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
