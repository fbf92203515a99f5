// A fuzzer for the host's guest-facing surface, run against a real host process: random and mutated
// VRPC frames over TCP (after authenticating) and over a shared-memory region (raw ring records),
// requests with extreme arguments (huge sizes and offsets, forged handles, wrong types), ring control
// words mutated after resets and while requests are in flight (hostile-guest.ts), a response ring the
// guest never releases, and a guest racing host restarts. Meanwhile a bystander VM keeps calling NULL.
//
// Used by test/integration/fuzz-frames.test.ts (10^5 frames per transport) and by `npm run fuzz`:
//   node dist/test/helpers/fuzz.js [--frames N] [--seed S] [--restarts R] [--full-range]
// which prints frames, resets and the host's RSS before and after.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeControl, decodeRequest, decodeResponse, encode, encodeRequest } from '../../src/protocol/codec.js';
import { MAX_IO, PROCS, PROTOCOL_VERSION, Proc } from '../../src/protocol/procs.js';
import { argFields } from '../../src/protocol/validate.js';
import { map, unmap } from '../../src/native/memory.js';
import { Region, RingCorrupt, type RingConsumer, type RingProducer } from '../../src/ring/index.js';
import type { VrpcClient } from '../../src/vrpc/client.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { prism, startHost, type RunningHost } from './host.js';

const hostileJs = fileURLToPath(new URL('./hostile-guest.js', import.meta.url));

/** xorshift32: reproducible from a seed. */
export class Rng {
  private s: number;
  constructor(seed: number) { this.s = (seed >>> 0) || 0x9e3779b9; }
  u32(): number { let s = this.s; s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; this.s = s >>> 0; return this.s; }
  below(n: number): number { return this.u32() % n; }
  pick<T>(a: readonly T[]): T { return a[this.below(a.length)]!; }
  chance(p: number): boolean { return this.u32() / 2 ** 32 < p; }
  bytes(n: number): Buffer { const b = Buffer.allocUnsafe(n); for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff; return b; }
}

/** Every procedure the protocol defines (a new one is fuzzed from the day it is added). */
const FUZZED = Object.keys(PROCS).map(Number);
const BIG = [0, 1, 7, 4095, 4096, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 50 - 1, 2 ** 50, 2 ** 50 + 1, Number.MAX_SAFE_INTEGER];
const WRONG: unknown[] = [-1, 1.5, null, true, 'x', [], {}, Buffer.alloc(0), 2 ** 64, -(2 ** 53), Number.NaN, Number.POSITIVE_INFINITY];

export interface GenOptions {
  /** Sizes and lengths up to 2^50 everywhere; off: FALLOCATE ranges stay below 2^32 (issue 11 item 2 walks them). */
  fullRange?: boolean;
}

/** Requests: well-formed with extreme values, wrong in type or arity, or mutated bytes of one. */
export class RequestGen {
  private readonly handles: Buffer[] = [];
  private readonly names = ['a', 'b', 'c', 'dir', 'f', 'link', 'x'].map((n) => Buffer.from(n));

  constructor(private readonly rng: Rng, root: Buffer, private readonly opts: GenOptions = {}) {
    this.handles.push(root);
  }

  /** Handles seen in replies join the pool (bounded), so requests reach real inodes too. */
  learn(result: unknown): void {
    if (!Array.isArray(result)) return;
    for (const v of result) {
      if (Buffer.isBuffer(v) && v.length >= 16 && v.length <= 64 && this.handles.length < 256 && this.rng.chance(0.5)) this.handles.push(v);
    }
  }

  private handle(): unknown {
    const r = this.rng.below(20);
    if (r < 14) return this.rng.pick(this.handles);
    if (r < 16) { const h = Buffer.from(this.rng.pick(this.handles)); h[this.rng.below(h.length)] ^= 1 << this.rng.below(8); return h; }
    if (r < 18) return this.rng.bytes(1 + this.rng.below(64));
    return this.rng.chance(0.5) ? this.rng.bytes(65 + this.rng.below(64)) : this.rng.pick(WRONG);
  }

