// Open files of a volume, as pins per inode and per owner (a VM's name): an inode unlinked while
// pinned lives until its last pin goes, and an owner can only release the pins it took.
import { PrismError } from '../errors.js';

/**
 * Most pins (OPENs not yet closed) one owner may hold on one volume: each costs the host memory, and a
 * pinned file unlinked stays allocated. Past it, open() fails with ENOSPC (docs/store-limits.md).
 */
export const MAX_PINS_PER_OWNER = 65536;

/** The owner of pins taken by the store's own tools (CLI, import): not a VM. */
export const LOCAL_OWNER = '';

export class Pins {
  /** Pins per inode and per owner. */
  private readonly byInode = new Map<number, Map<string, number>>();
  /** Pins held per owner, over all inodes (bounded by MAX_PINS_PER_OWNER). */
  private readonly held = new Map<string, number>();

  /** Whether anyone holds the inode open. */
  has(ino: number): boolean {
    return this.byInode.has(ino);
  }

  /** One more pin of owner's on ino; ENOSPC past MAX_PINS_PER_OWNER (`volume` names it in the message). */
  take(ino: number, owner: string, volume: string): void {
    const held = this.held.get(owner) ?? 0;
    if (held >= MAX_PINS_PER_OWNER) throw new PrismError('ENOSPC', `${owner || 'this process'} holds ${held} open files on volume ${volume} (the limit)`);
    let byOwner = this.byInode.get(ino);
    if (!byOwner) { byOwner = new Map(); this.byInode.set(ino, byOwner); }
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + 1);
    this.held.set(owner, held + 1);
  }

  /** Release one of owner's pins on ino; true if it was the inode's last. EBADF if owner holds none. */
  release(ino: number, owner: string): boolean {
    const byOwner = this.byInode.get(ino);
    const n = byOwner?.get(owner) ?? 0;
    if (!byOwner || n === 0) throw new PrismError('EBADF', `inode ${ino} is not open by ${owner || 'this process'}`);
    if (n > 1) byOwner.set(owner, n - 1);
    else byOwner.delete(owner);
    this.dropHeld(owner, 1);
    if (byOwner.size > 0) return false;
    this.byInode.delete(ino);
    return true;
  }

  /** Pins an owner holds. */
  of(owner: string): number {
    return this.held.get(owner) ?? 0;
  }

  /** The inode is gone: every owner's pins on it go too. */
  dropAll(ino: number): void {
    const byOwner = this.byInode.get(ino);
    if (!byOwner) return;
    for (const [owner, n] of byOwner) this.dropHeld(owner, n);
    this.byInode.delete(ino);
  }

  private dropHeld(owner: string, n: number): void {
    const left = (this.held.get(owner) ?? 0) - n;
    if (left > 0) this.held.set(owner, left);
    else this.held.delete(owner);
  }
}
