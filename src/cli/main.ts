// The `prism` command. Exit status: 0 on success; on error one line on stderr, `prism: CODE: message`,
// and the errno of the POSIX code (ENOENT 2, EEXIST 17, EINVAL 22 for usage errors too, EDQUOT 122, ...).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { errnoOf, fromNodeError, isPrismError, PrismError } from '../errors.js';
import { log } from '../log.js';
import { diffOf, listPath, READ_PIECE, readPath, statPath, storeStats } from '../store/queries.js';
import { exportPath } from '../store/export.js';
import { fsck, type FsckReport } from '../store/fsck.js';
import { gc, type GcReport } from '../store/gc.js';
import { importPath, type ImportResult } from '../store/import.js';
import { Store, type ComposeSource, type VolumeInfo } from '../store/store.js';
import { AdminConnection, viaHost } from './admin-client.js';
import { PutFile } from '../store/put-file.js';
import { attrJson, bytes, duration, groupId, groupName, isoTime, modeString, parseBytes, parseCount, table, userName } from './format.js';
import { progress } from './progress.js';
import { agentCommand } from './agent.js';
import { scanCommand } from './scan.js';
import { bashCompletion } from './completion.js';
import { tour } from './tour.js';
import type { HostStatus } from '../host/server.js';

/**
 * The store's directory. A store that is not there is ENOENT: a mistyped --store must not quietly
 * make a new empty one; only the commands that make volumes (create, import) may make a store.
 */
function storeDir(cmd: Command, mayCreate = false): string {
  const dir: string = cmd.optsWithGlobals().store ?? process.env.PRISM_STORE ?? './prism-data';
  if (!mayCreate && !Store.exists(dir)) {
    throw new PrismError('ENOENT', `no store at ${dir} (volume create or volume import makes one; --store or $PRISM_STORE names another)`);
  }
  return dir;
}

/**
 * Open the store. Another command holding it is waited for (--wait seconds, 5 by default), then
 * EBUSY; a host serving it is not waited for: it holds the store until it stops.
 */
async function openStore(cmd: Command, mayCreate: boolean): Promise<Store> {
  const dir = storeDir(cmd, mayCreate);
  const wait = Number(cmd.optsWithGlobals().wait ?? 5);
  if (!Number.isFinite(wait) || wait < 0) throw new PrismError('EINVAL', `--wait takes seconds, not ${JSON.stringify(cmd.optsWithGlobals().wait)}`);
  const until = Date.now() + wait * 1000;
  for (let pause = 20; ; pause = Math.min(pause * 2, 500)) {
    try {
      return Store.open(dir);
    } catch (e) {
      if (!isPrismError(e, 'EBUSY')) throw e;
      const host = await AdminConnection.open(dir);
      if (host) {
        host.close();
        throw new PrismError('EBUSY', `${e.detail}: prism host serve owns the store (stop the host first)`);
      }
      if (Date.now() >= until) throw new PrismError('EBUSY', `${e.detail} (waited ${wait} s; --wait SECONDS waits longer)`);
      await new Promise((r) => setTimeout(r, pause));
    }
  }
}

/** Open the store, run fn, commit and close; the store is closed on error too. */
async function withStore<T>(cmd: Command, fn: (s: Store) => T | Promise<T>, mayCreate = false): Promise<T> {
  const s = await openStore(cmd, mayCreate);
  try {
    const r = await fn(s);
    s.close();
    return r;
  } catch (e) {
    s.close();
    throw e;
  }
}

/**
 * What a read command shows: asked of the host when one serves the store (it owns the store, and its
 * answer includes what it has not committed yet), else read from the store here.
 */
async function ask<T>(cmd: Command, op: string, args: unknown[], local: (s: Store) => T): Promise<T> {
  const served = await viaHost(storeDir(cmd), op, args);
  return served ? served.result as T : withStore(cmd, local);
}

/** Run `op` on the host serving the store; ENOENT when none does (commands about the host itself). */
async function onHost(cmd: Command, op: string, args: unknown[]): Promise<unknown> {
  const served = await viaHost(storeDir(cmd), op, args);
  if (!served) throw new PrismError('ENOENT', `no host is serving ${storeDir(cmd)} (prism host serve)`);
  return served.result;
}

