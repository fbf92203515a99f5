// Soak: 8 VMs on one host (4 over shared memory, 4 over TCP); 7 run a mixed workload and time every
// call, the 8th is hostile (test/fixtures/hostile-guest.ts: floods, never reads replies, garbage,
// pre-auth junk, a withheld response ring). Quiet and hostile phases alternate in one run, so both
// see the same machine; the well-behaved VMs' p99 under attack must stay within 2x of their p99
// without it, or within a floor above it, whichever is larger (FLOOR_MS: the floor absorbs the
// scheduling noise of a loaded 2-core machine, where a p99 of a few ms can double on its own).
//
// `npm test` runs about 24 s (4 rounds); `npm run soak` runs PRISM_SOAK_SECONDS (default 180) and also prints the figures.
import test from 'ava';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Proc } from '../../src/protocol/procs.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { connectTcp, type VrpcClient } from '../../src/vrpc/client.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { prism, rssMiB, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const SECONDS = Number(process.env.PRISM_SOAK_SECONDS ?? 24);
/**
 * The absolute floor of the p99 bound. In `npm test` the 24 s run shares the machine with other test
 * files, whose load falls unevenly on its few 3 s phases (runs saw 2.07x on a 7 ms quiet p99, and
 * 22.5 ms on a 10.3 ms one): 20 ms there, which a host that lets a hostile VM starve the others
 * (hundreds of ms) still fails; `npm run soak` runs alone and long, and keeps 5 ms.
 */
const FLOOR_MS = process.env.PRISM_SOAK_SECONDS ? 5 : 20;
/** One quiet phase and one hostile phase make a round. */
const PHASE_MS = 3000;
/** Calls in the first moments after a switch belong to neither phase. */
const SETTLE_MS = 250;
const VMS = 8;
const hostileFixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/hostile-guest.js');

const native = nativeAvailable();
const noShm = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist on this machine'
  : !native.ok ? `the native addon is not built: ${native.reason}` : undefined;
if (noShm) console.error(`soak.test: skipped: ${noShm}`);
const soakTest = noShm ? test.skip : test.serial;

const token = (store: string, vm: string) => fs.readFileSync(path.join(store, 'vms', `${vm}.token`), 'utf8').trim();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds a process has used (user + system, from /proc). */
function cpuSeconds(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (100 Hz on Linux)
}

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]! : NaN;
}

