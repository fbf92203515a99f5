// Hazard (issue 11, item 5): COMMIT floods. Each COMMIT was a full-store fsync on the serving event
// loop, so one VM committing ~1000 times a second made every other VM wait (GETATTR p50 0.5 ms ->
// 118 ms). Now COMMITs waiting together share one group commit whose fsyncs run on the thread pool.
// Measured in one run: another VM's GETATTR latency without and with the flood (a ratio).
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostServer } from '../../src/host/server.js';
import { Proc } from '../../src/protocol/procs.js';
import { Store } from '../../src/store/store.js';
import { connectTcp, type VrpcClient } from '../../src/vrpc/client.js';
import { tmpDir } from '../helpers/tmp.js';

const flooder = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/commit-flooder.js');

/** GETATTR round trips for `ms`, one at a time: their latencies (ms), sorted. */
async function getattrLatencies(c: VrpcClient, fh: Buffer, ms: number): Promise<number[]> {
  const out: number[] = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const t0 = process.hrtime.bigint();
    await c.call(Proc.GETATTR, [fh]);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out.sort((a, b) => a - b);
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

test.serial('a VM flooding COMMITs does not stall another VM; waiting COMMITs share fsyncs', async (t) => {
  const dir = path.join(tmpDir(t), 'store');
  const s = Store.open(dir);
  s.createVolume('vol1');
  s.createVolume('vol2');
  s.close();
  const host = await HostServer.start({ storeDir: dir, vms: [{ name: 'vm1', volumes: ['vol1'] }, { name: 'vm2', volumes: ['vol2'] }], tcp: ['127.0.0.1:0'], shm: false });
  t.teardown(() => host.stop());
  const address = host.listenAddresses[0]!;
  const c = await connectTcp(address, 'vm2', host.tokenOf('vm2'));
  t.teardown(() => c.close());
  const [root] = await c.call(Proc.ATTACH, ['vol2']) as [Buffer];

  await getattrLatencies(c, root, 300); // warm up

  // Quiet and flooded windows alternate (the flooder stopped and continued), so that both see the same
  // background load of this machine; the flooder runs for 7 s of wall time, stopped half of it.
  const child = spawn(process.execPath, [flooder, address, 'vm1', host.tokenOf('vm1'), 'vol1', '7000', '16'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  const started = new Promise<void>((resolve) => child.stdout.on('data', (d: string) => { out += d; if (out.includes('started')) resolve(); }));
  const ended = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(() => { child.kill('SIGKILL'); });
  await started;
  const before = (host.store as unknown as { commitCounters?: { requests: number; commits: number; dataSyncs: number } }).commitCounters;
  const quiet: number[] = [], flooded: number[] = [];
  const settle = () => new Promise((r) => setTimeout(r, 150));
  for (let round = 0; round < 6; round++) {
    child.kill('SIGSTOP');
    await settle(); // its calls in flight are answered
    quiet.push(...await getattrLatencies(c, root, 400));
    child.kill('SIGCONT');
    await settle();
    flooded.push(...await getattrLatencies(c, root, 400));
  }
  quiet.sort((a, b) => a - b);
  flooded.sort((a, b) => a - b);
  await ended;
  const commits = Number(/commits (\d+)/.exec(out)?.[1] ?? 0);
  const after = (host.store as unknown as { commitCounters?: { requests: number; commits: number; dataSyncs: number } }).commitCounters;

  const q50 = pct(quiet, 0.5), q99 = pct(quiet, 0.99), f50 = pct(flooded, 0.5), f99 = pct(flooded, 0.99);
  t.log(`GETATTR without flood: p50 ${q50.toFixed(3)} ms p99 ${q99.toFixed(3)} ms (${quiet.length}); with ${commits} COMMITs (flooding half of 7 s): p50 ${f50.toFixed(3)} ms p99 ${f99.toFixed(3)} ms (${flooded.length})`);
  t.true(commits >= 200, `the flood made ${commits} COMMITs`);
  // Generous margins for a loaded 2-core machine; the hazard was a 200x p50.
  t.true(f50 <= Math.max(5 * q50, q50 + 1), `p50 ${f50.toFixed(3)} ms with the flood vs ${q50.toFixed(3)} ms without`);
  t.true(f99 <= Math.max(10 * q99, q99 + 20), `p99 ${f99.toFixed(3)} ms with the flood vs ${q99.toFixed(3)} ms without`);

  t.truthy(before && after, 'the store counts its commits');
  if (!before || !after) return;
  const requests = after.requests - before.requests;
  const syncs = after.dataSyncs - before.dataSyncs;
  const storeCommits = after.commits - before.commits;
  t.log(`${requests} commit requests -> ${storeCommits} store commits, ${syncs} segment fdatasyncs`);
  t.true(requests >= commits * 0.9, 'every COMMIT asked for a commit');
  t.true(storeCommits * 2 <= requests, `grouped: ${storeCommits} store commits for ${requests} requests`);
  t.true(syncs <= storeCommits, 'at most one segment fdatasync per store commit');
});
