// The VRPC benchmark: round trips and READ throughput between a client here and `prism host serve`
// in another process, over shared memory (futex and polling waits), TCP loopback and a Unix socket.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hdr from 'hdr-histogram-js';
import { table } from '../src/cli/format.js';
import { Proc } from '../src/protocol/procs.js';
import { nativeAvailable } from '../src/native/ivshmem.js';
import { Store } from '../src/store/store.js';
import { connectTcp } from '../src/vrpc/client.js';
import { SyncShmClient } from '../src/vrpc/shm-sync-client.js';
import { shmPath } from '../src/vrpc/shm-region.js';

const prismBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/prism.js');
const FILE_SIZE = 64 * 1024 * 1024;

type Call = (proc: Proc, args: unknown[]) => unknown[] | Promise<unknown[]>;

/** One queue pair has one client at a time: transports are opened one after the other. */
interface Transport { name: string; open(): Promise<{ call: Call; close(): void }> }

async function latency(call: Call, proc: Proc, args: unknown[], n: number) {
  const h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 1e10, numberOfSignificantValueDigits: 3, useWebAssembly: false });
  for (let i = 0; i < n / 10; i++) await call(proc, args); // warm up
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await call(proc, args);
    h.recordValue(Number(process.hrtime.bigint() - t));
  }
  return { p50us: h.getValueAtPercentile(50) / 1000, p99us: h.getValueAtPercentile(99) / 1000, n };
}

async function throughput(call: Call, fh: Buffer, size: number, seconds: number) {
  let bytes = 0, calls = 0, off = 0;
  const t0 = process.hrtime.bigint();
  const deadline = t0 + BigInt(Math.round(seconds * 1e9));
  while (process.hrtime.bigint() < deadline) {
    const [data] = await call(Proc.READ, [fh, off, size]) as [Uint8Array];
    bytes += data.byteLength;
    calls++;
    off = (off + size) % FILE_SIZE;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { MBps: bytes / 1e6 / s, callsPerSec: calls / s };
}

export async function run() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-vrpc-'));
  const shmDir = fs.mkdtempSync('/dev/shm/prism-bench-');
  const storeDir = path.join(work, 'store');
  const store = Store.open(storeDir);
  const v = store.createVolume('vol');
  const f = v.create(v.rootIno, 'data', 0o644, 0, 0);
  const chunk = Buffer.alloc(1 << 20);
  for (let off = 0; off < FILE_SIZE; off += chunk.length) {
    for (let k = 0; k < chunk.length; k += 256) chunk.writeUInt32LE(off + k, k);
    v.write(f.ino, off, chunk);
  }
  store.close();

  const sock = path.join(work, 'vrpc.sock');
  const host = spawn(process.execPath, [prismBin, '--store', storeDir, 'host', 'serve', '--shm-dir', shmDir,
    '--tcp', '127.0.0.1:0', '--tcp', `unix:${sock}`, '--vm', 'bench=vol'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = await new Promise<string>((resolve, reject) => {
    let o = '';
    host.stdout!.on('data', (d) => { o += d; if (/^ready$/m.test(o)) resolve(o); });
    host.once('exit', (c) => reject(new Error(`host exited with ${c}`)));
  });
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)![1]);
  const token = fs.readFileSync(path.join(storeDir, 'vms', 'bench.token'), 'utf8').trim();

  const transports: Transport[] = [];
  const shmOk = nativeAvailable().ok;
  if (shmOk) {
    for (const mode of ['futex', 'poll'] as const) {
      transports.push({ name: `shm (${mode})`, open: async () => {
        const c = new SyncShmClient(shmPath('bench', shmDir), 'bench', mode);
        return { call: (p, a) => c.call(p, a), close: () => c.close() };
      } });
    }
  }
  for (const [name, addr] of [['tcp loopback', `127.0.0.1:${port}`], ['unix socket', `unix:${sock}`]] as const) {
    transports.push({ name, open: async () => {
      const c = await connectTcp(addr, 'bench', token);
      return { call: (p, a) => c.call(p, a), close: () => c.close() };
    } });
  }

  const results: Record<string, unknown> = {};
  const rows = [['transport', 'NULL p50', 'NULL p99', 'GETATTR p50', 'GETATTR p99', 'READ 4K', 'READ 1M']];
  try {
    for (const t of transports) {
      const tr = { name: t.name, ...(await t.open()) };
      const [root] = await tr.call(Proc.ATTACH, ['vol']) as [Buffer];
      const [fh] = await tr.call(Proc.LOOKUP, [root, Buffer.from('data')]) as [Buffer];
      const nul = await latency(tr.call, Proc.NULL, [], 20_000);
      const getattr = await latency(tr.call, Proc.GETATTR, [fh], 20_000);
      const r4k = await throughput(tr.call, fh, 4096, 1.5);
      const r1m = await throughput(tr.call, fh, 1 << 20, 1.5);
      results[tr.name] = { nul, getattr, read4k: r4k, read1m: r1m };
      rows.push([tr.name, `${nul.p50us.toFixed(2)} µs`, `${nul.p99us.toFixed(1)} µs`, `${getattr.p50us.toFixed(2)} µs`,
        `${getattr.p99us.toFixed(1)} µs`, `${r4k.MBps.toFixed(0)} MB/s`, `${r1m.MBps.toFixed(0)} MB/s`]);
      tr.close();
    }
  } finally {
    host.kill('SIGTERM');
    await new Promise((r) => host.once('exit', r));
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(shmDir, { recursive: true, force: true });
  }
  const tcp = results['tcp loopback'] as { nul: { p50us: number } } | undefined;
  const shm = results['shm (futex)'] as { nul: { p50us: number } } | undefined;
  const speedup = tcp && shm ? tcp.nul.p50us / shm.nul.p50us : undefined;
  if (!shmOk) rows.push(['shm', `unavailable: ${(nativeAvailable() as { reason: string }).reason}`]);
  return {
    results: { ...results, nullSpeedupShmVsTcp: speedup },
    table: `${table(rows)}\n\nNULL round trip, shared memory vs TCP (p50): ${speedup ? `${speedup.toFixed(1)}x faster` : 'n/a'}`,
  };
}
