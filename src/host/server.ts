// The host server: owns the store, serves each attached VM over TCP (and shared memory), commits on
// COMMIT and on a timer (group commits, fsyncs off the event loop: Store.commitDurable), and shuts
// down cleanly on SIGTERM.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PrismError } from '../errors.js';
import { RateLimitedLog, log } from '../log.js';
import { PROTOCOL_VERSION, WRITE_BEHIND_BYTES } from '../protocol/procs.js';
import { Store } from '../store/store.js';
import { checkVolumeName } from '../store/names.js';
import type { Channel } from '../vrpc/channel.js';
import { encodeRefusal, encodeWelcome, judgeHello } from '../vrpc/hello.js';
import { serveChannel } from '../vrpc/server.js';
import { TcpChannel, parseAddress } from '../vrpc/tcp.js';
import { ShmChannel } from '../vrpc/shm-channel.js';
import { doorbellAvailable } from '../native/doorbell.js';
import { IvshmemServer } from '../vrpc/ivshmem-server.js';
import { ivshmemPath, openRegion, shmPath, type OpenRegion } from '../vrpc/shm-region.js';
import { futexWake } from '../native/futex.js';
import { nativeAvailable } from '../native/ivshmem.js';
import { LIVE_STOPPING, LIVE_UP, inodesMappedElsewhere, type FileProblem, type Region } from '../ring/index.js';
import { META_SIZE, metaPath, openMetaTable } from '../metadata-share/file.js';
import { MetaPublisher } from '../metadata-share/publisher.js';
import { LOG_HEAD_OFFSET } from '../metadata-share/table.js';
import { ADMIN_SOCKET, AdminService } from './admin.js';
import { LoopShare, PreAuthGate, VmBudget, type BudgetLimits, type PreAuthLimits } from './budget.js';
import { Dispatcher, type DispatchHooks, type VmConfig } from './dispatch.js';
import { HostMetrics } from './metrics.js';
import type { VmCountersView } from './vm-counters.js';

/** The host as `prism host status` shows it. */
export interface HostStatus {
  pid: number;
  store: string;
  uptimeSeconds: number;
  vms: Array<{
    name: string; volumes: string[];
    /** Volumes its agents have mounted now. */
    mounted: string[];
    /** Volumes no other VM attaches, whose lease its agent holds (docs/agent.md). */
    lease: string[];
    /** An agent of it is there now (over any transport). */
    connected: boolean;
    /** How its agent reaches the host now: shared memory (with the doorbell), TCP, or none. */
    transport: string;
    tcpConnections: number;
    /** QEMU is connected to its ivshmem doorbell server. */
    qemuAttached: boolean;
  } & VmCountersView>;
}
import { hostSecret, tokensEqual, vmToken } from './secrets.js';

/** Resets of one VM's rings closer together than this count as "keeps corrupting them". */
const RESET_QUIET_MS = 1000;
/** The longest pause before a VM whose rings keep breaking is served again. */
const RESET_BACKOFF_MAX_MS = 1000;
/** Free space the store's disk keeps beyond what agents may have in flight, for agents not to wait at close. */
const ROOM_MARGIN_BYTES = 256 << 20;

export interface HostOptions {
  storeDir: string;
  vms: VmConfig[];
  /** Addresses for the TCP fallback: HOST:PORT (port 0 picks one) or unix:/path. */
  tcp?: string[];
  /** Commit pending changes at least this often (ms). */
  commitIntervalMs?: number;
  /** Serve each VM over a shared-memory region (default true when the addon is built). */
  shm?: boolean;
  /** Directory of the regions (default /dev/shm). */
  shmDir?: string;
  /** Share metadata with each shm-served VM through a read-only table (default true with shm). */
  meta?: boolean;
  /** Bytes of each VM's metadata table (a power of two; default 64 MiB). */
  metaSize?: number;
  /** How long a change waits for another VM's agent to acknowledge it before fencing that VM (ms; futex-woken agents, polling ones). */
  metaAckMs?: number;
  metaPollAckMs?: number;
  /** Each VM's resource budget (src/host/budget.ts has the defaults, docs/resource-model.md the why). */
  budget?: Partial<BudgetLimits>;
  /** Limits on TCP connections that have not authenticated yet. */
  preAuth?: Partial<PreAuthLimits>;
  /** A group that may map the regions and tables too (QEMU running as another user): mode 0660. */
  shmGroup?: number;
  /** Serve each VM's ivshmem doorbell on a Unix socket beside its region (default true when the addon is built). */
  doorbell?: boolean;
  /** Serve Prometheus metrics on HOST:PORT at /metrics (docs/metrics.md). */
  metrics?: string;
}