/** Which volume to read for each volume asked for: itself, or the host's pin of it. */
export type Reading = <T>(cmd: Command, volumes: string[] | null, fn: (s: Store, pinned: (volume: string) => string, volumes: string[]) => T | Promise<T>) => Promise<T>;

/**
 * Run a reader (export, fsck, scan) on the store: opened here when no host serves it; beside a
 * serving host, read-only in this process, with the volumes (null: all) pinned by the host for as
 * long as fn runs and its gc held off (src/host/admin.ts).
 */
const reading: Reading = async (cmd, volumes, fn) => {
  const host = await AdminConnection.open(storeDir(cmd));
  if (!host) return withStore(cmd, (s) => fn(s, (v) => v, volumes ?? s.volumeNames()));
  try {
    const pins = await host.call('read-begin', [volumes]) as Record<string, string>;
    const s = Store.openReadOnly(storeDir(cmd));
    try {
      return await fn(s, (v) => {
        const pin = pins[v];
        if (pin === undefined) throw new PrismError('ENOENT', `no volume named ${JSON.stringify(v)}`);
        return pin;
      }, Object.keys(pins));
    } finally {
      s.close();
    }
  } finally {
    host.close();
  }
};

/** "NAME=VOLUME[,VOLUME]" -> a VM and the volumes it may attach. */
function parseVm(spec: string): { name: string; volumes: string[] } {
  const [name, vols] = spec.split('=');
  if (!name || !vols) throw new PrismError('EINVAL', `expected NAME=VOLUME[,VOLUME], got ${JSON.stringify(spec)}`);
  return { name, volumes: vols.split(',') };
}

/** "VOL:/path" -> [volume, path]. */
function volPath(spec: string): [string, string] {
  const i = spec.indexOf(':');
  if (i <= 0) throw new PrismError('EINVAL', `expected VOLUME:/path, got ${JSON.stringify(spec)}`);
  const p = spec.slice(i + 1) || '/';
  return [spec.slice(0, i), p.startsWith('/') ? p : `/${p}`];
}

function parseFrom(spec: string): ComposeSource {
  const [volume, rest] = volPath(spec);
  const j = rest.indexOf(':');
  return j < 0 ? { volume, path: rest } : { volume, path: rest.slice(0, j), dest: rest.slice(j + 1) };
}

function print(s: string): void {
  process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
}
function json(v: unknown): void {
  print(JSON.stringify(v, null, 2));
}

/** The version in package.json (two levels above dist/src/cli/ and src/cli/). */
function version(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../../..', '../..']) {
    try { return (JSON.parse(fs.readFileSync(path.join(here, up, 'package.json'), 'utf8')) as { version: string }).version; } catch { /* next */ }
  }
  return 'unknown';
}

