// File handles: opaque to the guest, at most 64 bytes, stable across host restarts, and unforgeable.
//   version (1) | volume id (4, BE) | inode number (8, BE) | HMAC-SHA256(vm key, first 13 bytes)[0..16)
// The vm key is derived from the host's secret and the VM's name, so a handle minted for one VM does
// not verify for another, and no guest can make a handle for an inode it was never given.
import crypto from 'node:crypto';
import { PrismError } from '../errors.js';
import { MacCache } from './mac-cache.js';

export const HANDLE_VERSION = 1;
export const HANDLE_SIZE = 29;
const BODY = 13;
const MAC_SIZE = HANDLE_SIZE - BODY;
/** The high 32 bits of Number.MAX_SAFE_INTEGER: inode numbers are JS numbers. */
const MAX_SAFE_HI = 0x1fffff;

export interface HandleTarget { volumeId: number; ino: number }

export class HandleKey {
  private readonly key: Buffer;
  /**
   * The MACs of handles lately minted or verified with this key: an HMAC costs ~2-3 µs (a fifth of
   * the host's CPU per request), and a VM names the same few inodes over and over. A MAC is a
   * function of the body, so a hit is exactly what recomputing would give: nothing verifies that
   * did not before. Per key, so per VM: what it holds is that VM's own handles.
   */
  private readonly macs = new MacCache(MAC_SIZE);
  private readonly body = Buffer.alloc(BODY);

  constructor(hostSecret: Buffer, vmName: string) {
    if (hostSecret.length < 32) throw new PrismError('EINVAL', 'host secret must be at least 32 bytes');
    this.key = crypto.createHmac('sha256', hostSecret).update(`prism-vm:${vmName}`).digest();
  }

  /** The HMAC of (volumeId, ino): the whole 32-byte digest, of which a handle carries MAC_SIZE. */
  private compute(volumeId: number, ino: number): Buffer {
    const b = this.body;
    writeBody(b, volumeId, ino);
    return crypto.createHmac('sha256', this.key).update(b).digest();
  }

  make(t: HandleTarget): Buffer {
    const h = Buffer.allocUnsafe(HANDLE_SIZE);
    writeBody(h, t.volumeId, t.ino);
    let at = this.macs.get(t.volumeId, t.ino);
    if (at < 0) at = this.macs.put(t.volumeId, t.ino, this.compute(t.volumeId, t.ino));
    h.set(this.macs.slab.subarray(at, at + MAC_SIZE), BODY);
    return h;
  }

  /** The volume and inode a handle names; ESTALE for anything this VM was not given. */
  open(h: Uint8Array): HandleTarget {
    if (h.byteLength !== HANDLE_SIZE || h[0] !== HANDLE_VERSION) throw new PrismError('ESTALE', 'not a handle of this host');
    const b = Buffer.from(h.buffer, h.byteOffset, h.byteLength);
    const hi = b.readUInt32BE(5);
    if (hi > MAX_SAFE_HI) throw new PrismError('ESTALE', 'handle does not verify');
    const t = { volumeId: b.readUInt32BE(1), ino: hi * 2 ** 32 + b.readUInt32BE(9) };
    const at = this.macs.get(t.volumeId, t.ino);
    const mac = at >= 0 ? this.macs.slab : this.compute(t.volumeId, t.ino);
    const from = at >= 0 ? at : 0;
    // Constant time over the MAC, as timingSafeEqual (without its native call).
    let diff = 0;
    for (let i = 0; i < MAC_SIZE; i++) diff |= mac[from + i] ^ h[BODY + i];
    if (diff !== 0) throw new PrismError('ESTALE', 'handle does not verify');
    // Only handles that verify are remembered: forged ones cannot push the VM's own out.
    if (at < 0) this.macs.put(t.volumeId, t.ino, mac);
    return t;
  }
}

/** version | volume id (BE) | inode (8 bytes BE, as two words: no BigInt on the hot path). */
function writeBody(b: Buffer, volumeId: number, ino: number): void {
  if (!Number.isSafeInteger(ino) || ino < 0) throw new PrismError('EINVAL', `inode ${ino} cannot be named by a handle`);
  b[0] = HANDLE_VERSION;
  b.writeUInt32BE(volumeId, 1);
  b.writeUInt32BE(Math.floor(ino / 2 ** 32), 5);
  b.writeUInt32BE(ino >>> 0, 9);
}