interface ShmVm {
  region: OpenRegion;
  /** The checks of its files (region, metadata table), run on the heartbeat. */
  checks: Array<() => FileProblem | undefined>;
  ch?: ShmChannel;
  /** Its ivshmem server, where a QEMU with an `ivshmem-doorbell` device connects. */
  ivshmem?: IvshmemServer;
  /** Why it is no longer served over shared memory. */
  detached?: string;
  warnedRemoved?: boolean;
  /** Unmap its files and remove the ones the host made (unless another process maps them). */
  close(): void;
}

/** The host stops serving a VM's region (the VM is removed, or the host stops): its agent stops waiting for it. */
function leaving(vm: ShmVm): void {
  vm.region.region.setDoorbell('host', false);
  vm.region.region.setLiveness('host', LIVE_STOPPING, process.pid);
  vm.ivshmem?.close();
}

/**
 * The shared-memory files of one VM: unmapped when it goes (removed, or the host stops), and removed
 * if this host made them (matched by inode) and no guest, agent or QEMU maps them any longer (a
 * restarted host takes those up again where they are).
 */
class VmFiles {
  private readonly unmaps: Array<() => void> = [];
  private readonly files: Array<{ path: string; ino: number }> = [];
  private closed = false;

  constructor(unmap: () => void) { this.unmaps.push(unmap); }
  mapped(unmap: () => void): void { this.unmaps.push(unmap); }
  made(path: string, ino: number): void { this.files.push({ path, ino }); }

  close(mapped: Set<number> = this.files.length ? inodesMappedElsewhere() : new Set()): void {
    if (this.closed) return;
    this.closed = true;
    // by inode: a file of another file system with the same number only keeps ours, never removes one
    const leftovers = this.files.filter((f) => fs.lstatSync(f.path, { throwIfNoEntry: false })?.ino === f.ino && !mapped.has(f.ino));
    for (const unmap of this.unmaps) unmap();
    for (const f of leftovers) fs.rmSync(f.path, { force: true });
  }
}

export class HostServer {
  readonly store: Store;
  private readonly dispatchers = new Map<string, Dispatcher>();
  /** Each VM's resource budget, shared by all its channels. */
  readonly budgets = new Map<string, VmBudget>();
  private readonly gate: PreAuthGate;
  /** How much of the event loop each VM has had lately (no VM may keep it from the others). */
  private readonly loopShare = new LoopShare();
  /** Guests and strangers choose how often these happen: logged at most once a second each. */
  private readonly refusals = new RateLimitedLog();
  private readonly garbage = new RateLimitedLog();
  /** Keeps every VM's metadata table coherent (src/metadata-share). */
  readonly meta: MetaPublisher;
  /** The metadata table file of each VM that has one. */
  readonly metaTables = new Map<string, string>();
  private readonly channels = new Set<Channel>();
  private readonly servers: net.Server[] = [];
  /** Listeners not shown in listenAddresses (the admin socket). */
  private readonly quietServers: net.Server[] = [];
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private admin: AdminService | undefined;
  /** The write verifier of this host instance: random per start (docs/durability.md). */
  readonly verifier: Buffer = crypto.randomBytes(8);

  private constructor(private readonly opts: HostOptions) {
    this.vms = [...opts.vms];
    this.meta = new MetaPublisher({ ackMs: opts.metaAckMs, pollAckMs: opts.metaPollAckMs });
    this.store = Store.open(opts.storeDir);
    this.gate = new PreAuthGate(opts.preAuth);
  }

