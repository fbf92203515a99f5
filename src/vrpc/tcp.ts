// TCP framing: each message is a 4-byte big-endian length and then the bytes. A length over the limit
// or a malformed frame closes the connection (the peer is not trusted to resynchronise).
import net from 'node:net';
import { PrismError } from '../errors.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import { ChannelEvents, type Channel } from './channel.js';

export class TcpChannel extends ChannelEvents implements Channel {
  private buf: Buffer = Buffer.alloc(0);

  constructor(readonly socket: net.Socket, private readonly maxMessage = MAX_MESSAGE) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.receive(d));
    socket.on('error', (e) => this.finish(e));
    socket.on('close', () => this.finish());
  }

  private receive(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > this.maxMessage) {
        this.finish(new PrismError('E2BIG', `frame of ${len} bytes exceeds ${this.maxMessage}`));
        this.socket.destroy();
        return;
      }
      if (this.buf.length < 4 + len) return;
      const msg = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.msgCb(msg);
      if (this.closed) return;
    }
  }

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
