// The host's admin socket (<store>/host.sock, 0600, so only the host's user): while the host owns the
// store, the CLI asks it to do what it would otherwise do on the store itself. One request per message
// (up to a VRPC message's size: a put sends its content in pieces of up to 1 MiB):
// ['admin', op, args] -> ['ok', result] | ['error', code, message], with ['progress', done, total]
// messages before the reply of a long one (import, gc). Each operation is committed before its reply.
//
// Readers beside the host (export, fsck, scan) open the store read-only in their own process
// (Store.openReadOnly) after `read-begin`: it pins the volumes they read (hidden read-only copies, so
// nothing they read is freed under them) and holds gc off (gc deletes segment files) until their
// connection closes.
import { PrismError } from '../errors.js';
import { log } from '../log.js';
import { controlError, decodeControl, encode } from '../protocol/codec.js';
import type { MetadataSink } from '../metadata-share/publisher.js';
import { MAX_MESSAGE } from '../protocol/procs.js';
import { PutFile } from '../store/put-file.js';
import { diffOf, listPath, readPath, statPath, storeStats } from '../store/queries.js';
import { gcSteps } from '../store/gc.js';
import { importPath } from '../store/import.js';
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
  /** Serve one more VM, or one fewer, from now on. */
  addVm(vm: { name: string; volumes: string[] }, force: boolean): { region?: string; meta?: string };
  removeVm(name: string, force: boolean): void;
}

/** What all admin connections share: readers beside the host, and the gc running now. */
interface AdminState { readers: number; gc: Promise<unknown> | null; running: Set<Promise<unknown>> }

/** One admin connection: its store, how changes reach the VMs' metadata tables, its puts under way and pins. */
interface AdminContext {
  host: AdminHost; store: Store; meta: MetadataSink; owner: string; puts: Map<number, PutFile>; nextPut: number;
  state: AdminState;
  /** Whether this connection counts as a reader (read-begin), and the pins it holds. */
  reading: boolean; pins: string[];
  /** The connection closed: a long operation of it stops where it can. */
  closed: boolean;
  progress(done: number, total: number): void;
}