  static async start(opts: HostOptions): Promise<HostServer> {
    if (opts.vms.length === 0) throw new PrismError('EINVAL', 'no VM to serve: give --vm NAME=VOLUME');
    const h = new HostServer(opts);
    try {
      await h.init();
    } catch (e) {
      await h.stop();
      throw e;
    }
    return h;
  }

  private async init(): Promise<void> {
    this.secret = hostSecret(this.store.dir);
    for (const vm of this.opts.vms) this.checkNewVm(vm);
    for (const vm of this.opts.vms) this.addVmNow(vm);
    for (const address of this.opts.tcp ?? []) await this.listen(address, (ch, peer) => this.accept(ch, peer));
    const admin = this.admin = new AdminService(this.store, this.meta.sink(null), this);
    await this.listen(`unix:${path.join(this.store.dir, ADMIN_SOCKET)}`, (ch) => {
      this.channels.add(ch);
      ch.onClose(() => this.channels.delete(ch));
      admin.serve(ch);
    }, false);
    if (this.opts.metrics !== undefined) {
      const m = new HostMetrics({
        store: this.store,
        vms: () => this.status().vms,
      });
      for (const d of this.dispatchers.values()) d.counters.observer = m; // and addVm for later ones
      this.metrics = m;
      this.metricsAddress = await m.listen(this.opts.metrics);
    }
    this.timer = setInterval(() => this.commitSafely(), this.opts.commitIntervalMs ?? commitIntervalFromEnv() ?? 1000);
    this.timer.unref();
  }

  /**
   * A durable commit, its time told to the metrics: a COMMIT's (every change so far) or the timer's
   * (timed: see Store.commitDurable).
   */
  private async commitTimed(timed = false): Promise<void> {
    const t0 = performance.now();
    // Most of a commit's synchronous work is hashing buffered blocks: done in slices first.
    await this.store.flushInSlices({ before: timed ? 'timed' : 'commit' });
    await this.store.commitDurable({ timed });
    this.metrics?.committed((performance.now() - t0) / 1000);
  }

  /**
   * Whether the store's file system has room for what every served VM may have in flight (its
   * agent's write-behind bound) and a margin: while it has, an agent with a volume of its own and no
   * quota need not wait at close for the host to take its posted changes (docs/agent.md).
   */
  private diskHasRoom(): boolean {
    try {
      const f = fs.statfsSync(this.store.dir);
      return f.bavail * f.bsize >= ROOM_MARGIN_BYTES + this.dispatchers.size * WRITE_BEHIND_BYTES;
    } catch {
      return false;
    }
  }

  private commitSafely(): void {
    this.meta.roomy(this.diskHasRoom());
    this.checkFiles();
    for (const [name, d] of this.dispatchers) {
      d.counters.tick();
      this.readMetaAnswers(name, d);
    }
    for (const vm of this.shm.values()) vm.region.region.heartbeat('host');
    if (this.store.pendingChanges > 0) this.commitTimed(true).catch((e: unknown) => log.error({ err: e }, 'commit failed'));
  }

  /** The addresses actually bound (after port 0). */
  get listenAddresses(): string[] {
    return this.servers.map((srv) => {
      const a = srv.address();
      return !a ? '?' : typeof a === 'string' ? `unix:${a}` : `${a.address}:${a.port}`;
    });
  }

  /** Each VM's TCP token, read once at start: a hello costs no file I/O (nor an I/O error thrown from a socket callback). */
  private readonly tokens = new Map<string, string>();

  tokenOf(vm: string): string {
    const t = this.tokens.get(vm);
    if (t === undefined) throw new PrismError('ENOENT', `no VM named ${JSON.stringify(vm)} is served`);
    return t;
  }

