// The host's admin socket (<store>/host.sock, 0600, so only the host's user): while the host owns the
// store, the CLI asks it to do what it would otherwise do on the store itself. One request per message
// (up to a VRPC message's size: a put sends its content in pieces of up to 1 MiB):
// ['admin', op, args] -> ['ok', result] | ['error', code, message]. Each operation is committed
// before its reply.
import { PrismError } from '../errors.js';
import { controlError, decodeControl, encode } from '../protocol/codec.js';
import type { MetadataSink } from '../metadata-share/publisher.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import { PutFile } from '../store/put-file.js';
import { diffOf, listPath, readPath, statPath, storeStats } from '../store/queries.js';
import type { Store } from '../store/store.js';
import type { Channel } from '../vrpc/channel.js';

export const ADMIN_SOCKET = 'host.sock';

/** What the admin socket asks of the server around the store. */
export interface AdminHost {
  /** The VMs that have a volume mounted now. */
  mountedBy(volume: string): string[];
  /** The VMs that may attach a volume (their --vm NAME=VOLUMES). */
  servedTo(volume: string): string[];
  status(): unknown;
}

/** One admin connection: its store, how changes reach the VMs' metadata tables, and its puts under way. */
interface AdminContext extends AdminHost { store: Store; meta: MetadataSink; owner: string; puts: Map<number, PutFile>; nextPut: number }

/** The store operations the admin socket offers; results are plain data. */
const OPS: Record<string, (c: AdminContext, a: unknown[]) => unknown> = {
  create: ({ store }, [name, quota, inodes]) => {
    const opt = (x: unknown) => (x === null || x === undefined ? undefined : num(x));
    store.createVolume(str(name), { quota: opt(quota), inodeQuota: opt(inodes) });
    return null;
  },
  clone: ({ store }, [src, name]) => { store.clone(str(src), str(name)); return null; },
  // [name, bytes | null (none), inodes | null (none) | 'keep']
  quota: ({ store }, [name, bytes, inodes]) => {
    store.setQuota(str(name), bytes === null ? undefined : num(bytes), inodes === 'keep' ? undefined : inodes === null ? null : num(inodes));
    return null;
  },
  compose: ({ store }, [name, sources]) => {
    if (!Array.isArray(sources)) throw new PrismError('EINVAL', 'expected a list of sources');
    store.compose(str(name), sources.map((x) => {
      const o = (typeof x === 'object' && x !== null ? x : {}) as Record<string, unknown>;
      return { volume: str(o.volume), path: str(o.path), ...(o.dest === undefined ? {} : { dest: str(o.dest) }) };
    }));
    return null;
  },
  rm: ({ store, mountedBy }, [name, force]) => {
    const vms = mountedBy(str(name));
    if (vms.length && force !== true) {
      throw new PrismError('EBUSY', `volume ${name} is mounted by VM ${vms.join(', ')} (--force removes it anyway: their guests then get ESTALE)`);
    }
    store.removeVolume(str(name));
    return null;
  },
  ls: ({ store }) => store.volumeNames().map((n) => store.info(n)),
  info: ({ store, mountedBy, servedTo }, [name]) => ({ ...store.info(str(name)), mountedBy: mountedBy(str(name)), servedTo: servedTo(str(name)) }),
  status: (c) => c.status(),
  // the read commands (src/store/queries.ts)
  list: ({ store }, [vol, path]) => listPath(store, str(vol), str(path)),
  stat: ({ store }, [vol, path]) => statPath(store, str(vol), str(path)),
  read: ({ store }, [vol, path, offset, length]) => readPath(store, str(vol), str(path), num(offset), num(length)),
  diff: ({ store }, [a, b]) => diffOf(store, str(a), str(b)),
  stats: ({ store }) => storeStats(store),
  // `prism put` streamed (src/store/put-file.ts): begin [volume, path, uid, gid] -> id, then
  // data [id, offset, bytes] as often as needed, then end [id]; a connection that closes first
  // leaves the old file as it was.
  'put-begin': (c, [vol, path, uid, gid]) => {
    const id = c.nextPut++;
    c.puts.set(id, PutFile.begin(c.store.volume(str(vol)), str(path), num(uid), num(gid), c.owner));
    return id;
  },
  'put-data': (c, [id, offset, data]) => {
    if (!(data instanceof Uint8Array)) throw new PrismError('EINVAL', 'expected bytes');
    const put = putOf(c, id);
    try {
      put.write(num(offset), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } catch (e) {
      put.abort();
      c.puts.delete(num(id));
      throw e;
    }
    return null;
  },
  'put-end': (c, [id]) => {
    const put = putOf(c, id);
    c.puts.delete(num(id));
    c.meta.willChange?.(put.v); // before the change: an agent must not post a change of its own about it any longer
    let f: ReturnType<PutFile['finish']>;
    try {
      f = put.finish();
    } catch (e) {
      put.abort();
      throw e;
    }
    return c.meta.changed(put.v, { attrs: [f.dir], entries: [[f.dir, f.name]], data: [f.ino] }) ?? null;
  },
};

function putOf(c: AdminContext, id: unknown): PutFile {
  const put = c.puts.get(num(id));
  if (!put) throw new PrismError('EBADF', `no put ${String(id)} on this connection`);
  return put;
}

function str(x: unknown): string {
  if (typeof x !== 'string') throw new PrismError('EINVAL', 'expected a string argument');
  return x;
}
function num(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new PrismError('EINVAL', 'expected a non-negative integer');
  return x;
}

let connections = 0;

export function serveAdmin(ch: Channel, store: Store, meta: MetadataSink, host: AdminHost): void {
  const c: AdminContext = { store, meta, owner: `admin#${++connections}`, puts: new Map(), nextPut: 1, mountedBy: (v) => host.mountedBy(v), servedTo: (v) => host.servedTo(v), status: () => host.status() };
  ch.onClose(() => {
    for (const put of c.puts.values()) put.abort();
    if (c.puts.size) store.commit();
    c.puts.clear();
  });
  const failed = (e: unknown) => ch.send(encode(controlError(e)));
  ch.onMessage((m) => {
    try {
      const v = decodeControl(m, MAX_MESSAGE);
      if (!Array.isArray(v) || v[0] !== 'admin' || typeof v[1] !== 'string' || !Array.isArray(v[2])) throw new PrismError('EINVAL', 'malformed admin request');
      const op = OPS[v[1]];
      if (!op) throw new PrismError('ENOSYS', `unknown admin operation ${JSON.stringify(v[1])}`);
      const result = op(c, v[2] as unknown[]);
      store.commit();
      // A change other VMs' kernels may cache is answered once they have let go of it.
      if (result instanceof Promise) result.then(() => ch.send(encode(['ok', null])), failed);
      else ch.send(encode(['ok', result]));
    } catch (e) {
      failed(e);
    }
  });
}
