// The client side of VRPC: many calls in flight, matched to responses by id (responses may come in
// any order), each with a timeout; a bounded number in flight so a slow host pushes back on callers.
import net from 'node:net';
import { PrismError } from '../errors.js';
import { decodeResponse, encodeRequest, responseError } from '../protocol/codec.js';
import type { Proc } from '../protocol/procs.js';
import type { Channel } from './channel.js';
import { TcpChannel, parseAddress } from './tcp.js';
import { handshake, isHelloReply } from './hello.js';

export interface ClientOptions {
  /** How long a call waits for its reply (then EIO). */
  timeoutMs?: number;
  /** How long the handshake may take. */
  handshakeMs?: number;
  maxInFlight?: number;
}

/**
 * Call ids for one client: from a random start, so that a new client on a region where an old one
 * left calls in flight does not take their late replies for its own; unsigned 32-bit, wrapping.
 */
export class CallIds {
  private id = 1 + Math.floor(Math.random() * 0x7fff_0000);
  next(): number {
    const id = this.id;
    this.id = id >= 0xffff_ffff ? 1 : id + 1;
    return id;
  }
}

/** The channel to the host closed or broke (as opposed to an error the host replied with). */
export class HostGone extends PrismError {
  constructor(message: string) { super('EIO', message); }
}

interface Pending {
  resolve(r: unknown): void;
  /** Runs on the result while a transient message is still valid (see Channel.transient). */
  take?: (r: unknown[]) => unknown;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class VrpcClient {
  private readonly ids = new CallIds();
  private pending = new Map<number, Pending>();
  private waiting: Array<() => void> = [];
  private closedWith: Error | null = null;
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;

  constructor(private readonly ch: Channel, opts: ClientOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxInFlight = opts.maxInFlight ?? 256;
    ch.onMessage((m) => this.receive(m));
    ch.expecting = () => this.pending.size > 0;
    ch.onClose((err) => this.fail(new HostGone(err?.message ?? 'connection to the host closed')));
  }

  private receive(m: Uint8Array): void {
    let r;
    try {
      r = decodeResponse(m);
    } catch (e) {
      if (isHelloReply(m)) return; // a previous client's handshake reply left in a shared ring
      this.ch.close();
      this.fail(new HostGone(`the host sent a malformed reply: ${(e as Error).message}`));
      return;
    }
    const p = this.pending.get(r.id);
    if (!p) return; // a late reply to a call that timed out
    this.pending.delete(r.id);
    clearTimeout(p.timer);
    this.waiting.shift()?.();
    if (r.errno !== 0) { p.reject(responseError(r)); return; }
    const result = r.result as unknown[];
    if (p.take) {
      try { p.resolve(p.take(result)); } catch (e) { p.reject(e as Error); }
    } else {
      p.resolve(this.ch.transient ? detach(result) : result);
    }
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(err); }
    this.pending.clear();
    for (const w of this.waiting.splice(0)) w();
  }

  /**
   * Call a procedure. `take`, if given, receives the results synchronously, while their byte strings
   * may still be views of shared memory, and its return value is the call's (no copy is made).
   */
  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  async call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    while (this.pending.size >= this.maxInFlight && !this.closedWith) await new Promise<void>((r) => this.waiting.push(r));
    if (this.closedWith) throw this.closedWith;
    const id = this.ids.next();
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.waiting.shift()?.();
        reject(new PrismError('EIO', `no reply from the host in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer, take });
      if (!this.ch.send(encodeRequest({ id, proc, args }))) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(this.closedWith ?? new HostGone('connection to the host closed'));
      }
    });
  }

  get inFlight(): number { return this.pending.size; }

  /** Whether the channel has closed (every later call fails with HostGone). */
  get closed(): boolean { return this.closedWith !== null; }

  close(): void {
    this.ch.close();
    this.fail(new HostGone('client closed'));
  }
}

/** TCP ("HOST:PORT") or a Unix socket ("unix:/path"). */
export async function connectTcp(address: string, vm: string, token: string, opts: ClientOptions = {}): Promise<VrpcClient> {
  const where = parseAddress(address);
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(where);
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', (e) => reject(new PrismError('EIO', `cannot reach the host at ${address}: ${(e as Error).message}`)));
  });
  const ch = new TcpChannel(socket);
  await handshake(ch, vm, token, opts.handshakeMs);
  return new VrpcClient(ch, opts);
}

/** A deep copy of decoded values whose byte strings may be views of shared memory. */
export function detach(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(detach);
  return v;
}

/** A Buffer over the same bytes (cbor-x then decodes byte strings as Buffers, as over TCP). */
export function asBuffer(m: Uint8Array): Buffer {
  return Buffer.from(m.buffer, m.byteOffset, m.byteLength);
}
