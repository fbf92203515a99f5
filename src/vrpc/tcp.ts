// TCP framing: each message is a 4-byte big-endian length and then the bytes. A length over the limit
// or a malformed frame closes the connection (the peer is not trusted to resynchronise).
import net from 'node:net';
import { PrismError } from '../errors.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import { ChannelEvents, type Channel } from './channel.js';

export class TcpChannel extends ChannelEvents implements Channel {
  /** Bytes received and not yet delivered: whole chunks, joined only when a frame is complete. */
  private chunks: Buffer[] = [];
  private have = 0;

  constructor(readonly socket: net.Socket, private maxMessage = MAX_MESSAGE) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.receive(d));
    socket.on('drain', () => this.drained());
    socket.on('error', (e) => this.finish(e));
    socket.on('close', () => this.finish());
  }

  /** The largest frame accepted from now on (the host raises it once a peer has authenticated). */
  setMaxMessage(n: number): void { this.maxMessage = n; }

  private receive(d?: Buffer): void {
    if (d) { this.chunks.push(d); this.have += d.length; }
    while (!this.paused && !this.closed && this.have >= 4) {
      if (this.chunks[0].length < 4) this.join();
      const len = this.chunks[0].readUInt32BE(0);
      if (len > this.maxMessage) {
        this.finish(new PrismError('E2BIG', `frame of ${len} bytes exceeds ${this.maxMessage}`));
        this.socket.destroy();
        return;
      }
      if (this.have < 4 + len) return;
      if (this.chunks[0].length < 4 + len) this.join();
      const first = this.chunks[0];
      const msg = first.subarray(4, 4 + len);
      if (first.length > 4 + len) this.chunks[0] = first.subarray(4 + len);
      else this.chunks.shift();
      this.have -= 4 + len;
      this.msgCb(msg);
    }
  }

  /** One buffer of everything received (once per frame that spans chunks, not once per chunk). */
  private join(): void {
    this.chunks = [Buffer.concat(this.chunks, this.have)];
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause(); // the peer's further bytes wait in the kernel, then in the peer
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.closed) return;
    this.socket.resume();
    // Frames already received are delivered on a later turn, not inside the caller's.
    setImmediate(() => this.receive());
  }

  get queuedBytes(): number { return this.socket.writableLength; }

  send(msg: Uint8Array): boolean {
    if (this.closed) return false;
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(msg.length, 0);
    this.socket.cork();
    this.socket.write(head);
    this.socket.write(msg);
    this.socket.uncork();
    return true;
  }

  sendParts(parts: Uint8Array[]): boolean {
    return this.send(Buffer.concat(parts)); // copied: the socket may keep it after we return
  }


  close(): void {
    this.socket.end();
    this.socket.destroy();
    this.finish();
  }
}

export type SocketAddress = { host: string; port: number } | { path: string };

/** "HOST:PORT", ":PORT" or "PORT" for TCP (host defaults to 127.0.0.1); "unix:/path" for a Unix socket. */
export function parseAddress(s: string): SocketAddress {
  if (s.startsWith('unix:')) return { path: s.slice(5) };
  return parseHostPort(s);
}

/** host:port -> { host, port }; host defaults to 127.0.0.1. */
export function parseHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const host = i > 0 ? s.slice(0, i).replace(/^\[|\]$/g, '') : '127.0.0.1';
  const port = Number(i >= 0 ? s.slice(i + 1) : s);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new PrismError('EINVAL', `not a HOST:PORT: ${JSON.stringify(s)}`);
  return { host, port };
}
