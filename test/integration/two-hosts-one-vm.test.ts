// Issue 11 item 10: a second host for a VM name another host serves (from another store) is refused
// with EBUSY naming the first host's pid, and the first goes on serving; likewise a second agent on
// a region an agent already uses.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Proc } from '../../src/protocol/procs.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { fuseSkipReason, mounted } from '../helpers/agent.js';
import { prism, prismBin, startHost } from '../helpers/host.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { tmpDir } from '../helpers/tmp.js';

const native = nativeAvailable();
const skip = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist' : !native.ok ? native.reason : undefined;
const fuseSkip = skip ?? fuseSkipReason();
if (fuseSkip) console.error(`two-hosts-one-vm.test: some tests skipped: ${fuseSkip}`);

(skip ? test.skip : test.serial)('a second host for the same VM name is refused with EBUSY naming the first; the first serves on', async (t) => {
  const dir = fs.mkdtempSync('/dev/shm/prism-test-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const storeA = path.join(tmpDir(t), 'a'), storeB = path.join(tmpDir(t), 'b');
  for (const s of [storeA, storeB]) t.is(prism(s, ['volume', 'create', 'vol']).code, 0);
  const first = await startHost(storeA, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol']);
  t.teardown(() => { first.child.kill('SIGKILL'); });
  const c = await connectShm(shmPath('vm1', dir), 'vm1', { timeoutMs: 3000 });
  const [root] = await c.call(Proc.ATTACH, ['vol']) as [Buffer];
  await c.call(Proc.CREATE, [root, Buffer.from('from-a'), 0o644, 0, 0, true]);

  // Bounded: a host that is not refused would serve forever.
  const second = spawnSync(process.execPath, [prismBin, '--store', storeB, 'host', 'serve', '--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol'], { encoding: 'utf8', timeout: 15_000 });
  t.is(second.status, 16, second.stderr); // EBUSY
  t.regex(second.stderr, new RegExp(`prism-vm1 is in use by another host \\(host pid ${first.child.pid}\\)`));

  // The first host's region was not touched: the same client goes on, on store A.
  for (let i = 0; i < 40; i++) await c.call(Proc.LOOKUP, [root, Buffer.from('from-a')]);
  c.close();
  t.is(await first.stop(), 0);
  // Once it is gone, the region is free for another host.
  const next = await startHost(storeB, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol']);
  t.is(await next.stop(), 0);
});

(fuseSkip ? test.skip : test.serial)('a second agent on a region an agent uses is refused with EBUSY naming the first', async (t) => {
  const m = await mountedVolume(t, 'shm');
  fs.writeFileSync(path.join(m.mp, 'f'), 'one agent');
  const mp2 = path.join(m.dir, 'mnt2');
  fs.mkdirSync(mp2);
  const r = spawnSync(process.execPath, [prismBin, 'agent', 'mount', '--shm', m.region, '--volume', 'vol', mp2], { encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 16, r.stderr);
  t.regex(r.stderr, new RegExp(`in use by another agent \\(agent pid ${m.agent.child.pid}\\)`));
  t.false(mounted(mp2));
  t.is(fs.readFileSync(path.join(m.mp, 'f'), 'utf8'), 'one agent', 'the first agent serves on');
});