export function program(): Command {
  const p = new Command('prism')
    .description('Prism: deduplicating copy-on-write volumes for virtual machines')
    .version(version(), '--version', 'print the version')
    .option('--store <dir>', 'store directory (default: $PRISM_STORE or ./prism-data)')
    .option('--wait <seconds>', 'how long to wait for another command holding the store', '5')
    // main() prints commander's errors as every other error: one line, EINVAL
    .configureOutput({ outputError: () => undefined })
    .exitOverride();

  const volume = p.command('volume').description('create, copy and inspect volumes');

  volume.command('create <name>').description('create an empty volume (and the store, if there is none yet)').option('--quota <bytes>', 'limit on bytes stored, data and metadata (e.g. 10G)')
    .option('--quota-inodes <n>', 'limit on the number of inodes')
    .action(async (name: string, o: { quota?: string; quotaInodes?: string }, cmd: Command) => {
      const quota = o.quota === undefined ? undefined : parseBytes(o.quota);
      const inodeQuota = o.quotaInodes === undefined ? undefined : parseCount(o.quotaInodes);
      // no store there yet: no host either (viaHost finds no socket)
      if (await viaHost(storeDir(cmd, true), 'create', [name, quota ?? null, inodeQuota ?? null])) return;
      await withStore(cmd, (s) => { s.createVolume(name, { quota, inodeQuota }); }, true);
    });

  volume.command('ls').description('the volumes: logical and unique bytes, files, origin, quota').option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const served = await viaHost(storeDir(cmd), 'ls', []);
      const infos = (served?.result as VolumeInfo[] | undefined) ?? await withStore(cmd, (s) => s.volumeNames().map((n) => s.info(n)));
      if (o.json) return json(infos);
      print(table([['NAME', 'LOGICAL', 'UNIQUE', 'FILES', 'ORIGIN', 'PARENT', 'QUOTA'],
        ...infos.map((i) => [i.name, bytes(i.logicalBytes), bytes(i.uniqueBytes), String(i.files), i.origin,
          i.parent ?? i.sources?.join(',') ?? '-', i.quota === undefined || i.quota === null ? '-' : bytes(i.quota)])]));
    });

  volume.command('info <name>').description('a volume: origin, quota and usage, what removing it frees, which VMs mount it')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
      type Info = VolumeInfo & { mountedBy: string[]; servedTo: string[] };
      const served = await viaHost(storeDir(cmd), 'info', [name]);
      const i = (served?.result as Info | undefined) ?? await withStore(cmd, (s): Info => ({ ...s.info(name), mountedBy: [], servedTo: [] }));
      if (o.json) return json(i);
      const origin = i.origin === 'clone' ? `clone of ${i.parent ?? '(removed)'}` : i.origin === 'compose' ? `composed from ${i.sources?.join(', ') ?? '-'}` : i.origin;
      print(table([
        ['name:', i.name], ['origin:', origin], ['created:', i.created],
        ['used:', `${bytes(i.logicalBytes)} of data, ${bytes(i.metadataBytes)} of metadata, ${i.files} inodes`],
        ['quota:', `${i.quota == null ? 'none' : bytes(i.quota)}, inodes ${i.inodeQuota == null ? 'none' : String(i.inodeQuota)}`],
        ['unique:', `${bytes(i.uniqueBytes)} (what removing it frees)`],
        ['mounted by:', served ? (i.mountedBy.length ? i.mountedBy.join(', ') : 'no VM now') : 'no host is serving the store'],
        ...(served ? [['served to:', i.servedTo.join(', ') || 'no VM']] : []),
      ]));
    });

  volume.command('rm <name>').description('remove a volume (EBUSY while a VM has it mounted, unless --force)')
    .option('--force', 'remove it even if a VM has it mounted (its guest then gets ESTALE)')
    .action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      if (await viaHost(storeDir(cmd), 'rm', [name, o.force === true])) return;
      await withStore(cmd, (s) => s.removeVolume(name));
    });

  volume.command('quota <name> <bytes>').description('set a quota ("none" removes it)')
    .option('--inodes <n>', 'also set the inode quota ("none" removes it)')
    .action(async (name: string, q: string, o: { inodes?: string }, cmd: Command) => {
      const inodes = o.inodes === undefined ? undefined : o.inodes === 'none' ? null : parseCount(o.inodes);
      const bytes = q === 'none' ? null : parseBytes(q);
      // undefined inodes: the inode quota stays as it is
      if (await viaHost(storeDir(cmd), 'quota', [name, bytes, inodes === undefined ? 'keep' : inodes])) return;
      await withStore(cmd, (s) => s.setQuota(name, bytes ?? undefined, inodes));
    });

  volume.command('import <name> <src>').description('import a directory or a .tar, all or nothing (creates the volume if needed)')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, src: string, o: { json?: boolean }, cmd: Command) => {
      if (!fs.existsSync(src)) throw new PrismError('ENOENT', `no such file or directory: ${src}`);
      const bar = progress(`import ${name}`, ' files');
      let r: ImportResult;
      try {
        // Through a serving host, which reads the source itself; else here.
        const served = await viaHost(storeDir(cmd, true), 'import', [name, path.resolve(src)], (d, t) => bar.update(d, t));
        r = (served?.result as ImportResult | undefined) ?? await withStore(cmd, (s) => importPath(s, name, src, { onProgress: (x) => bar.update(x.files, x.totalFiles, bytes(x.bytes)) }), true);
      } finally { bar.stop(); }
      if (o.json) json(r);
      else print(`imported ${r.files} files, ${r.dirs} directories, ${bytes(r.bytes)} (${bytes(r.newBytes)} new) in ${r.seconds.toFixed(2)} s`);
    });

  volume.command('export <name> <dest>').description('export to a directory, a .tar or a .tar.gz (also while a host serves it: as it was when the export began)')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, dest: string, o: { json?: boolean }, cmd: Command) => reading(cmd, [name], async (s, pinned) => {
      const bar = progress(`export ${name}`, ' files');
      try {
        const r = await exportPath(s, pinned(name), dest, { onProgress: (x: { files: number; totalFiles: number }) => bar.update(x.files, x.totalFiles) });
        bar.stop();
        if (o.json) json(r);
        else print(`exported ${r.files} files, ${bytes(r.bytes)}`);
      } finally { bar.stop(); }
    }));

  volume.command('snapshot <name> <snapshot>').description('a read-only point-in-time copy (instant); rollback goes back to it')
    .action(async (name: string, snap: string, _o: unknown, cmd: Command) => {
      if (await viaHost(storeDir(cmd), 'snapshot', [name, snap])) return;
      await withStore(cmd, (s) => { s.snapshot(name, snap); });
    });

  volume.command('rollback <name> <snapshot>').description("give a volume back the files of a snapshot (EBUSY while a VM has it mounted, unless --force)")
    .option('--force', 'roll back even if a VM has it mounted (its guest then sees ESTALE)')
    .action(async (name: string, snap: string, o: { force?: boolean }, cmd: Command) => {
      if (await viaHost(storeDir(cmd), 'rollback', [name, snap, o.force === true])) return;
      await withStore(cmd, (s) => { s.rollback(name, snap); });
    });

  volume.command('clone <src> <new>').description('instant point-in-time copy (also of a mounted volume)')
    .action(async (src: string, name: string, _o: unknown, cmd: Command) => {
      if (await viaHost(storeDir(cmd), 'clone', [src, name])) return;
      await withStore(cmd, (s) => { s.clone(src, name); });
    });

  volume.command('compose <new>').description('a new volume from subtrees of others')
    .requiredOption('--from <VOL:/path[:/dest]>', 'a subtree to include (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (name: string, o: { from: string[] }, cmd: Command) => {
      const sources = o.from.map(parseFrom);
      if (await viaHost(storeDir(cmd), 'compose', [name, sources])) return;
      await withStore(cmd, (s) => { s.compose(name, sources); });
    });

  volume.command('diff <a> <b>').description('what differs between two volumes: + added, - removed, M changed').option('--json', 'machine-readable output')
    .option('--exit-code', 'exit with 1 when the volumes differ (as git diff --exit-code)')
    .action(async (a: string, b: string, o: { json?: boolean; exitCode?: boolean }, cmd: Command) => {
      const d = await ask(cmd, 'diff', [a, b], (s) => diffOf(s, a, b));
      if (o.exitCode && d.added.length + d.removed.length + d.changed.length > 0) process.exitCode = 1;
      if (o.json) return json(d);
      const lines = [...d.added.map((x) => `+ ${x}`), ...d.removed.map((x) => `- ${x}`), ...d.changed.map((x) => `M ${x}`)];
      if (lines.length) print(lines.join('\n'));
    });

  p.command('ls <vol:path>').description('list a directory of a volume').option('--json', 'machine-readable output').option('-l', 'long listing')
    .action(async (spec: string, o: { json?: boolean; l?: boolean }, cmd: Command) => {
      const [vn, path] = volPath(spec);
      const entries = await ask(cmd, 'list', [vn, path], (s) => listPath(s, vn, path));
      if (o.json) return json(entries.map((e) => ({ name: e.name, ...attrJson(e.attr) })));
      if (!o.l) return entries.length ? print(entries.map((e) => e.name).join('\n')) : undefined;
      if (entries.length) print(table(entries.map((e) => [modeString(e.attr.mode), String(e.attr.nlink), userName(e.attr.uid), groupName(e.attr.gid), bytes(e.attr.size), isoTime(e.attr.mtime).slice(0, 19), e.name + (e.target !== undefined ? ` -> ${e.target}` : '')])));
    });

  p.command('cat <vol:path>').description('write a file of a volume to stdout').action(async (spec: string, _o: unknown, cmd: Command) => {
    const [vn, path] = volPath(spec);
    const out = async (data: Uint8Array) => { if (!process.stdout.write(data)) await new Promise((r) => process.stdout.once('drain', r)); };
    const host = await AdminConnection.open(storeDir(cmd));
    if (host) {
      try {
        for (let off = 0, size = 1; off < size;) {
          const r = await host.call('read', [vn, path, off, READ_PIECE]) as { data: Uint8Array; size: number };
          size = r.size;
          if (r.data.length === 0) break;
          await out(r.data);
          off += r.data.length;
        }
      } finally {
        host.close();
      }
      return;
    }
    await withStore(cmd, async (s) => {
      for (let off = 0, size = 1; off < size;) {
        const r = readPath(s, vn, path, off, READ_PIECE);
        size = r.size;
        if (r.data.length === 0) break;
        await out(r.data);
        off += r.data.length;
      }
    });
  });

  p.command('put <vol:path> <file>').description('write a file (FILE or - for stdin) into a volume, all or nothing')
    .action(async (spec: string, file: string, _o: unknown, cmd: Command) => {
      const [vn, path] = volPath(spec);
      const dir = storeDir(cmd);
      // opened first: a file that is not there fails before anything changes
      const input = file === '-' ? process.stdin : fs.createReadStream('', { fd: fs.openSync(file, 'r'), highWaterMark: 1 << 20 });
      const uid = process.getuid?.() ?? 0, gid = process.getgid?.() ?? 0;
      // With a host running, the content goes through it, so every VM mounting the volume sees the
      // new file at once; a put cut short (the connection closes before put-end) changes nothing.
      const host = await AdminConnection.open(dir);
      if (host) {
        try {
          const id = await host.call('put-begin', [vn, path, uid, gid]);
          let off = 0;
          for await (const chunk of input) {
            await host.call('put-data', [id, off, chunk as Buffer]);
            off += (chunk as Buffer).length;
          }
          await host.call('put-end', [id]);
        } finally {
          host.close();
        }
        return;
      }
      await withStore(cmd, async (s) => {
        const put = PutFile.begin(s.volume(vn), path, uid, gid);
        try {
          let off = 0;
          for await (const chunk of input) {
            put.write(off, chunk as Buffer);
            off += (chunk as Buffer).length;
            s.maybeCommit();
          }
          put.finish();
        } catch (e) {
          put.abort();
          throw e;
        }
      });
    });

  p.command('stat <vol:path>').description("a file's attributes").option('--json', 'machine-readable output')
    .action(async (spec: string, o: { json?: boolean }, cmd: Command) => {
      const [vn, path] = volPath(spec);
      const a = await ask(cmd, 'stat', [vn, path], (s) => statPath(s, vn, path));
      if (o.json) return json(attrJson(a));
      print(table(Object.entries(attrJson(a)).map(([k, val]) => [`${k}:`, String(val)])));
    });

  const store = p.command('store').description('the store as a whole');
  store.command('stats').description('the store as a whole: volumes, logical and physical bytes, dedup ratio').option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const st = await ask(cmd, 'stats', [], storeStats);
      if (o.json) return json(st);
      print(table([
        ['volumes', String(st.volumes)],
        ['logical', bytes(st.logicalBytes)],
        ['physical', `${bytes(st.physicalBytes)} in ${st.blocks} blocks`],
        ['dedup ratio', `${st.dedupRatio.toFixed(2)}x (saved ${bytes(st.savedBytes)})`],
        ['segment files', bytes(st.segmentFileBytes)],
        ['metadata file', bytes(st.metadataFileBytes)],
      ]));
    });

  p.command('gc').description('reclaim space held by freed blocks (through a serving host, between its requests)').option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const bar = progress('gc', ' segments');
      let r: GcReport;
      try {
        const served = await viaHost(storeDir(cmd), 'gc', [], (d, t) => bar.update(d, t));
        r = (served?.result as GcReport | undefined) ?? await withStore(cmd, (s) => gc(s, { onProgress: (d, t) => bar.update(d, t) }));
      } finally { bar.stop(); }
      if (o.json) return json(r);
      print(`compacted ${r.segmentsCompacted} segments, moved ${r.blocksMoved} blocks, reclaimed ${bytes(r.bytesReclaimed)}`);
    });

  p.command('fsck').description('check the store; --repair fixes what can be fixed')
    .option('--repair', 'repair reference counts, link counts and leaks').option('--json', 'machine-readable output')
    .action(async (o: { repair?: boolean; json?: boolean }, cmd: Command) => {
      // Beside a serving host only the check (read-only, of what it has committed: what a crash would leave).
      const check = o.repair ? withStore : (c: Command, fn: (s: Store) => FsckReport) => reading(c, [], fn);
      const report = await check(cmd, (s) => {
        const bar = progress('fsck');
        const r = fsck(s, { repair: o.repair, onProgress: (d, t, phase) => bar.update(d, t, phase) });
        bar.stop();
        return r;
      });
      if (o.json) json(report);
      else {
        for (const pr of report.problems) print(`${pr.repaired ? 'repaired' : 'PROBLEM'} ${pr.kind}: ${pr.detail}`);
        print(`${report.ok ? 'clean' : 'problems found'}: ${report.checked.volumes} volumes, ${report.checked.inodes} inodes, ${report.checked.nodes} nodes, ${report.checked.blocks} blocks`);
      }
      if (!report.ok) process.exitCode = 1;
    });

  const host = p.command('host').description('the host server');
  host.command('serve').description('serve volumes to VMs until SIGTERM or SIGINT')
    .option('--no-shm', 'do not serve over shared memory')
    .option('--shm-dir <dir>', 'where to create the regions', '/dev/shm')
    .option('--shm-group <group>', 'a group (name or id) that may map the regions too, e.g. the one QEMU runs as (mode 0660 instead of 0600)')
    .option('--no-meta', 'do not share metadata tables with the VMs (every LOOKUP and GETATTR is an RPC)')
    .option('--no-doorbell', "do not serve each VM's ivshmem doorbell (its guest is polled)")
    .option('--meta-size <MiB>', "size of each VM's metadata table (a power of two)", '64')
    .option('--meta-ack-ms <ms>', "how long a change waits for another VM's agent (on this machine) to acknowledge it before that VM is fenced", '10')
    .option('--meta-ack-poll-ms <ms>', 'the same for agents that poll (VM guests)', '50')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.md)')
    .option('--tcp <host:port>', 'also listen for TCP clients (127.0.0.1 unless a host is given; unix:/path for a Unix socket; repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .requiredOption('--vm <NAME=VOLUME[,VOLUME]>', 'a VM and the volumes it may attach (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (o: { tcp?: string[]; metrics?: string; vm: string[]; shm: boolean; shmDir: string; shmGroup?: string; meta: boolean; doorbell: boolean; metaSize: string; metaAckMs: string; metaAckPollMs: string }, cmd: Command) => {
      if (!o.shm && !o.tcp?.length) throw new PrismError('EINVAL', 'nothing to serve: --no-shm needs --tcp');
      const vms = o.vm.map(parseVm);
      const { HostServer } = await import('../host/server.js');
      const { tokenFile } = await import('../host/secrets.js');
      const server = await HostServer.start({
        storeDir: storeDir(cmd), vms, tcp: o.tcp, shm: o.shm ? undefined : false, shmDir: o.shmDir, meta: o.meta, doorbell: o.doorbell ? undefined : false, metaSize: Number(o.metaSize) * 2 ** 20,
        metaAckMs: Number(o.metaAckMs), metaPollAckMs: Number(o.metaAckPollMs),
        shmGroup: o.shmGroup === undefined ? undefined : groupId(o.shmGroup), metrics: o.metrics,
      });
      for (const addr of server.listenAddresses) print(`listening on ${addr}`);
      if (server.metricsAddress) print(`metrics on http://${server.metricsAddress}/metrics`);
      for (const vm of vms) {
        const shm = server.regions.get(vm.name);
        const meta = server.metaTables.get(vm.name);
        print(`vm ${vm.name}: volumes ${vm.volumes.join(',')}${shm ? `, shared memory ${shm}` : ''}${meta ? `, metadata ${meta}` : ''}${server.listenAddresses.length ? `, token file ${tokenFile(server.store.dir, vm.name)}` : ''}`);
      }
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => { log.info({ sig }, 'stopping'); server.stop().then(resolve, (e) => { log.error({ err: e }, 'stop failed'); resolve(); }); };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
        // Only now: whoever reads "ready" may stop the host at once, and must find the handlers there.
        print('ready');
      });
    });

  host.command('status').description('the VMs a running host serves: volumes mounted, transport, requests, bytes, errors')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const st = await onHost(cmd, 'status', []) as HostStatus;
      if (o.json) return json(st);
      print(`host pid ${st.pid}, up ${duration(st.uptimeSeconds)}, store ${st.store}`);
      print(table([['VM', 'VOLUMES', 'MOUNTED', 'LEASE', 'TRANSPORT', 'REQ/S', 'REQUESTS', 'ERRORS', 'IN', 'OUT', 'TABLE HITS'],
        ...st.vms.map((v) => [v.name, v.volumes.join(','), v.mounted.join(',') || '-', v.lease.join(',') || '-', v.transport, v.callsPerSecond.toFixed(1), String(v.calls),
          v.errors ? `${v.errors} (${Object.entries(v.errorsByCode).map(([c, n]) => `${c} ${n}`).join(', ')})` : '0', bytes(v.bytesIn), bytes(v.bytesOut),
          v.metaHits + v.metaMisses ? `${v.metaHits} (${Math.round((100 * v.metaHits) / (v.metaHits + v.metaMisses))}%)` : '-'])]));
    });

  const vmCmd = host.command('vm').description('the VMs a running host serves');
  vmCmd.command('add <NAME=VOLUME[,VOLUME]>').description('serve one more VM from now on, without a restart')
    .option('--force', 'share a volume even with a VM whose guest kernel would not see the new VM\'s writes (EBUSY otherwise)')
    .option('--json', 'machine-readable output')
    .action(async (spec: string, o: { json?: boolean; force?: boolean }, cmd: Command) => {
      const vm = parseVm(spec);
      const r = await onHost(cmd, 'vm-add', [vm.name, vm.volumes, o.force === true]) as { region?: string; meta?: string };
      const { tokenFile } = await import('../host/secrets.js');
      const token = tokenFile(path.resolve(storeDir(cmd)), vm.name);
      if (o.json) return json({ ...vm, region: r.region ?? null, meta: r.meta ?? null, tokenFile: token });
      print(`vm ${vm.name}: volumes ${vm.volumes.join(',')}${r.region ? `, shared memory ${r.region}` : ''}${r.meta ? `, metadata ${r.meta}` : ''}, token file ${token}`);
    });
  vmCmd.command('rm <name>').description('stop serving a VM (EBUSY while its agent is connected, unless --force)')
    .option('--force', 'remove it even with its agent connected (its mount then fails)')
    .action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      await onHost(cmd, 'vm-rm', [name, o.force === true]);
    });

  p.command('qemu-args <vm>').description("the QEMU options that attach a VM's shared-memory region (with its doorbell) and metadata table")
    .option('--shm-dir <dir>', 'where the host creates the regions', '/dev/shm')
    .option('--plain', 'an ivshmem-plain device without a doorbell (the guest polls; for a host run with --no-doorbell)')
    .option('--no-meta', 'the host runs with --no-meta: no metadata table device')
    .option('--meta-size <MiB>', 'the size the host gives metadata tables', '64')
    .action(async (vm: string, o: { shmDir: string; plain?: boolean; meta: boolean; metaSize: string }) => {
      const { checkVolumeName } = await import('../store/names.js');
      const { ivshmemPath, shmPath, REGION_SIZE } = await import('../vrpc/shm-region.js');
      const { checkMetaSize, metaPath } = await import('../metadata-share/file.js');
      checkVolumeName(vm);
      const id = `prism-${vm}`;
      // The doorbell device gets the region from the host's ivshmem server (the host must be serving
      // first) and interrupts through MSI-X, which the guest's agent takes through VFIO: hence a q35
      // machine with an emulated IOMMU (docs/doorbell.md).
      const args = [o.plain
        ? `-object memory-backend-file,size=${REGION_SIZE / 2 ** 20}M,share=on,mem-path=${shmPath(vm, o.shmDir)},id=${id} -device ivshmem-plain,memdev=${id}`
        : `-machine q35 -device intel-iommu -chardev socket,path=${ivshmemPath(vm, o.shmDir)},id=${id} -device ivshmem-doorbell,chardev=${id},vectors=1`];
      if (o.meta) {
        checkMetaSize(Number(o.metaSize) * 2 ** 20);
        // The guest maps the table read-only: a readonly=on backend, so not even its kernel can write it.
        args.push(`-object memory-backend-file,size=${o.metaSize}M,share=on,readonly=on,mem-path=${metaPath(vm, o.shmDir)},id=${id}-meta -device ivshmem-plain,memdev=${id}-meta`);
      }
      print(args.join(' '));
    });

  agentCommand(p, print);
  scanCommand(p, reading, print);

  p.command('completion <shell>').description('a shell completion script (bash): source <(prism completion bash)')
    .action((shell: string) => {
      if (shell !== 'bash') throw new PrismError('EINVAL', `no completion for ${JSON.stringify(shell)} (bash)`);
      print(bashCompletion(p));
    });

  p.command('tour').description('a short demonstration on the default store (npm start)')
    .action(async (_o: unknown, cmd: Command) => tour(storeDir(cmd, true)));

  for (const [c, path] of leaves(p)) {
    const example = EXAMPLES[path];
    if (example) c.addHelpText('after', `\nExample:\n  ${example}`);
  }
  return p;
}

