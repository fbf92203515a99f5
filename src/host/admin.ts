// The host's admin socket (<store>/host.sock, 0600): while the host owns the store, the CLI asks it to
// do what it would otherwise do on the store itself. One request per message:
// ['admin', op, args] -> ['ok', result] | ['error', code, message]. Each operation is committed
// before its reply.
import { PrismError } from '../errors.js';
import { decodeControl, encode } from '../protocol/codec.js';
import type { Store } from '../store/store.js';
import type { Channel } from '../vrpc/channel.js';

export const ADMIN_SOCKET = 'host.sock';

/** The store operations the admin socket offers; results are plain data. */
const OPS: Record<string, (s: Store, a: unknown[]) => unknown> = {
  create: (s, [name, quota]) => { s.createVolume(str(name), { quota: quota === null || quota === undefined ? undefined : num(quota) }); return null; },
  clone: (s, [src, name]) => { s.clone(str(src), str(name)); return null; },
  rm: (s, [name]) => { s.removeVolume(str(name)); return null; },
  ls: (s) => s.volumeNames().map((n) => s.info(n)),
};

function str(x: unknown): string {
  if (typeof x !== 'string') throw new PrismError('EINVAL', 'expected a string argument');
  return x;
}
function num(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new PrismError('EINVAL', 'expected a non-negative integer');
  return x;
}

export function serveAdmin(ch: Channel, store: Store): void {
  ch.onMessage((m) => {
    let reply: unknown[];
    try {
      const v = decodeControl(m);
      if (!Array.isArray(v) || v[0] !== 'admin' || typeof v[1] !== 'string' || !Array.isArray(v[2])) throw new PrismError('EINVAL', 'malformed admin request');
      const op = OPS[v[1]];
      if (!op) throw new PrismError('ENOSYS', `unknown admin operation ${JSON.stringify(v[1])}`);
      const result = op(store, v[2] as unknown[]);
      store.commit();
      reply = ['ok', result];
    } catch (e) {
      reply = e instanceof PrismError ? ['error', e.code, e.message.replace(/^[A-Z0-9]+: /, '')] : ['error', 'EIO', (e as Error).message];
    }
    ch.send(encode(reply));
  });
}
