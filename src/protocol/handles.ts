// File handles: opaque to the guest, at most 64 bytes, stable across host restarts, and unforgeable.
//   version (1) | volume id (4, BE) | inode number (8, BE) | HMAC-SHA256(vm key, first 13 bytes)[0..16)
// The vm key is derived from the host's secret and the VM's name, so a handle minted for one VM does
// not verify for another, and no guest can make a handle for an inode it was never given.
import crypto from 'node:crypto';
import { PrismError } from '../errors.js';

export const HANDLE_VERSION = 1;
export const HANDLE_SIZE = 29;
const BODY = 13;

export interface HandleTarget { volumeId: number; ino: number }

export class HandleKey {
  private readonly key: Buffer;

  constructor(hostSecret: Buffer, vmName: string) {
    if (hostSecret.length < 32) throw new PrismError('EINVAL', 'host secret must be at least 32 bytes');
    this.key = crypto.createHmac('sha256', hostSecret).update(`prism-vm:${vmName}`).digest();
  }

  private mac(body: Buffer): Buffer {
    return crypto.createHmac('sha256', this.key).update(body).digest().subarray(0, HANDLE_SIZE - BODY);
  }

  make(t: HandleTarget): Buffer {
    const h = Buffer.alloc(HANDLE_SIZE);
    h[0] = HANDLE_VERSION;
    h.writeUInt32BE(t.volumeId, 1);
    h.writeBigUInt64BE(BigInt(t.ino), 5);
    this.mac(h.subarray(0, BODY)).copy(h, BODY);
    return h;
  }

  /** The volume and inode a handle names; ESTALE for anything this VM was not given. */
  open(h: Uint8Array): HandleTarget {
    const b = Buffer.from(h.buffer, h.byteOffset, h.byteLength);
    if (b.length !== HANDLE_SIZE || b[0] !== HANDLE_VERSION) throw new PrismError('ESTALE', 'not a handle of this host');
    if (!crypto.timingSafeEqual(this.mac(b.subarray(0, BODY)), b.subarray(BODY))) throw new PrismError('ESTALE', 'handle does not verify');
    const ino = b.readBigUInt64BE(5);
    if (ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new PrismError('ESTALE', 'handle does not verify');
    return { volumeId: b.readUInt32BE(1), ino: Number(ino) };
  }
}
