// The host's admin socket (<store>/host.sock, 0600): while the host owns the store, the CLI asks it to
// do what it would otherwise do on the store itself. One request per message:
// ['admin', op, args] -> ['ok', result] | ['error', code, message]. Each operation is committed
// before its reply.
import { PrismError } from '../errors.js';
import { controlError, decodeControl, encode } from '../protocol/codec.js';
import type { MetadataSink } from '../metadata-share/publisher.js';
import { S_IFMT, S_IFREG } from '../posix/mode.js';
import type { Store } from '../store/store.js';
import type { Volume } from '../store/volume.js';
import type { Channel } from '../vrpc/channel.js';

export const ADMIN_SOCKET = 'host.sock';

/** The store operations the admin socket offers; results are plain data. */
const OPS: Record<string, (s: Store, a: unknown[], meta: MetadataSink) => unknown> = {
  create: (s, [name, quota, inodes]) => {
    const opt = (x: unknown) => (x === null || x === undefined ? undefined : num(x));
    s.createVolume(str(name), { quota: opt(quota), inodeQuota: opt(inodes) });
    return null;
  },
  clone: (s, [src, name]) => { s.clone(str(src), str(name)); return null; },
  rm: (s, [name]) => { s.removeVolume(str(name)); return null; },
  ls: (s) => s.volumeNames().map((n) => s.info(n)),
  // `prism put` in pieces: [volume, path, offset, bytes, first (create or truncate), uid, gid].
  put: (s, [vol, path, offset, data, first, uid, gid], meta) => {
    if (!(data instanceof Uint8Array)) throw new PrismError('EINVAL', 'expected bytes');
    const v = s.volume(str(vol));
    meta.willChange?.(v); // before the change: an agent must not post a change of its own about it any longer
    const f = putChunk(v, str(path), num(offset), Buffer.from(data), first === true, num(uid), num(gid));
    return meta.changed(v, { attrs: [f.dir], entries: [[f.dir, f.name]], data: [f.ino] }) ?? null;
  },
};

/** Write one piece of a file by path (the first piece creates or truncates it): `prism put`, with or without a host. */
export function putChunk(v: Volume, path: string, offset: number, data: Buffer, first: boolean, uid: number, gid: number): { dir: number; name: Buffer; ino: number } {
  const parts = path.split('/').filter(Boolean);
  if (parts.length === 0) throw new PrismError('EISDIR', 'cannot put onto the root directory');
  const dir = v.resolve('/' + parts.slice(0, -1).join('/'));
  const name = Buffer.from(parts[parts.length - 1]!);
  let ino: number;
  if (first) {
    const a = v.create(dir, name, 0o644, uid, gid, false);
    if ((a.mode & S_IFMT) !== S_IFREG) throw new PrismError('EINVAL', `${path} is not a regular file`);
    v.setattr(a.ino, { size: 0 });
    ino = a.ino;
  } else {
    ino = v.lookup(dir, name).ino;
  }
  if (data.length > 0) v.write(ino, offset, data);
  return { dir, name, ino };
}

function str(x: unknown): string {
  if (typeof x !== 'string') throw new PrismError('EINVAL', 'expected a string argument');
  return x;
}
function num(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new PrismError('EINVAL', 'expected a non-negative integer');
  return x;
}

export function serveAdmin(ch: Channel, store: Store, meta: MetadataSink): void {
  const failed = (e: unknown) => ch.send(encode(controlError(e)));
  ch.onMessage((m) => {
    try {
      const v = decodeControl(m);
      if (!Array.isArray(v) || v[0] !== 'admin' || typeof v[1] !== 'string' || !Array.isArray(v[2])) throw new PrismError('EINVAL', 'malformed admin request');
      const op = OPS[v[1]];
      if (!op) throw new PrismError('ENOSYS', `unknown admin operation ${JSON.stringify(v[1])}`);
      const result = op(store, v[2] as unknown[], meta);
      store.commit();
      // A change other VMs' kernels may cache is answered once they have let go of it.
      if (result instanceof Promise) result.then(() => ch.send(encode(['ok', null])), failed);
      else ch.send(encode(['ok', result]));
    } catch (e) {
      failed(e);
    }
  });
}