  private value(kind: string, proc: number): unknown {
    const rng = this.rng;
    if (rng.chance(0.03)) return rng.pick(WRONG);
    switch (kind) {
      case 'fh': return this.handle();
      case 'name': case 'lookupName': {
        const r = rng.below(12);
        if (r < 8) return rng.pick(this.names);
        return [Buffer.from('.'), Buffer.from('..'), Buffer.alloc(255, 0x61), Buffer.alloc(256, 0x61), Buffer.from('a/b'), Buffer.from([0x61, 0]), Buffer.alloc(0)][rng.below(7)];
      }
      case 'xname': return rng.chance(0.8) ? Buffer.from(`user.${rng.below(4)}`) : rng.pick([Buffer.alloc(256, 0x61), Buffer.alloc(0), Buffer.from('trusted.x')]);
      case 'xvalue': return rng.bytes(rng.pick([0, 1, 100, 4096]));
      case 'target': return rng.chance(0.8) ? Buffer.from('a/../b') : rng.pick([Buffer.alloc(4096, 0x61), Buffer.alloc(0)]);
      case 'data': return rng.bytes(rng.pick([0, 1, 512, 4096]));
      case 'cookie': return rng.chance(0.7) ? Buffer.alloc(0) : rng.bytes(rng.pick([1, 8, 255, 300]));
      case 'volume': return rng.pick(['fz1', 'fz2', 'nope', '', 'x'.repeat(65)]);
      case 'u32': return rng.chance(0.5) ? rng.pick([0, 0o644, 0o755, 0o100644, 0o170644, 0o030644, 0o020644, 65534]) : rng.pick(BIG);
      case 'u53': case 'offset': return this.size(proc);
      case 'count': return rng.pick([0, 1, 4096, 65536, MAX_IO, MAX_IO + 1, 2 ** 32]);
      case 'small': return rng.below(8) === 0 ? rng.pick([255, 256, 16, 0x12]) : rng.below(4);
      case 'bool': return rng.chance(0.5);
      case 'gids': return Array.from({ length: rng.pick([0, 1, 64, 65]) }, () => rng.u32());
      case 'setattr': return [
        rng.chance(0.5) ? null : rng.pick([0o644, 0o7777, 0o10000]),
        rng.chance(0.7) ? null : rng.u32(), rng.chance(0.7) ? null : rng.u32(),
        rng.chance(0.5) ? null : this.size(proc),
        rng.pick([null, true, [0, 0], [2 ** 40, 999_999_999], [-1, 1_000_000_000]]),
        rng.pick([null, true, [1, 1]]),
      ];
      case 'time': return rng.pick([[0, 0], [2 ** 40, 999_999_999], [-1, 1_000_000_000], [1.5, 0], [1]]);
      default: return null;
    }
  }

  private size(proc: number): number {
    const v = this.rng.pick(BIG);
    // Until the store's zeroing walks only stored blocks (item 2), a punch over 2^50 takes hours.
    return !this.opts.fullRange && proc === Proc.FALLOCATE ? Math.min(v, 2 ** 32) : v;
  }

  /** The next request frame, and whether the host should decode it (and so answer it). */
  next(id: number): { bytes: Buffer; decodable: boolean } {
    const rng = this.rng;
    let proc = rng.chance(0.02) ? rng.pick([22, 63, 127, 1000, 2 ** 31]) : rng.pick(FUZZED);
    // Each COMMIT (and stable WRITE) is a full-store fsync, milliseconds each: rare, or they are all
    // the fuzzer measures.
    if (proc === Proc.COMMIT && !rng.chance(0.05)) proc = Proc.GETATTR;
    const fields = argFields(proc) ?? ['u32'];
    let args: unknown[] = fields.map((k) => this.value(k, proc));
    if (proc === Proc.WRITE && !rng.chance(0.02)) args[3] = 0;
    if (rng.chance(0.02)) args = rng.chance(0.5) ? args.slice(1) : [...args, 0];
    let bytes = encodeRequest({ id, proc, args });
    if (rng.chance(0.05)) bytes = this.mutate(bytes);
    let decodable = true;
    try { decodeRequest(bytes); } catch { decodable = false; }
    return { bytes, decodable };
  }

  private mutate(b: Buffer): Buffer {
    const rng = this.rng;
    const out = Buffer.from(b);
    switch (rng.below(4)) {
      case 0: for (let i = 0; i < 1 + rng.below(4); i++) out[rng.below(out.length)] ^= 1 << rng.below(8); return out;
      case 1: return out.subarray(0, rng.below(out.length));
      case 2: return Buffer.concat([out, rng.bytes(1 + rng.below(16))]);
      default: return rng.bytes(1 + rng.below(64));
    }
  }
}