soakTest(`soak: 7 VMs keep their p99 within max(2x, +${FLOOR_MS} ms) while an 8th is hostile (${SECONDS} s)`, async (t) => {
  t.timeout(SECONDS * 1000 + 120_000);
  const store = path.join(tmpDir(t), 'store');
  const names = Array.from({ length: VMS }, (_, i) => `vm${i + 1}`);
  for (const n of names) t.is(prism(store, ['volume', 'create', `vol-${n}`]).code, 0);
  const dir = fs.mkdtempSync('/dev/shm/prism-soak-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const host = await startHost(store, ['--shm-dir', dir, '--no-meta', ...names.flatMap((n) => ['--vm', `${n}=vol-${n}`])]);
  t.teardown(() => { host.child.kill('SIGKILL'); });
  const addr = `127.0.0.1:${host.port}`;

  // vm1..vm4 over shared memory, vm5..vm8 over TCP; vm8 is the hostile one (it also has its region).
  const clients: VrpcClient[] = [];
  for (let i = 0; i < VMS; i++) {
    const n = names[i]!;
    clients.push(i < 4 ? await connectShm(shmPath(n, dir), n) : await connectTcp(addr, n, token(store, n)));
  }
  t.teardown(() => { for (const c of clients) c.close(); });
  const files: Buffer[] = [];
  const roots: Buffer[] = [];
  for (let i = 0; i < VMS; i++) {
    const c = clients[i]!;
    const [root] = await c.call(Proc.ATTACH, [`vol-${names[i]}`]) as [Buffer];
    const [fh] = await c.call(Proc.CREATE, [root, Buffer.from('data'), 0o644, 0, 0, true]) as [Buffer];
    await c.call(Proc.WRITE, [fh, 0, Buffer.alloc(1 << 20, i), 1]);
    roots.push(Buffer.from(root));
    files.push(Buffer.from(fh));
  }

  const hostile = fork(hostileFixture, [JSON.stringify({ port: host.port, vm: 'vm8', token: token(store, 'vm8'), shm: shmPath('vm8', dir), fh: files[7]!.toString('hex') })], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  t.teardown(() => { hostile.kill('SIGKILL'); });
  // In a real deployment the hostile guest burns its own vCPUs; here it shares two cores with the
  // host and the timing process, so it runs at the lowest priority: the test measures the host's
  // isolation, not the Linux scheduler's.
  os.setPriority(hostile.pid!, 19);
  await new Promise<void>((resolve, reject) => { hostile.once('message', () => resolve()); hostile.once('exit', (c) => reject(new Error(`hostile guest exited ${c}`))); });

  // The workload of a well-behaved VM: a mix of metadata and 4 KiB I/O, a 1 ms pause between calls.
  type Phase = 'quiet' | 'hostile' | 'switching';
  let phase: Phase = 'switching';
  const lat: Record<'quiet' | 'hostile', number[]> = { quiet: [], hostile: [] };
  const errors: string[] = [];
  /** What the hostile VM is doing now, and the well-behaved latencies under each of its modes. */
  let mode = 'none';
  const byMode: Record<string, number[]> = {};
  hostile.on('message', (m) => { if (typeof m === 'object' && m && 'mode' in m) mode = String((m as { mode: string }).mode); });
  let running = true;
  const block = Buffer.alloc(4096, 7);
  const workers = clients.slice(0, 7).map(async (c, i) => {
    const fh = files[i]!, root = roots[i]!;
    for (let k = 0; running; k++) {
      const p = phase;
      const t0 = performance.now();
      try {
        switch (k % 8) {
          case 0: await c.call(Proc.GETATTR, [fh]); break;
          case 1: await c.call(Proc.LOOKUP, [root, Buffer.from('data')]); break;
          case 2: await c.call(Proc.READ, [fh, (k * 4096) % (1 << 20), 4096]); break;
          case 3: await c.call(Proc.WRITE, [fh, (k * 4096) % (1 << 20), block, 0]); break;
          case 4: await c.call(Proc.NULL, []); break;
          case 5: await c.call(Proc.CREATE, [root, Buffer.from(`t${k}`), 0o644, 0, 0, true]); break;
          case 6: await c.call(Proc.REMOVE, [root, Buffer.from(`t${k - 1}`)]); break;
          default: await c.call(Proc.READDIRPLUS, [root, Buffer.alloc(0), 16]); break;
        }
      } catch (e) {
        errors.push(`vm${i + 1}: ${(e as Error).message}`);
      }
      const ms = performance.now() - t0;
      if (p !== 'switching' && p === phase) {
        lat[p].push(ms);
        if (p === 'hostile') (byMode[mode] ??= []).push(ms);
      }
      await sleep(1);
    }
  });

  const rssBefore = rssMiB(host.child.pid!);
  let rssPeak = rssBefore;
  const rssTimer = setInterval(() => { rssPeak = Math.max(rssPeak, rssMiB(host.child.pid!)); }, 250);
  const rounds = Math.max(1, Math.round(SECONDS / (2 * PHASE_MS / 1000)));
  // CPU used by the host, the hostile VM and this process in each phase (seconds per second).
  const pids = { host: host.child.pid!, hostile: hostile.pid!, clients: process.pid };
  const cpu: Record<'quiet' | 'hostile', Record<keyof typeof pids, number>> = { quiet: { host: 0, hostile: 0, clients: 0 }, hostile: { host: 0, hostile: 0, clients: 0 } };
  for (let r = 0; r < rounds; r++) {
    for (const next of ['quiet', 'hostile'] as const) {
      phase = 'switching';
      hostile.send(next === 'hostile' ? 'on' : 'off');
      await sleep(SETTLE_MS);
      phase = next;
      const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
      await sleep(PHASE_MS - SETTLE_MS);
      for (const [k, pid] of Object.entries(pids)) cpu[next][k as keyof typeof pids] += (cpuSeconds(pid) - before[k]!) / ((PHASE_MS - SETTLE_MS) / 1000) / rounds;
    }
  }
  phase = 'switching';
  hostile.send('off');
  running = false;
  await Promise.all(workers);
  clearInterval(rssTimer);
  // The hostile VM also reports its mode changes: wait for the message that carries the stats.
  const hs = await new Promise<Record<string, number>>((resolve) => {
    const take = (m: unknown) => {
      if (typeof m !== 'object' || !m || !('stats' in m)) return;
      hostile.off('message', take);
      resolve((m as { stats: Record<string, number> }).stats);
    };
    hostile.on('message', take);
    hostile.send('stats');
  });
  // vm8 holds its whole budget (its response ring full, nobody reading it), so it is paused, on every
  // channel; once it takes its replies it is served again.
  hostile.send('drain');

  const q = lat.quiet.sort((a, b) => a - b), h = lat.hostile.sort((a, b) => a - b);
  const fmt = (s: number[]) => `n=${s.length} p50 ${pct(s, 0.5).toFixed(2)} p99 ${pct(s, 0.99).toFixed(2)} max ${pct(s, 1).toFixed(1)} ms`;
  const bound = Math.max(2 * pct(q, 0.99), pct(q, 0.99) + FLOOR_MS);
  const lines = [
    `soak ${rounds} rounds x (${PHASE_MS} ms quiet + ${PHASE_MS} ms hostile), 7 VMs well-behaved (vm1-4 shm, vm5-7 TCP), vm8 hostile`,
    `  quiet:   ${fmt(q)}`,
    `  hostile: ${fmt(h)}   (bound on p99: ${bound.toFixed(2)} ms)`,
    `  hostile sent ${hs.framesSent} frames (${(hs.bytesSent / 2 ** 20).toFixed(0)} MiB) over ${hs.connections} connections, ${hs.shmRecords} shm records; read ${(hs.bytesRead / 2 ** 20).toFixed(0)} MiB`,
    `  under each hostile mode: ${Object.entries(byMode).map(([m, s]) => `${m} p99 ${pct(s.sort((a, b) => a - b), 0.99).toFixed(2)} ms`).join(', ')}`,
    `  CPU (cores): quiet host ${cpu.quiet.host.toFixed(2)} hostile-VM ${cpu.quiet.hostile.toFixed(2)} clients ${cpu.quiet.clients.toFixed(2)}; hostile host ${cpu.hostile.host.toFixed(2)} hostile-VM ${cpu.hostile.hostile.toFixed(2)} clients ${cpu.hostile.clients.toFixed(2)}`,
    `  host RSS ${rssBefore.toFixed(0)} MiB before, peak ${rssPeak.toFixed(0)} MiB; well-behaved errors: ${errors.length}`,
  ];
  for (const l of lines) t.log(l);
  if (process.env.PRISM_SOAK_SECONDS) console.log(lines.join('\n'));

  t.is(host.child.exitCode, null, 'the host lives');
  t.deepEqual(errors.slice(0, 5), [], 'no call of a well-behaved VM failed');
  t.true(q.length > 1000 && h.length > 1000, 'both phases made progress');
  t.true(pct(h, 0.99) <= bound, `p99 under attack ${pct(h, 0.99).toFixed(2)} ms > ${bound.toFixed(2)} ms`);
  t.true(rssPeak - rssBefore < 200, `host RSS grew ${(rssPeak - rssBefore).toFixed(0)} MiB`);
  // The host still serves the hostile VM once it behaves.
  t.deepEqual(await clients[7]!.call(Proc.NULL, []), []);
  hostile.send('exit');
});
