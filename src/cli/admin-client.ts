// The CLI's way to a running host: when `prism host serve` owns the store, volume commands are sent to
// its admin socket (src/host/admin.ts) instead of opening the store.
import net from 'node:net';
import path from 'node:path';
import { PrismError } from '../errors.js';
import { ADMIN_SOCKET } from '../host/admin.js';
import { controlErrorOf, decodeControl, encode } from '../protocol/codec.js';
import { TcpChannel } from '../vrpc/tcp.js';

/** Run `op` on the host serving this store; null when no host is running there. */
export async function viaHost(storeDir: string, op: string, args: unknown[]): Promise<{ result: unknown } | null> {
  const socket = await new Promise<net.Socket | null>((resolve) => {
    const s = net.connect(path.join(storeDir, ADMIN_SOCKET));
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(null)); // no socket, or a stale one: the store is not served
  });
  if (!socket) return null;
  const ch = new TcpChannel(socket);
  return new Promise((resolve, reject) => {
    ch.onMessage((m) => {
      try {
        const v = decodeControl(m) as unknown[];
        if (v[0] === 'ok') resolve({ result: v[1] });
        else reject(controlErrorOf(v) ?? new PrismError('EIO', 'malformed reply from the host'));
      } catch (e) {
        reject(e);
      }
      ch.close();
      socket.destroy();
    });
    ch.onClose((err) => reject(err ?? new PrismError('EIO', 'the host closed the admin connection')));
    ch.send(encode(['admin', op, args]));
  });
}