  /** The region file of each VM served over shared memory. */
  readonly regions = new Map<string, string>();
  /** Each VM's shared-memory files (a removed VM's are closed at once). */
  private readonly vmFiles = new Set<VmFiles>();
  private warnedNoShm = false;
  /** The VMs served now: those given at start, and those added since. */
  private readonly vms: VmConfig[];
  private secret: Buffer | undefined;
  /** Each VM's authenticated TCP connections. */
  private readonly tcpChannels = new Map<string, Set<Channel>>();
  /** Per VM served over shared memory: its files, its channel now, and why it was detached if it was. */
  private readonly shm = new Map<string, ShmVm>();
  private readonly startedAt = Date.now();
  private metrics: HostMetrics | undefined;
  /** Where /metrics is served (with --metrics). */
  metricsAddress: string | undefined;

  private checkNewVm(vm: VmConfig): void {
    checkVolumeName(vm.name);
    for (const v of vm.volumes) if (!this.store.has(checkVolumeName(v))) throw new PrismError('ENOENT', `no volume named ${JSON.stringify(v)} (for VM ${vm.name})`);
    if (this.dispatchers.has(vm.name) || this.vms.filter((x) => x.name === vm.name).length > 1) throw new PrismError('EEXIST', `VM ${vm.name} is served already`);
  }

  /**
   * Serve one more VM from now on (`prism host vm add`): as if it had been given at start. A volume it
   * shares with a VM whose guest kernel keeps file sizes itself (its agent's writeback cache, on a
   * kernel without FUSE_NOTIFY_PRUNE) is EBUSY unless forced: that guest would not see the other's writes.
   */
  addVm(vm: VmConfig, force = false): { region?: string; meta?: string } {
    if (this.stopped) throw new PrismError('EBUSY', 'the host is stopping');
    this.checkNewVm(vm);
    for (const v of vm.volumes) {
      const keeping = this.mountedBy(v).filter((other) => this.shm.get(other)?.region.region.metaListener().keepsSizes);
      if (keeping.length && !force) {
        throw new PrismError('EBUSY', `VM ${keeping.join(', ')} has volume ${v} mounted with a writeback cache its kernel cannot be told to drop (Linux before 6.18): it would not see another VM's writes (unmount it first, or --force)`);
      }
    }
    // Volumes it shares with VMs that held them alone: those VMs' agents must ask the host again.
    const sink = this.meta.sink(null);
    for (const v of vm.volumes) if (this.servedTo(v).length) sink.willChange?.(this.store.volume(v));
    this.vms.push(vm);
    try {
      this.addVmNow(vm);
    } catch (e) {
      this.removeVm(vm.name, true);
      throw e;
    }
    log.info({ vm: vm.name, volumes: vm.volumes }, 'VM added');
    return { region: this.regions.get(vm.name), meta: this.metaTables.get(vm.name) };
  }

  private addVmNow(vm: VmConfig): void {
    // Every VM's changes reach the tables of the VMs that have one, whatever its own transport.
    const hooks: DispatchHooks = {
      commit: () => this.commitTimed(), verifier: this.verifier,
      meta: this.opts.meta === false ? undefined : this.meta.sink(vm.name),
    };
    const d = new Dispatcher(this.store, vm, this.secret!, hooks);
    if (this.metrics) d.counters.observer = this.metrics;
    this.dispatchers.set(vm.name, d);
    this.budgets.set(vm.name, new VmBudget(vm.name, this.opts.budget, this.loopShare));
    this.tokens.set(vm.name, vmToken(this.store.dir, vm.name));
    if (this.opts.shm !== false) this.openRegion(vm.name, d);
  }