export interface Totals { frames: number; replies: number; garbage: number; reconnects: number; resets: number }
const zero = (): Totals => ({ frames: 0, replies: 0, garbage: 0, reconnects: 0, resets: 0 });

/** The host's resident memory (bytes). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** A TCP connection speaking raw frames: hello with the token, then pipelined requests. */
class RawTcp {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  readonly replies: Buffer[] = [];
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const len = this.buf.readUInt32BE(0);
        this.replies.push(this.buf.subarray(4, 4 + len));
        this.buf = this.buf.subarray(4 + len);
      }
      this.wake();
    });
    socket.on('close', () => { this.closed = true; this.wake(); });
    socket.on('error', () => { this.closed = true; this.wake(); });
  }

  private wake(): void { for (const w of this.waiters.splice(0)) w(); }

  static async open(port: number, vm: string, token: string): Promise<RawTcp> {
    const s = await new Promise<net.Socket>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1', () => resolve(c));
      c.once('error', reject);
    });
    s.setNoDelay(true);
    const t = new RawTcp(s);
    t.send(encode(['prism-vrpc', PROTOCOL_VERSION, vm, token]));
    await t.until(() => t.replies.length > 0, 5000);
    const hello = t.replies.shift();
    const v = hello ? decodeControl(hello) : undefined;
    if (!Array.isArray(v) || v[0] !== 'ok') throw new Error(`handshake refused: ${JSON.stringify(v)}`);
    return t;
  }

  send(b: Uint8Array): void {
    const h = Buffer.allocUnsafe(4);
    h.writeUInt32BE(b.length, 0);
    this.socket.write(Buffer.concat([h, b]));
  }

  until(cond: () => boolean, ms: number): Promise<boolean> {
    if (cond() || this.closed) return Promise.resolve(cond());
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(cond()), ms);
      const check = () => { if (cond() || this.closed) { clearTimeout(timer); resolve(cond()); } else this.waiters.push(check); };
      this.waiters.push(check);
    });
  }

  close(): void { this.socket.destroy(); }
}

/** Frames over TCP; reconnects when the host closes the connection (after garbage). */
export async function fuzzTcp(port: number, token: string, frames: number, rng: Rng, gen: GenOptions): Promise<Totals> {
  const tot = zero();
  let conn = await RawTcp.open(port, 'fuzz', token);
  let g = new RequestGen(rng, await attachTcp(conn), gen);
  let expected = 0;
  let id = 1;
  while (tot.frames < frames) {
    if (conn.closed) {
      tot.reconnects++;
      conn = await RawTcp.open(port, 'fuzz', token);
      g = new RequestGen(rng, await attachTcp(conn), gen);
      expected = 0;
    }
    for (let i = 0; i < 64 && tot.frames < frames; i++) {
      const f = g.next(id++);
      conn.send(f.bytes);
      tot.frames++;
      if (f.decodable) expected++; else tot.garbage++;
    }
    await conn.until(() => conn.replies.length >= expected, 10_000);
    for (const r of conn.replies.splice(0)) { tot.replies++; expected--; try { g.learn(decodeResponse(r).result); } catch { /* an error reply */ } }
    expected = Math.max(0, expected);
  }
  conn.close();
  return tot;
}

async function attachTcp(conn: RawTcp): Promise<Buffer> {
  conn.send(encodeRequest({ id: 0, proc: Proc.ATTACH, args: ['fz1'] }));
  await conn.until(() => conn.replies.length > 0, 5000);
  const r = decodeResponse(conn.replies.shift()!);
  if (r.errno !== 0) throw new Error(`ATTACH failed: ${String(r.result)}`);
  return (r.result as unknown[])[0] as Buffer;
}

/** A guest speaking raw ring records on a region (as a driver in a VM would). */
class RawShm {
  private readonly buf: ArrayBuffer;
  private region!: Region;
  private tx!: RingProducer;
  private rx!: RingConsumer;
  private gen = 0;

  constructor(file: string) { this.buf = map(file, {}); }