/** One example per command, shown by --help. */
export const EXAMPLES: Record<string, string> = {
  'volume create': 'prism volume create web --quota 10G',
  'volume ls': 'prism volume ls --json',
  'volume info': 'prism volume info web',
  'volume rm': 'prism volume rm web-old',
  'volume quota': 'prism volume quota web 20G --inodes 1M',
  'volume import': 'prism volume import debian12 rootfs.tar',
  'volume export': 'prism volume export web web-backup.tar.gz',
  'volume clone': 'prism volume clone debian12 web',
  'volume snapshot': 'prism volume snapshot web web-before-upgrade',
  'volume rollback': 'prism volume rollback web web-before-upgrade',
  'volume compose': 'prism volume compose app --from debian12:/ --from tools:/opt/tools',
  'volume diff': 'prism volume diff debian12 web --exit-code',
  'ls': 'prism ls -l web:/etc',
  'cat': 'prism cat web:/etc/hostname',
  'put': 'prism put web:/etc/motd motd.txt',
  'stat': 'prism stat web:/etc/passwd --json',
  'store stats': 'prism store stats',
  'gc': 'prism gc',
  'fsck': 'prism fsck --repair',
  'host serve': 'prism host serve --vm web=web --tcp 127.0.0.1:7000 --metrics 127.0.0.1:9464',
  'host status': 'prism host status --json',
  'host vm add': 'prism host vm add db=db-data,shared-tools',
  'host vm rm': 'prism host vm rm db',
  'qemu-args': 'qemu-system-x86_64 ... $(prism qemu-args web)',
  'agent mount': 'prism agent mount --pci auto --volume web /srv    # inside the guest',
  'agent stats': 'prism agent stats /srv',
  'agent umount': 'prism agent umount /srv',
  'completion': 'source <(prism completion bash)',
  'tour': 'npm start',
};

