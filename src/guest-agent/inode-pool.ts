// Inode numbers the host has set aside for this agent (RESERVE, docs/protocol.md), each with its
// handle: what a posted create names its new node with. Refilled behind (posted) before it runs out,
// so no create waits for it; numbers of an earlier connection are dropped (the host that reserved
// them may be gone: a restarted host knows none of them). An unused number is a gap, nothing more.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { Proc } from '../protocol/procs.js';
import { decodeReply } from '../protocol/stubs.js';

/** Numbers asked for at a time (the host gives at most 128). */
const BATCH = 128;
/** Asked for again when fewer than this are left: the host may be this many posted calls behind before a create waits. */
const LOW = 96;

export interface Reserved { ino: number; fh: Buffer }

export class InodePool {
  private free: Reserved[] = [];
  private next = 0;
  private asking = false;
  /** The host has no RESERVE (ENOSYS: an older host): creates stay synchronous. */
  private unsupported = false;
  /** The connection the numbers held came on. */
  private connection = -1;

  /** `post` sends behind (a blocking link); `connection` tells which connection to the host is current. */
  constructor(
    private readonly post: (proc: Proc, args: unknown[]) => Promise<unknown[]>,
    private readonly connectionNow: () => number,
    private readonly volumeFh: Buffer,
  ) {
    this.refill();
  }

  /** A reserved number and its handle, if one is at hand (refilling behind when few are left). */
  take(): Reserved | undefined {
    if (this.connection !== this.connectionNow()) this.drop();
    const r = this.next < this.free.length ? this.free[this.next++] : undefined;
    if (this.free.length - this.next < LOW) this.refill();
    return r;
  }

  private drop(): void {
    this.free = [];
    this.next = 0;
    this.connection = this.connectionNow();
  }

  private refill(): void {
    if (this.asking || this.unsupported) return;
    this.asking = true;
    this.post(Proc.RESERVE, [this.volumeFh, BATCH]).then((r) => {
      const conn = this.connectionNow();
      if (conn !== this.connection) this.drop();
      const [first, handles] = decodeReply(Proc.RESERVE, r);
      const left = this.free.slice(this.next);
      this.free = left.concat(handles.map((fh, i) => ({ ino: first + i, fh })));
      this.next = 0;
    }, (e: Error) => {
      if (e instanceof PrismError && e.code === 'ENOSYS') this.unsupported = true;
      else log.warn({ err: e.message }, 'could not reserve inode numbers: creates wait for the host');
    }).finally(() => { this.asking = false; });
  }
}