  /** (Re)attach to the current rings and say hello; false if the host does not answer. */
  async attach(deadlineMs = 5000): Promise<boolean> {
    const until = Date.now() + deadlineMs;
    while (Date.now() < until) {
      try {
        this.region = Region.attach(this.buf);
        this.gen = this.region.generation;
        const e = this.region.endpoints('guest', 0);
        this.tx = e.tx; this.rx = e.rx;
        while (this.rx.read());
        if (this.tx.write(encode(['prism-vrpc', PROTOCOL_VERSION, '', '']))) {
          const reply = await this.take(1000, (m) => { const v = decodeControl(m); return Array.isArray(v) && v[0] === 'ok'; });
          if (reply) return true;
        }
      } catch {
        // Broken rings or a header being rewritten (a host restarting): look again.
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }

  get stale(): boolean { return this.region.generation !== this.gen; }

  /** Read replies until `ok` accepts one or the time is up. */
  private async take(ms: number, ok: (m: Uint8Array) => boolean): Promise<boolean> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      for (let m = this.rx.read(); m; m = this.rx.read()) { try { if (ok(m)) return true; } catch { /* not it */ } }
      await new Promise((r) => setImmediate(r));
    }
    return false;
  }

  /** Send one frame; false when the ring is full. Throws RingCorrupt on broken rings. */
  send(b: Uint8Array): boolean { return this.tx.write(b); }

  /** Replies waiting now. */
  drain(each: (m: Uint8Array) => void): number {
    let n = 0;
    for (let m = this.rx.read(); m; m = this.rx.read()) { each(m); n++; }
    return n;
  }

  /** Peek without releasing (the withheld-ring phase). */
  holdAll(): number { let n = 0; while (this.rx.peek()) { n++; break; } return n; }

  close(): void { unmap(this.buf); }
}

/** Frames over shared memory; undecodable ones are kept under the host's garbage limit per session. */
export async function fuzzShm(file: string, frames: number, rng: Rng, gen: GenOptions): Promise<Totals> {
  const tot = zero();
  const g = new RawShm(file);
  try {
    if (!(await g.attach())) throw new Error('the host does not answer on the region');
    let reqs = new RequestGen(rng, await attachShm(g), gen);
    let garbageHere = 0, id = 1, lastGen = -1, inFlight = 0, waited = 0, lastReset = performance.now();
    while (tot.frames < frames) {
      try {
        if (g.stale) throw new RingCorrupt('reset');
        // A window of requests in flight, so that frames counted are frames the host worked on.
        for (let i = 0; i < 64 && tot.frames < frames && inFlight < 256; i++) {
          const f = reqs.next(id++);
          // The host resets the rings past 16 undecodable records; resets closer than a second apart
          // make it pause (its defence against a guest that keeps breaking them): pace them.
          if (!f.decodable && garbageHere >= 12 && performance.now() - lastReset < 1500) continue;
          if (!g.send(f.bytes)) break;
          tot.frames++;
          if (!f.decodable) { tot.garbage++; garbageHere++; } else inFlight++;
        }
        await new Promise((r) => setImmediate(r));
        const got = g.drain((m) => { try { reqs.learn(decodeResponse(m).result); } catch { /* hello or error */ } });
        tot.replies += got;
        inFlight = Math.max(0, inFlight - got);
        // A reply that never comes (its request was lost in a reset): do not wait for it forever.
        waited = got ? 0 : waited + 1;
        if (waited > 5000) { inFlight = 0; waited = 0; }
      } catch (e) {
        if (!(e instanceof RingCorrupt)) throw e;
        tot.reconnects++;
        if (!(await g.attach())) throw new Error('the host stopped answering on the region');
        const now = (g as unknown as { gen: number }).gen;
        if (now !== lastGen) { tot.resets++; lastGen = now; lastReset = performance.now(); }
        reqs = new RequestGen(rng, await attachShm(g), gen);
        garbageHere = 0;
        inFlight = 0;
      }
    }
  } finally {
    g.close();
  }
  return tot;
}