  /**
   * Stop serving a VM (`prism host vm rm`): its connections close, its shared-memory files go. EBUSY
   * while its agent is there, unless forced (the guest's mount then fails with ENOTCONN/EIO).
   */
  removeVm(name: string, force = false): void {
    if (!this.dispatchers.has(name)) throw new PrismError('ENOENT', `no VM named ${JSON.stringify(name)} is served`);
    if (this.agentPresent(name) && !force) throw new PrismError('EBUSY', `VM ${name} has its agent connected (--force removes it anyway: its mount fails)`);
    const shm = this.shm.get(name);
    if (shm) {
      shm.detached = 'removed';
      clearTimeout(this.resets.get(name)?.timer);
      shm.ch?.close();
      leaving(shm);
      shm.close();
    }
    for (const ch of this.tcpChannels.get(name) ?? []) ch.close();
    this.meta.remove(name);
    for (const m of [this.dispatchers, this.budgets, this.tokens, this.shm, this.regions, this.metaTables, this.resets, this.tcpChannels]) m.delete(name);
    this.vms.splice(this.vms.findIndex((v) => v.name === name), 1);
    log.info({ vm: name }, 'VM removed');
  }

  private openRegion(name: string, d: Dispatcher): void {
    const n = nativeAvailable();
    if (!n.ok) {
      if (this.opts.shm === true) throw new PrismError('ENOSYS', `shared memory is unavailable: ${n.reason}`);
      if (!this.warnedNoShm) log.warn({ reason: n.reason }, 'shared memory is unavailable; serving TCP only');
      this.warnedNoShm = true;
      return;
    }
    const file = shmPath(name, this.opts.shmDir);
    const r = openRegion(file, true, { group: this.opts.shmGroup });
    const files = new VmFiles(r.close);
    if (r.ino !== undefined) files.made(file, r.ino);
    const vm: ShmVm = { region: r, checks: [() => r.problem?.()], close: () => { files.close(); this.vmFiles.delete(files); } };
    try {
      vm.ivshmem = this.serveDoorbell(name, file, r.region);
      if (this.opts.meta !== false) vm.checks.push(this.shareMetadata(name, d, r.region, files));
    } catch (e) {
      vm.ivshmem?.close();
      this.meta.remove(name);
      this.metaTables.delete(name);
      files.close(); // nothing of this VM is left half made
      throw e;
    }
    r.region.setLiveness('host', LIVE_UP, process.pid);
    this.regions.set(name, file);
    this.shm.set(name, vm);
    this.vmFiles.add(files);
    this.serveRegion(name, d, r.region, file);
  }

  /** A VM's ivshmem server (docs/doorbell.md); without the addon, or when it fails, the VM's guest is polled. */
  private serveDoorbell(name: string, file: string, region: Region): IvshmemServer | undefined {
    if (this.opts.doorbell === false) return undefined;
    const n = doorbellAvailable();
    if (!n.ok) {
      if (this.opts.doorbell === true) throw new PrismError('ENOSYS', `the ivshmem doorbell is unavailable: ${n.reason}`);
      log.warn({ vm: name, reason: n.reason }, 'no ivshmem doorbell: this VM\'s guest is polled');
      return undefined;
    }
    let server: IvshmemServer;
    try {
      server = new IvshmemServer(ivshmemPath(name, this.opts.shmDir), file, {
        group: this.opts.shmGroup,
        onPeers: (connected) => region.setDoorbell('host', connected > 0),
      });
    } catch (e) {
      if (this.opts.doorbell === true) throw e;
      log.warn({ vm: name, err: (e as Error).message }, 'no ivshmem doorbell: this VM\'s guest is polled');
      return undefined;
    }
    return server;
  }

  /**
   * Whether each VM's files are still the ones the host made (on the heartbeat). One truncated (its
   * mapping is zero pages now: the addon caught the SIGBUS), or replaced by another file, stops that
   * VM's shared-memory service with a log line; the host and the other VMs go on.
   */
  private checkFiles(): void {
    for (const [name, vm] of this.shm) {
      if (vm.detached) continue;
      for (const check of vm.checks) {
        const p = check();
        if (!p) continue;
        if (p.kind === 'removed') {
          // The VM still maps the file and is served; only a restarted QEMU would not find it.
          if (!vm.warnedRemoved) log.warn({ vm: name, problem: p.message }, 'a shared-memory file of this VM was removed');
          vm.warnedRemoved = true;
          continue;
        }
        vm.detached = p.message;
        log.error({ vm: name, problem: p.message }, 'stopped serving this VM over shared memory: its file is not the one the host made');
        vm.region.region.setLiveness('host', LIVE_STOPPING, process.pid); // its agent stops waiting for us
        vm.ch?.close();
        break;
      }
    }
  }