/** The store operations the admin socket offers; results are plain data. */
const OPS: Record<string, (c: AdminContext, a: unknown[]) => unknown> = {
  create: ({ store }, [name, quota, inodes]) => {
    const opt = (x: unknown) => (x === null || x === undefined ? undefined : num(x));
    store.createVolume(str(name), { quota: opt(quota), inodeQuota: opt(inodes) });
    return null;
  },
  clone: ({ store }, [src, name]) => { store.clone(str(src), str(name)); return null; },
  // [name, bytes | null (none), inodes | null (none) | 'keep']
  quota: ({ store, meta }, [name, bytes, inodes]) => {
    store.setQuota(str(name), bytes === null ? undefined : num(bytes), inodes === 'keep' ? undefined : inodes === null ? null : num(inodes));
    meta.boundsChanged?.(store.volume(str(name)));
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
  rm: ({ store, host }, [name, force]) => {
    busyUnlessForced(host.mountedBy(str(name)), str(name), force, 'remove it');
    store.removeVolume(str(name));
    return null;
  },
  ls: ({ store }) => store.volumeNames().map((n) => store.info(n)),
  info: ({ store, host }, [name]) => ({ ...store.info(str(name)), mountedBy: host.mountedBy(str(name)), servedTo: host.servedTo(str(name)) }),
  status: ({ host }) => host.status(),
  'vm-add': ({ host }, [name, volumes, force]) => host.addVm({ name: str(name), volumes: strs(volumes) }, force === true),
  'vm-rm': ({ host }, [name, force]) => { host.removeVm(str(name), force === true); return null; },
  // the read commands (src/store/queries.ts)
  list: ({ store }, [vol, path]) => listPath(store, str(vol), str(path)),
  stat: ({ store }, [vol, path]) => statPath(store, str(vol), str(path)),
  read: ({ store }, [vol, path, offset, length]) => readPath(store, str(vol), str(path), num(offset), num(length)),
  diff: ({ store }, [a, b]) => diffOf(store, str(a), str(b)),
  stats: ({ store }) => storeStats(store),
  snapshot: ({ store }, [src, name]) => { store.snapshot(str(src), str(name)); return null; },
  rollback: ({ store, meta, host }, [name, from, force]) => {
    const mounted = host.mountedBy(str(name));
    busyUnlessForced(mounted, str(name), force, 'roll it back');
    const v = store.rollback(str(name), str(from));
    if (mounted.length) meta.willChange?.(v); // forced: its agent may no longer answer for it alone
    meta.replaced?.(v);
    return null;
  },
  // [volumes | null (all)] -> { volume: pin }; the connection is a reader from now on (gc waits)
  'read-begin': async (c, [volumes]) => {
    while (c.state.gc) await c.state.gc.catch(() => undefined);
    if (!c.reading) { c.reading = true; c.state.readers++; }
    const names = volumes === null ? c.store.volumeNames() : strs(volumes);
    const pins: Record<string, string> = {};
    for (const n of names) { pins[n] = c.store.pin(n); c.pins.push(pins[n]); }
    return pins;
  },
  gc: (c) => {
    if (c.state.gc) throw new PrismError('EBUSY', 'a gc is running already');
    if (c.state.readers > 0) throw new PrismError('EBUSY', `${c.state.readers} reader(s) beside the host (export, fsck, scan) are reading segment files; gc again when they are done`);
    const run = (async () => {
      const steps = gcSteps(c.store, { onProgress: (d, t) => c.progress(d, t) });
      for (;;) {
        await c.store.idle(); // a commit's fsyncs open segment files this step may delete
        // every step ends committed: an operator who gave up, or a host stopping, stops it there
        if (c.closed) throw new PrismError('EINTR', 'the admin connection closed: gc stopped between segments');
        const r = steps.next();
        if (r.done) return r.value;
        await new Promise((resolve) => setImmediate(resolve)); // the VMs' requests between segments
      }
    })();
    c.state.gc = run;
    return run.finally(() => { c.state.gc = null; });
  },
  // [volume, absolute source path]: the host reads the source itself (same user: the socket is 0600)
  import: async (c, [name, src]) => {
    busyUnlessForced(c.host.mountedBy(str(name)), str(name), false, 'import into it');
    const r = await importPath(c.store, str(name), str(src), {
      onProgress: (p) => {
        // an operator who gave up (Ctrl-C) gets no import: it fails, and so changes nothing
        if (c.closed) throw new PrismError('EINTR', 'the admin connection closed: import abandoned');
        c.progress(p.files, p.totalFiles);
      },
    });
    c.meta.replaced?.(c.store.volume(str(name)));
    return r;
  },
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

/** EBUSY while VMs have the volume mounted, unless forced (their guests then see ESTALE or other files). */
function busyUnlessForced(vms: string[], name: string, force: unknown, what: string): void {
  if (vms.length && force !== true) {
    throw new PrismError('EBUSY', `volume ${name} is mounted by VM ${vms.join(', ')} (--force would ${what} anyway: their guests would see ESTALE)`);
  }
}

function putOf(c: AdminContext, id: unknown): PutFile {
  const put = c.puts.get(num(id));
  if (!put) throw new PrismError('EBADF', `no put ${String(id)} on this connection`);
  return put;
}

function str(x: unknown): string {
  if (typeof x !== 'string') throw new PrismError('EINVAL', 'expected a string argument');
  return x;
}
function strs(x: unknown): string[] {
  if (!Array.isArray(x)) throw new PrismError('EINVAL', 'expected a list of strings');
  return x.map(str);
}
function num(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new PrismError('EINVAL', 'expected a non-negative integer');
  return x;
}

let connections = 0;

/** The admin socket of one host: serve() each connection. */
export class AdminService {
  private readonly state: AdminState = { readers: 0, gc: null, running: new Set() };

  constructor(private readonly store: Store, private readonly meta: MetadataSink, private readonly host: AdminHost) {}

  /** Resolves when no long operation (import, gc, read-begin) is running: before the store closes. */
  async idle(): Promise<void> {
    while (this.state.running.size) await Promise.all(this.state.running);
  }

  serve(ch: Channel): void {
    const { store, host } = this;
    const c: AdminContext = {
      store, meta: this.meta, owner: `admin#${++connections}`, puts: new Map(), nextPut: 1, state: this.state, reading: false, pins: [], closed: false,
      host,
      progress: (done, total) => ch.send(encode(['progress', done, total])),
    };
    ch.onClose(() => {
      c.closed = true;
      if (c.reading) this.state.readers--;
      c.reading = false;
      const changed = c.puts.size + c.pins.length > 0;
      try {
        for (const put of c.puts.values()) put.abort();
        for (const pin of c.pins) store.unpin(pin);
        if (changed) store.commit();
      } catch (e) {
        // the host is stopping and its store closed first: the next open drops what is left
        log.debug({ err: e }, 'admin connection closed after the store');
      }
      c.puts.clear();
      c.pins = [];
    });
    const failed = (e: unknown) => ch.send(encode(controlError(e)));
    ch.onMessage((m) => {
      try {
        const v = decodeControl(m, MAX_MESSAGE);
        if (!Array.isArray(v) || v[0] !== 'admin' || typeof v[1] !== 'string' || !Array.isArray(v[2])) throw new PrismError('EINVAL', 'malformed admin request');
        const op = OPS[v[1]];
        if (!op) throw new PrismError('ENOSYS', `unknown admin operation ${JSON.stringify(v[1])}`);
        const result = op(c, v[2] as unknown[]);
        if (result instanceof Promise) {
          // A long operation, or a change other VMs' kernels may cache (answered once they let go of it).
          const done = result.then((r) => { store.commit(); ch.send(encode(['ok', r ?? null])); }).catch(failed);
          this.state.running.add(done);
          void done.finally(() => this.state.running.delete(done));
        } else {
          store.commit();
          ch.send(encode(['ok', result]));
        }
      } catch (e) {
        failed(e);
      }
    });
  }
}