/** The commands that do something (no subcommands), with their path ("volume create"). */
export function leaves(c: Command, prefix = ''): Array<[Command, string]> {
  return c.commands.flatMap((s) => {
    const path = prefix ? `${prefix} ${s.name()}` : s.name();
    return s.commands.length ? leaves(s, path) : [[s, path] as [Command, string]];
  });
}

/** The one way a command fails: `prism: CODE: message` on one line, and the code's errno as exit status. */
function fail(e: PrismError): void {
  const detail = e.detail.replace(new RegExp(`^${e.code}: `), '').replace(/\s*\n\s*/g, ' ');
  process.stderr.write(`prism: ${e.code}: ${detail}\n`);
  process.exitCode = Math.min(errnoOf(e.code), 125) || 1;
}

export async function main(argv: string[]): Promise<void> {
  // A reader that goes away (`prism ls --json | head`) ends the output, quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    fail(fromNodeError(e, 'writing the output'));
    process.exit();
  });
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end with 0; a usage error is EINVAL
      if (e.exitCode !== 0) fail(new PrismError('EINVAL', `${e.message.replace(/^error: /, '')} (prism --help)`));
      return;
    }
    // a bug rather than an outcome: the stack goes to the debug log (PRISM_LOG=debug)
    if (!(e instanceof PrismError) && typeof (e as { code?: unknown }).code !== 'string') log.debug({ err: e }, 'unexpected error');
    fail(fromNodeError(e));
  }
}