  /** Give a VM its metadata table; its agent's listener words live in its VRPC region. Returns the table file's check. */
  private shareMetadata(name: string, d: Dispatcher, region: Region, files: VmFiles): () => FileProblem | undefined {
    const file = metaPath(name, this.opts.shmDir);
    const t = openMetaTable(file, this.opts.metaSize ?? META_SIZE, { group: this.opts.shmGroup });
    files.mapped(t.close);
    files.made(file, fs.statSync(file).ino); // made and locked by us just now
    this.metaTables.set(name, file);
    this.meta.roomy(this.diskHasRoom());
    this.meta.add({
      name, volumes: d.vm.volumes, key: d.key, table: t.table,
      // Volumes no other VM attaches (over any transport): its agent may post some changes (docs/agent.md).
      sole: this.soleVolumes(name, d.vm.volumes).map((vol) => {
        const v = this.store.volume(vol);
        return { id: v.rec.id, noQuota: !v.hasQuota() };
      }),
      listener: {
        read: () => region.metaListener(),
        wait: (seen, ms) => { region.waitMetaApplied(seen, ms); },
      },
      wake: () => { futexWake(t.buffer, LOG_HEAD_OFFSET, 1); },
    });
    return () => t.problem();
  }

  /** Per VM: how often its rings were reset lately, and the pending re-serve (see serveRegion). */
  private readonly resets = new Map<string, { last: number; delayMs: number; logged: number; timer?: NodeJS.Timeout }>();

  /**
   * Serve one VM's region; if the guest corrupts its rings, reset the region and serve it afresh.
   * A guest that keeps doing it is served again after a growing pause (up to RESET_BACKOFF_MAX_MS):
   * a reset costs the host a channel and a doorbell thread, and other VMs must not pay for it.
   */
  private serveRegion(name: string, d: Dispatcher, region: Region, file: string): void {
    const vm = this.shm.get(name);
    if (vm?.detached) return;
    let ch: ShmChannel;
    try {
      ch = new ShmChannel(region, 'host', { file, fileIno: vm?.region.ino, ivshmem: vm?.ivshmem });
    } catch (e) {
      // Nothing a guest writes makes this throw (ring constructors record bad words instead), but a
      // failure here must cost this VM its service, not the host its life.
      log.error({ vm: name, err: (e as Error).message }, 'cannot serve the shared-memory region');
      this.reserveLater(name, d, region, file, e as Error);
      return;
    }
    this.channels.add(ch);
    if (vm) vm.ch = ch;
    ch.onClose((err) => {
      this.channels.delete(ch);
      if (this.stopped || vm?.detached) return;
      this.reserveLater(name, d, region, file, err);
    });
    let greeted = false;
    const hello = (m: Uint8Array): boolean => {
      // The region is the VM's own, so a guest need not know its name ('' is this region's VM); another
      // VM or another version is refused with one message naming both.
      const v = judgeHello(m, (h) => (h.vm !== '' && h.vm !== name) || h.version !== PROTOCOL_VERSION
        ? new PrismError('EACCES', `this region serves VM ${name}, protocol ${PROTOCOL_VERSION}`) : undefined);
      if (!v.ok) {
        if (v.malformed) return false;
        ch.send(encodeRefusal(v.refusal));
        return true;
      }
      greeted = true;
      d.attached.clear(); // a new agent: it attaches what it mounts
      log.info({ vm: name }, 'VM attached over shared memory');
      ch.send(encodeWelcome());
      return true;
    };
    serveChannel(ch, (proc, args) => {
      if (!greeted) throw new PrismError('EACCES', 'handshake first');
      return d.call(proc, args);
    }, { onControl: hello, onGarbage: (e) => log.warn({ vm: name, err: e.message }, 'malformed request'), budget: this.budgets.get(name)!.attach(ch, false)! });
  }