async function attachShm(g: RawShm): Promise<Buffer> {
  g.send(encodeRequest({ id: 0, proc: Proc.ATTACH, args: ['fz1'] }));
  for (let i = 0; i < 5000; i++) {
    let root: Buffer | undefined;
    g.drain((m) => { try { const r = decodeResponse(m); if (r.id === 0 && r.errno === 0) root = (r.result as unknown[])[0] as Buffer; } catch { /* other */ } });
    if (root) return root;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error('no reply to ATTACH over shared memory');
}

/** A guest that fills its response ring with READ replies and never releases them; released at the end. */
export async function withholdResponses(file: string, seconds: number): Promise<{ sent: number }> {
  const g = new RawShm(file);
  try {
    if (!(await g.attach())) throw new Error('no host on the region');
    const root = await attachShm(g);
    const name = Buffer.from(`withheld-${process.pid}`);
    g.send(encodeRequest({ id: 1, proc: Proc.CREATE, args: [root, name, 0o644, 0, 0, false] }));
    let fh: Buffer | undefined;
    let errno: number | undefined;
    for (let i = 0; i < 2000 && !fh && errno === undefined; i++) {
      g.drain((m) => {
        const r = decodeResponse(m);
        if (r.id !== 1) return;
        if (r.errno === 0) fh = (r.result as unknown[])[0] as Buffer;
        else errno = r.errno;
      });
      await new Promise((r) => setTimeout(r, 1));
    }
    // Which of the two (an error, or no reply at all) tells where to look.
    if (!fh) throw new Error(errno === undefined ? 'CREATE: no reply within 2 s' : `CREATE failed: errno ${errno}`);
    g.send(encodeRequest({ id: 2, proc: Proc.WRITE, args: [fh, 0, Buffer.alloc(256 << 10, 7), 0] }));
    await new Promise((r) => setTimeout(r, 50));
    g.drain(() => {});
    // 64 READs of 256 KiB: the 8 MiB ring fills, the rest waits in the host. Nothing is released.
    let sent = 0;
    for (let i = 0; i < 64; i++) if (g.send(encodeRequest({ id: 100 + i, proc: Proc.READ, args: [fh, 0, 256 << 10] }))) sent++;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    g.drain(() => {}); // let go: the host sends the rest
    await new Promise((r) => setTimeout(r, 100));
    g.drain(() => {});
    return { sent };
  } finally {
    g.close();
  }
}

/** Run the hostile guest (ring words) for a while; its report. */
export function hostileGuest(file: string, mode: string, seconds: number, seed: number): Promise<{ writes: number; resets: number }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [hostileJs, file, mode, String(seconds), String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { writes: number; resets: number }) : reject(new Error(`hostile guest: ${code} ${err}`))));
  });
}

/** A VM that is not attacking: NULL every few ms; counts answers, failures and the slowest. */
export class Bystander {
  answered = 0;
  failures = 0;
  worstMs = 0;
  private running = true;
  private done: Promise<void>;
  private client: VrpcClient | undefined;

  constructor(private readonly file: string) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      try {
        this.client ??= await connectShm(this.file, 'other', { timeoutMs: 10_000, handshakeMs: 10_000 });
        const t0 = performance.now();
        await this.client.call(Proc.NULL);
        this.answered++;
        this.worstMs = Math.max(this.worstMs, performance.now() - t0);
      } catch {
        this.failures++;
        this.client?.close();
        this.client = undefined;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Forget failures so far (across a host restart, the bystander loses its host too). */
  forgive(): void { this.failures = 0; }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    this.client?.close();
  }
}

export interface FuzzSetup { store: string; dir: string; host: RunningHost; token: string; restart(how: 'SIGKILL' | 'SIGTERM'): Promise<void>; cleanup(): Promise<void> }

