// The agent and the host over time: host restarts (requests wait, then continue), a host gone for good
// (EIO after the timeout, no hang), a killed agent (umount -l cleans up), bad input at mount time,
// and a clone taken while the volume is mounted.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fuseSkipReason, mounted } from '../helpers/agent.js';
import { prism, prismBin, startHost } from '../helpers/host.js';
import { fullVolumeKeepsWhatFits } from '../helpers/full-volume.js';
import { mountedVolume, type TransportName } from '../helpers/mounted-volume.js';
import { tmpDir } from '../helpers/tmp.js';

const reason = fuseSkipReason();
const t = reason ? test.skip : test.serial;
if (reason) console.error(`agent-host.test: skipped: ${reason}`);

/** Run a command in the background; resolves with its exit status and output. */
function background(cmd: string, args: string[]): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  const start = Date.now();
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.once('exit', (code) => resolve({ code, out, err, ms: Date.now() - start }));
  });
}

for (const transport of ['shm', 'tcp'] as TransportName[]) {
  // Over shared memory the host is killed (SIGKILL: no goodbye in the region), over TCP stopped.
  t(`${transport}: a host restart is invisible (requests wait and continue); a host gone past --timeout gives EIO`, async (tt) => {
    const m = await mountedVolume(tt, transport, { unixSocket: true, agentArgs: ['--timeout', '6'] });
    fs.writeFileSync(path.join(m.mp, 'before'), 'written before the restart');
    const fd = fs.openSync(path.join(m.mp, 'open-across'), 'w+');
    fs.writeSync(fd, 'held open ');
    // Made durable first: a killed host loses what was acknowledged but not yet committed (<= 1 s).
    fs.fsyncSync(fd);
    const before = fs.openSync(path.join(m.mp, 'before'), 'r');
    fs.fsyncSync(before);
    fs.closeSync(before);
    if (transport === 'shm') {
      const gone = new Promise((r) => m.host.child.once('exit', r));
      m.host.child.kill('SIGKILL');
      await gone;
    } else {
      await m.host.stop();
    }
    // Asked while the host is down: answered once it is back.
    const pending = background('cat', [path.join(m.mp, 'before')]);
    await new Promise((r) => setTimeout(r, 500));
    await m.restartHost();
    const r = await pending;
    tt.is(r.code, 0, r.err);
    tt.is(r.out, 'written before the restart');
    // Handles survive: the file opened before the restart is still written and read through.
    fs.writeSync(fd, 'and after');
    const back = Buffer.alloc(19);
    fs.readSync(fd, back, 0, 19, 0);
    fs.closeSync(fd);
    tt.is(back.toString(), 'held open and after');
    fs.writeFileSync(path.join(m.mp, 'after'), 'new');
    tt.deepEqual(fs.readdirSync(m.mp).sort(), ['after', 'before', 'open-across']);

    // Gone for good: a lookup fails with EIO after about the timeout instead of hanging.
    await m.host.stop();
    const gone = await background('stat', [path.join(m.mp, 'never-seen')]);
    tt.not(gone.code, 0);
    tt.regex(gone.err, /Input\/output error/);
    tt.true(gone.ms >= 5500 && gone.ms < 20_000, `failed after ${gone.ms} ms`);
    tt.true(mounted(m.mp), 'still mounted: the agent waits for the host');
  });
}

