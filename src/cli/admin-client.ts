// The CLI's way to a running host: when `prism host serve` owns the store, volume commands are sent to
// its admin socket (src/host/admin.ts) instead of opening the store.
import net from 'node:net';
import path from 'node:path';
import { PrismError } from '../errors.js';
import { ADMIN_SOCKET } from '../host/admin.js';
import { controlErrorOf, decodeControl, encode } from '../protocol/codec.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import { TcpChannel } from '../vrpc/tcp.js';

type Progress = (done: number, total: number) => void;

/** A connection to the host's admin socket: one request at a time, each answered before the next. */
export class AdminConnection {
  private waiting: { resolve(v: unknown): void; reject(e: Error): void; progress?: Progress } | undefined;
  private closed: Error | undefined;

  private constructor(private readonly ch: TcpChannel, private readonly socket: net.Socket) {
    ch.onMessage((m) => {
      const w = this.waiting;
      if (!w) return;
      try {
        const v = decodeControl(m, MAX_MESSAGE) as unknown[];
        if (v[0] === 'progress') { w.progress?.(Number(v[1]), Number(v[2])); return; }
        this.waiting = undefined;
        if (v[0] === 'ok') w.resolve(v[1]);
        else w.reject(controlErrorOf(v) ?? new PrismError('EIO', 'malformed reply from the host'));
      } catch (e) {
        this.waiting = undefined;
        w.reject(e as Error);
      }
    });
    ch.onClose((err) => {
      this.closed = err ?? new PrismError('EIO', 'the host closed the admin connection');
      this.waiting?.reject(this.closed);
      this.waiting = undefined;
    });
  }

  /** The host serving this store, or null when none is running there (no socket, or a stale one). */
  static async open(storeDir: string): Promise<AdminConnection | null> {
    const socket = await new Promise<net.Socket | null>((resolve) => {
      const s = net.connect(path.join(storeDir, ADMIN_SOCKET));
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(null));
    });
    return socket ? new AdminConnection(new TcpChannel(socket, MAX_MESSAGE), socket) : null;
  }

  /** One request; a long one (import, gc) tells its progress on the way. */
  call(op: string, args: unknown[], progress?: Progress): Promise<unknown> {
    if (this.closed) return Promise.reject(this.closed);
    if (this.waiting) return Promise.reject(new PrismError('EBUSY', 'one admin request at a time'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject, progress };
      this.ch.send(encode(['admin', op, args]));
    });
  }

  close(): void {
    this.ch.close();
    this.socket.destroy();
  }
}

/** Run `op` on the host serving this store; null when no host is running there. */
export async function viaHost(storeDir: string, op: string, args: unknown[], progress?: Progress): Promise<{ result: unknown } | null> {
  const c = await AdminConnection.open(storeDir);
  if (!c) return null;
  try {
    return { result: await c.call(op, args, progress) };
  } finally {
    c.close();
  }
}