/** A store with fz1 (the fuzzed VM's, 64 MiB quota) and fz2 (the bystander's), and a host serving both. */
export async function fuzzSetup(): Promise<FuzzSetup> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-fuzz-'));
  const store = path.join(base, 'store');
  for (const [v, q] of [['fz1', '64M'], ['fz2', '64M']]) {
    const r = prism(store, ['volume', 'create', v, '--quota', q]);
    if (r.code !== 0) throw new Error(r.err);
  }
  const dir = fs.mkdtempSync('/dev/shm/prism-fuzz-');
  const args = ['--shm-dir', dir, '--meta-size', '1', '--vm', 'fuzz=fz1', '--vm', 'other=fz2'];
  const s: FuzzSetup = {
    store, dir, host: await startHost(store, args),
    token: fs.readFileSync(path.join(store, 'vms', 'fuzz.token'), 'utf8').trim(),
    restart: async (how) => {
      const gone = new Promise((r) => s.host.child.once('exit', r));
      s.host.child.kill(how);
      await gone;
      s.host = await startHost(store, args);
    },
    cleanup: async () => {
      s.host.child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
  return s;
}

export interface FuzzReport {
  tcp: Totals; shm: Totals; ringWords: { writes: number; resets: number }; withheld: number; restarts: number;
  rssBefore: number; rssAfter: number; bystander: { answered: number; failures: number; worstMs: number }; seconds: number;
}

/** Everything, in order; the host must be alive at the end (checked by the caller). */
export async function fuzzAll(s: FuzzSetup, o: { frames: number; seed: number; restarts: number; hostileSeconds: number; verbose?: boolean; skipTcp?: boolean } & GenOptions): Promise<FuzzReport> {
  const t0 = performance.now();
  const rng = new Rng(o.seed);
  const regionFile = shmPath('fuzz', s.dir);
  const by = new Bystander(shmPath('other', s.dir));
  await new Promise((r) => setTimeout(r, 200));
  const rssBefore = rssOf(s.host.child.pid!);
  const lap = (what: string) => { if (o.verbose) console.log(`  ${what} done at ${((performance.now() - t0) / 1000).toFixed(1)} s`); };
  const tcp = o.skipTcp ? zero() : await fuzzTcp(s.host.port, s.token, o.frames, rng, o);
  lap('tcp frames');
  const shm = await fuzzShm(regionFile, o.frames, rng, o);
  lap('shm frames');
  const ringWords = await hostileGuest(regionFile, 'mixed', o.hostileSeconds, o.seed);
  lap('ring words');
  const { sent: withheld } = await withholdResponses(regionFile, 1);
  lap('withheld ring');
  const rssAfter = rssOf(s.host.child.pid!);
  // Host restarts raced by a guest scribbling on its region (the bystander loses its host too).
  const race = o.restarts > 0 ? hostileGuest(regionFile, 'mixed', Math.max(2, o.restarts * 1.5), o.seed + 1) : Promise.resolve(null);
  for (let i = 0; i < o.restarts; i++) await s.restart(i % 2 ? 'SIGTERM' : 'SIGKILL');
  await race;
  by.forgive();
  const okAfter = by.answered;
  await new Promise((r) => setTimeout(r, 1500));
  await by.stop();
  if (by.answered === okAfter) by.failures++; // not answered again after the restarts
  return {
    tcp, shm, ringWords, withheld, restarts: o.restarts, rssBefore, rssAfter,
    bystander: { answered: by.answered, failures: by.failures, worstMs: by.worstMs }, seconds: (performance.now() - t0) / 1000,
  };
}

async function main(): Promise<void> {
  const arg = (name: string, dflt: number) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
  const o = {
    frames: arg('--frames', 1_000_000), seed: arg('--seed', Date.now() & 0xffff), restarts: arg('--restarts', 10),
    hostileSeconds: arg('--hostile-seconds', 20), fullRange: process.argv.includes('--full-range'), verbose: true, skipTcp: process.argv.includes('--skip-tcp'),
  };
  console.log(`fuzz: ${o.frames} frames per transport, seed ${o.seed}, ${o.restarts} host restarts${o.fullRange ? ', full range' : ''}`);
  const s = await fuzzSetup();
  try {
    const r = await fuzzAll(s, o);
    const alive = s.host.child.exitCode === null && s.host.child.signalCode === null;
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    console.log(`tcp: ${r.tcp.frames} frames, ${r.tcp.replies} replies, ${r.tcp.garbage} undecodable, ${r.tcp.reconnects} reconnects`);
    console.log(`shm: ${r.shm.frames} frames, ${r.shm.replies} replies, ${r.shm.garbage} undecodable, ${r.shm.reconnects} re-attaches, ${r.shm.resets} resets seen`);
    console.log(`ring words: ${r.ringWords.writes} corrupting writes, ${r.ringWords.resets} resets; withheld response ring: ${r.withheld} READs of 256 KiB`);
    console.log(`host restarts raced by a guest: ${r.restarts}; bystander VM: ${r.bystander.answered} NULLs answered, ${r.bystander.failures} failures after the restarts, slowest ${r.bystander.worstMs.toFixed(1)} ms`);
    console.log(`host RSS before ${mib(r.rssBefore)}, after ${mib(r.rssAfter)} (growth ${mib(r.rssAfter - r.rssBefore)}); host alive: ${alive}; ${r.seconds.toFixed(1)} s`);
    if (!alive || r.bystander.failures > 0) process.exitCode = 1;
  } catch (e) {
    console.error(`host stderr (last lines):\n${s.host.stderr().split('\n').slice(-15).join('\n')}`);
    throw e;
  } finally {
    await s.cleanup();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((e) => { console.error(e); process.exit(1); });
}