t('a volume cloned while mounted is a point-in-time copy; the mount goes on unaffected', async (tt) => {
  const m = await mountedVolume(tt, 'shm');
  fs.mkdirSync(path.join(m.mp, 'd'));
  fs.writeFileSync(path.join(m.mp, 'd', 'f'), 'version 1');
  const fd = fs.openSync(path.join(m.mp, 'partial'), 'w');
  fs.writeSync(fd, Buffer.alloc(100_000, 7)); // not flushed to blocks yet on the host: still in the clone
  const c = prism(m.store, ['volume', 'clone', 'vol', 'snap']);
  tt.is(c.code, 0, c.err);
  fs.writeFileSync(path.join(m.mp, 'd', 'f'), 'version 2');
  fs.writeSync(fd, Buffer.alloc(10, 8));
  fs.closeSync(fd);
  fs.unlinkSync(path.join(m.mp, 'partial'));
  tt.is(fs.readFileSync(path.join(m.mp, 'd', 'f'), 'utf8'), 'version 2');
  const ls = prism(m.store, ['volume', 'ls', '--json']);
  tt.deepEqual((JSON.parse(ls.out) as Array<{ name: string }>).map((v) => v.name).sort(), ['snap', 'vol']);
  await m.agent.umount();
  await m.host.stop();
  tt.is(prism(m.store, ['cat', 'snap:/d/f']).out, 'version 1');
  tt.is(prism(m.store, ['cat', 'vol:/d/f']).out, 'version 2');
  const st = JSON.parse(prism(m.store, ['stat', 'snap:/partial', '--json']).out) as { size: number };
  tt.is(st.size, 100_000);
  tt.is(prism(m.store, ['stat', 'vol:/partial']).code, 2);
  tt.is(prism(m.store, ['fsck']).code, 0);
});

t('a full volume: writes sent behind report EDQUOT at the next write or at close, and nothing else is lost', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { quota: '1M' });
  fullVolumeKeepsWhatFits(tt, m.mp);
});

t('a killed agent leaves a mount that umount -l removes; a new agent mounts again', async (tt) => {
  const m = await mountedVolume(tt, 'shm');
  fs.writeFileSync(path.join(m.mp, 'f'), 'kept');
  m.agent.child.kill('SIGKILL');
  await new Promise((r) => m.agent.child.once('exit', r));
  tt.true(mounted(m.mp));
  const stat = spawnSync('stat', [path.join(m.mp, 'f')], { encoding: 'utf8', timeout: 10_000 });
  tt.not(stat.status, 0); // ENOTCONN, not a hang
  tt.regex(stat.stderr, /not connected/);
  tt.is(spawnSync('umount', ['-l', m.mp]).status, 0);
  tt.false(mounted(m.mp));
  // The region is taken over by the next agent (stale replies of the dead one are ignored).
  const again = spawnSync(process.execPath, [prismBin, 'agent', 'mount', '--shm', m.region, '--volume', 'vol', m.mp], { encoding: 'utf8' });
  tt.is(again.status, 0, again.stderr);
  tt.is(fs.readFileSync(path.join(m.mp, 'f'), 'utf8'), 'kept');
  const down = spawnSync(process.execPath, [prismBin, 'agent', 'umount', m.mp], { encoding: 'utf8' });
  tt.is(down.status, 0, down.stderr);
  tt.false(mounted(m.mp));
});

