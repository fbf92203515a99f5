// A bounded map (volume id, inode) -> MAC bytes, for HandleKey: one slab of fixed-size slots,
// replaced in FIFO order once full, so its memory is bounded (about 2 MiB per VM at the default size).

/** Slots: a VM's working set of inodes (a build tree, a checkout) fits; more only costs an HMAC. */
export const MAC_CACHE_SLOTS = 32768;

export class MacCache {
  /** Slot i's MAC is slab[i * size, (i + 1) * size). */
  readonly slab: Uint8Array;
  private readonly byVolume = new Map<number, Map<number, number>>();
  private readonly slotVolume: Uint32Array;
  private readonly slotIno: Float64Array;
  private next = 0;
  private used = 0;

  constructor(private readonly size: number, private readonly slots = MAC_CACHE_SLOTS) {
    this.slab = new Uint8Array(size * slots);
    this.slotVolume = new Uint32Array(slots);
    this.slotIno = new Float64Array(slots);
  }

  /** The offset of the MAC in slab, or -1. */
  get(volume: number, ino: number): number {
    const slot = this.byVolume.get(volume)?.get(ino);
    return slot === undefined ? -1 : slot * this.size;
  }

  /** Store a MAC (its first `size` bytes); returns its offset in slab. */
  put(volume: number, ino: number, mac: Uint8Array): number {
    const slot = this.next;
    this.next = (slot + 1) % this.slots;
    if (this.used < this.slots) this.used++;
    else this.byVolume.get(this.slotVolume[slot])?.delete(this.slotIno[slot]);
    let m = this.byVolume.get(volume);
    if (!m) this.byVolume.set(volume, (m = new Map()));
    m.set(ino, slot);
    this.slotVolume[slot] = volume;
    this.slotIno[slot] = ino;
    this.slab.set(mac.subarray(0, this.size), slot * this.size);
    return slot * this.size;
  }
}