  /** Reset a VM's rings and serve them again: at once, or after a pause if it keeps breaking them. */
  private reserveLater(name: string, d: Dispatcher, region: Region, file: string, err?: Error): void {
    const now = Date.now();
    const r = this.resets.get(name) ?? { last: 0, delayMs: 0, logged: 0 };
    this.resets.set(name, r);
    // Quiet is counted from when the VM was served again, not from the last reset: a guest that breaks
    // its rings as soon as the longest pause ends stays at that pause.
    r.delayMs = now - (r.last + r.delayMs) < RESET_QUIET_MS ? Math.min(RESET_BACKOFF_MAX_MS, Math.max(1, r.delayMs * 2)) : 0;
    r.last = now;
    region.reset();
    // One line per reset, at most one a second: a guest must not flood the host's log either.
    if (now - r.logged >= 1000) {
      r.logged = now;
      log.warn({ vm: name, err: err?.message, pauseMs: r.delayMs }, r.delayMs ? 'shared-memory rings reset again: the guest keeps corrupting them; serving it after a pause' : 'shared-memory rings reset');
    }
    const serve = () => { r.timer = undefined; if (!this.stopped) this.serveRegion(name, d, region, file); };
    if (r.delayMs === 0) serve();
    else { r.timer = setTimeout(serve, r.delayMs); r.timer.unref(); }
  }

  private listen(address: string, onConnection: (ch: TcpChannel, peer: string) => void, announce = true): Promise<void> {
    const where = parseAddress(address);
    const srv = net.createServer((socket) => onConnection(new TcpChannel(socket), socket.remoteAddress ?? 'unix'));
    (announce ? this.servers : this.quietServers).push(srv);
    return new Promise((resolve, reject) => {
      srv.once('error', (e) => reject(new PrismError('EIO', `cannot listen on ${address}: ${e.message}`)));
      if ('path' in where) {
        fs.rmSync(where.path, { force: true });
        srv.listen(where.path, () => { fs.chmodSync(where.path, 0o600); resolve(); });
      } else {
        srv.listen(where.port, where.host, () => resolve());
      }
    });
  }

  /**
   * A new TCP connection: the first message must be a hello with the VM's token. Until then it is
   * held to the pre-authentication limits (small frames, little time, few at once: budget.ts).
   */
  private accept(ch: TcpChannel, peer: string): void {
    this.channels.add(ch);
    ch.onClose(() => this.channels.delete(ch));
    const refuse = (e: PrismError) => {
      this.refusals.warn({ peer, code: e.code, message: e.detail }, 'connection refused');
      ch.pause(); // nothing more is read from it
      ch.send(encodeRefusal(e));
      setTimeout(() => ch.close(), 50).unref();
    };
    this.gate.admit(ch, peer, () => refuse(new PrismError('EACCES', `no handshake in ${this.gate.limits.handshakeMs} ms`)));
    ch.onMessage((m) => {
      const v = judgeHello(m, (h) => {
        const token = this.tokens.get(h.vm);
        return !this.dispatchers.has(h.vm) || token === undefined || !tokensEqual(h.token, token) ? new PrismError('EACCES', 'unknown VM or wrong token') : undefined;
      });
      if (!v.ok) { refuse(v.refusal); return; }
      const hello = v.hello;
      const d = this.dispatchers.get(hello.vm)!;
      const budget = this.budgets.get(hello.vm)!.attach(ch, true);
      if (!budget) { refuse(new PrismError('EBUSY', `VM ${hello.vm} has ${this.budgets.get(hello.vm)!.limits.maxConnections} connections already`)); return; }
      this.gate.authenticated(ch);
      let mine = this.tcpChannels.get(hello.vm);
      if (!mine) { mine = new Set(); this.tcpChannels.set(hello.vm, mine); }
      mine.add(ch);
      ch.onClose(() => { this.tcpChannels.get(hello.vm)?.delete(ch); });
      log.info({ peer, vm: hello.vm }, 'VM connected over TCP');
      ch.send(encodeWelcome());
      serveChannel(ch, (proc, args) => d.call(proc, args), {
        onGarbage: (e) => this.garbage.warn({ vm: d.vm.name, err: e.message }, 'malformed request'),
        budget,
      });
    });
  }