t('bad input at mount: one clear line, a non-zero exit, nothing mounted', async (tt) => {
  const dir = tmpDir(tt);
  const store = path.join(dir, 'store');
  prism(store, ['volume', 'create', 'vol']);
  const vm = `bad${process.pid}`;
  const host = await startHost(store, ['--vm', `${vm}=vol`]);
  tt.teardown(async () => { await host.stop(); for (const f of [`/dev/shm/prism-${vm}`, `/dev/shm/prism-${vm}-meta`]) fs.rmSync(f, { force: true }); });
  const mp = path.join(dir, 'mnt');
  fs.mkdirSync(mp);
  const token = path.join(store, 'vms', `${vm}.token`);
  const bad = path.join(dir, 'bad.token');
  fs.writeFileSync(bad, 'not the token');
  const cases: Array<[string, string[], RegExp, number]> = [
    ['wrong volume', ['--shm', `/dev/shm/prism-${vm}`, '--volume', 'nope', mp], /not attached to VM/, 13],
    ['missing mountpoint', ['--shm', `/dev/shm/prism-${vm}`, '--volume', 'vol', path.join(dir, 'absent')], /does not exist/, 2],
    ['mountpoint is a file', ['--shm', `/dev/shm/prism-${vm}`, '--volume', 'vol', token], /not a directory/, 20],
    ['host down (TCP)', ['--tcp', '127.0.0.1:1', '--token-file', token, '--volume', 'vol', mp], /cannot reach the host/, 5],
    ['no region (shm)', ['--shm', `/dev/shm/prism-none-${vm}`, '--volume', 'vol', mp], /cannot map/, 2],
    ['bad token', ['--tcp', `127.0.0.1:${host.port}`, '--token-file', bad, '--vm', vm, '--volume', 'vol', mp], /wrong token/, 13],
    ['missing token file', ['--tcp', `127.0.0.1:${host.port}`, '--token-file', path.join(dir, 'none'), '--volume', 'vol', mp], /cannot read the token file/, 2],
    ['two transports', ['--shm', `/dev/shm/prism-${vm}`, '--tcp', '127.0.0.1:1', '--volume', 'vol', mp], /exactly one of/, 22],
  ];
  for (const [what, args, message, code] of cases) {
    const r = spawnSync(process.execPath, [prismBin, 'agent', 'mount', ...args], { encoding: 'utf8', timeout: 30_000 });
    tt.is(r.status, code, `${what}: ${r.stderr}`);
    tt.regex(r.stderr, message, what);
    tt.is(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
    tt.false(mounted(mp), `${what}: nothing mounted`);
  }
  // A host that stops takes its region file with it (no guest maps it), and mounting fails at once.
  await host.stop();
  const r = spawnSync(process.execPath, [prismBin, 'agent', 'mount', '--shm', `/dev/shm/prism-${vm}`, '--volume', 'vol', mp], { encoding: 'utf8', timeout: 30_000 });
  tt.is(r.status, 2, r.stderr);
  tt.regex(r.stderr, /no such file \(is the host serving this VM\?\)/);
  tt.false(mounted(mp));
  // umount of something that is not mounted.
  const u = spawnSync(process.execPath, [prismBin, 'agent', 'umount', mp], { encoding: 'utf8' });
  tt.is(u.status, 22);
  tt.regex(u.stderr, /not a mount point/);
});

// fusermount3 opens /dev/fuse as the calling user: where the device is root-only (0600, as on these
// test machines) no user can mount FUSE at all, and the test says so.
const devFuseOpen = (() => { try { return (fs.statSync('/dev/fuse').mode & 0o006) === 0o006; } catch { return false; } })();
const userReason = reason ?? (!devFuseOpen ? '/dev/fuse is not readable and writable by other users (mode 0600): unprivileged FUSE mounts are impossible here' : !fs.existsSync('/usr/bin/fusermount3') ? 'fusermount3 is missing' : undefined);
if (userReason) console.error(`agent-host.test: user mount skipped: ${userReason}`);
(userReason ? test.skip : test.serial)('an unprivileged user mounts over TCP through fusermount3 and unmounts', async (tt) => {
  const m = await mountedVolume(tt, 'shm');
  fs.writeFileSync(path.join(m.mp, 'shared'), 'from root');
  fs.chmodSync(m.mp, 0o777);
  await m.agent.umount();
  const mp = path.join(m.dir, 'user-mnt');
  fs.mkdirSync(mp);
  fs.chownSync(mp, 65534, 65534);
  const token = path.join(m.dir, 'user.token');
  fs.copyFileSync(path.join(m.store, 'vms', `${m.vm}.token`), token);
  fs.chownSync(token, 65534, 65534);
  const as = (args: string[]) => spawnSync(process.execPath, [prismBin, ...args], { encoding: 'utf8', uid: 65534, gid: 65534, cwd: '/tmp' });
  const r = as(['agent', 'mount', '--tcp', `127.0.0.1:${m.host.port}`, '--token-file', token, '--vm', m.vm, '--volume', 'vol', mp]);
  tt.is(r.status, 0, r.stderr);
  tt.true(mounted(mp));
  const read = spawnSync('cat', [path.join(mp, 'shared')], { encoding: 'utf8', uid: 65534, gid: 65534 });
  tt.is(read.stdout, 'from root');
  const write = spawnSync('sh', ['-c', `echo mine > ${path.join(mp, 'mine')} && stat -c %u ${path.join(mp, 'mine')}`], { encoding: 'utf8', uid: 65534, gid: 65534 });
  tt.is(write.stdout.trim(), '65534', write.stderr);
  const u = as(['agent', 'umount', mp]);
  tt.is(u.status, 0, u.stderr);
  tt.false(mounted(mp));
});