  /**
   * The VMs that have `volume` mounted now: an agent attached it and is there still (its liveness word
   * in the VM's region says it runs, or it has a TCP connection).
   */
  mountedBy(volume: string): string[] {
    return [...this.dispatchers].filter(([name, d]) => d.attached.has(volume) && this.agentPresent(name)).map(([name]) => name);
  }

  /** A VM's authenticated TCP connections now. */
  private tcpCount(name: string): number {
    return this.tcpChannels.get(name)?.size ?? 0;
  }

  /** Whether an agent of the VM is there now: its liveness word says it runs, or it has a TCP connection. */
  private agentPresent(name: string): boolean {
    return this.tcpCount(name) > 0 || this.shm.get(name)?.region.region.liveness('guest').state === LIVE_UP;
  }

  /** The VMs that may attach a volume (their --vm NAME=VOLUMES). */
  servedTo(volume: string): string[] {
    return this.vms.filter((vm) => vm.volumes.includes(volume)).map((vm) => vm.name);
  }

  /** The volumes of a VM that no other VM attaches: its agent holds their lease (it may answer and post changes itself). */
  private soleVolumes(name: string, volumes: string[]): string[] {
    return volumes.filter((v) => this.servedTo(v).every((other) => other === name));
  }

  /** The hits and misses of its metadata table its agent reports in its region. */
  private readMetaAnswers(name: string, d: Dispatcher): void {
    const shm = this.shm.get(name);
    if (shm && !shm.detached) d.counters.metaAnswers(shm.region.region.metaAnswers());
  }

  /** What `prism host status` shows. */
  status(): HostStatus {
    for (const [name, d] of this.dispatchers) this.readMetaAnswers(name, d);
    return {
      pid: process.pid, store: this.store.dir, uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      vms: [...this.dispatchers].map(([name, d]) => {
        const shm = this.shm.get(name);
        const tcp = this.tcpCount(name);
        const overShm = shm?.region.region.liveness('guest').state === LIVE_UP;
        const agent = tcp > 0 || overShm; // agentPresent(name), its two reads made once
        const present = !shm?.detached && agent;
        const transport = shm?.detached ? `detached: ${shm.detached}` : overShm ? (shm?.ivshmem && shm.ivshmem.connected > 0 ? 'shared memory, doorbell' : 'shared memory') : tcp > 0 ? 'TCP' : 'none';
        return {
          name, volumes: d.vm.volumes, mounted: agent ? [...d.attached] : [], lease: this.soleVolumes(name, d.vm.volumes),
          connected: present, transport, tcpConnections: tcp, qemuAttached: (shm?.ivshmem?.connected ?? 0) > 0, ...d.counters.view(),
        };
      }),
    };
  }

  /** Stop accepting, close connections, commit and release the store. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const r of this.resets.values()) clearTimeout(r.timer);
    await this.metrics?.close();
    const closed = Promise.all([...this.servers, ...this.quietServers].map((srv) => new Promise<void>((r) => srv.close(() => r()))));
    for (const ch of this.channels) ch.close();
    await closed;
    await this.admin?.idle(); // an import or gc of a closed connection stops at its next step
    for (const vm of this.shm.values()) leaving(vm);
    // A VM's files go with the host unless a guest or QEMU still maps them. /proc is read once for all.
    const mapped = this.vmFiles.size ? inodesMappedElsewhere() : new Set<number>();
    for (const files of this.vmFiles) files.close(mapped);
    await this.store.idle();
    this.store.close();
  }
}

/** PRISM_COMMIT_INTERVAL_MS: how often the host commits on its own (tests lengthen it to see what only COMMIT makes durable). */
function commitIntervalFromEnv(): number | undefined {
  const v = Number(process.env.PRISM_COMMIT_INTERVAL_MS);
  return Number.isSafeInteger(v) && v > 0 ? v : undefined;
}
