// Posted creates and mkdirs (issue 13, third round): on a volume no other VM attaches, the agent
// answers a create or mkdir of a name its table knows absent itself, with an inode number the host
// reserved for it and the attributes the host will make, and posts CREATE_AT / MKDIR_AT. What the
// kernel is told must be what the host then has; a create the host refuses surfaces at close and
// leaves no name behind; anything uncertain (another VM on the volume, a name present) waits.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { agentStats, fuseSkipReason, run } from '../helpers/agent.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { LONG_CACHE, twoVms } from '../helpers/two-vms.js';

const skip = fuseSkipReason();
const maybe = skip ? test.skip : test.serial;
if (skip) test('posted creates (skipped)', (t) => { t.log(skip); t.pass(); });

const N = 50;

type Counters = Awaited<ReturnType<typeof agentStats>>['counters'];
const sentBetween = (a: Counters, b: Counters, proc: string): number => (b.rpcsByProc[proc] ?? 0) - (a.rpcsByProc[proc] ?? 0);

/** Everything stat shows that the host decides, and must not change when its reply comes. */
function shape(s: fs.BigIntStats): Record<string, bigint> {
  return {
    ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, size: s.size, blocks: s.blocks,
    atime: s.atimeNs, mtime: s.mtimeNs, ctime: s.ctimeNs,
  };
}

/** Wait until the agent has read every posted reply (an fsync of the directory waits for them). */
function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}

maybe('creates and mkdirs of names the table knows absent are posted, none waited for; what stat shows before the reply is what the host has after', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'd');
  fs.mkdirSync(dir);
  fs.readdirSync(dir);
  fs.writeFileSync(path.join(m.mp, 'warm'), ''); // the first RESERVE's reply has been read by now
  const before = (await agentStats(m.agent)).counters;
  const seen: Array<Record<string, bigint>> = [];
  for (let i = 0; i < N; i++) {
    fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'wx', 0o640));
    fs.mkdirSync(path.join(dir, `m${i}`), 0o750);
    seen.push(shape(fs.statSync(path.join(dir, `f${i}`), { bigint: true })), shape(fs.statSync(path.join(dir, `m${i}`), { bigint: true })));
  }
  const after = (await agentStats(m.agent)).counters;
  t.is(sentBetween(before, after, 'CREATE'), 0, 'no synchronous CREATE');
  t.is(sentBetween(before, after, 'MKDIR'), 0, 'no synchronous MKDIR');
  t.is(sentBetween(before, after, 'CREATE_AT'), N);
  t.is(sentBetween(before, after, 'MKDIR_AT'), N);
  t.is(after.postedMeta - before.postedMeta, 2 * N);
  t.is(sentBetween(before, after, 'LOOKUP'), 0, 'the negative lookups before each came from the table');
  // The listing, right after, has every name (READDIR follows the posted calls on the ring).
  t.deepEqual(fs.readdirSync(dir).sort(), Array.from({ length: N }, (_, i) => [`f${i}`, `m${i}`]).flat().sort());
  const dirStat = fs.statSync(dir);
  t.is(dirStat.nlink, 2 + N, 'each mkdir is a link of the directory');
  syncDir(dir);
  // After the replies (and from a restarted host, which reads them from the store): the same.
  await m.host.stop();
  await m.restartHost();
  await m.remountAgent(); // the kernel's dentries and attributes go: asked again
  for (let i = 0; i < N; i++) {
    t.deepEqual(shape(fs.statSync(path.join(dir, `f${i}`), { bigint: true })), seen[2 * i]!, `f${i}`);
    t.deepEqual(shape(fs.statSync(path.join(dir, `m${i}`), { bigint: true })), seen[2 * i + 1]!, `m${i}`);
  }
  t.is(fs.statSync(dir).nlink, 2 + N);
});

maybe('while posted creates and mkdirs are on their way, the directory\'s attributes are predicted exactly: the kernel keeps them, and the host then has them', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'd');
  fs.mkdirSync(dir);
  fs.readdirSync(dir);
  fs.writeFileSync(path.join(m.mp, 'warm'), '');
  const getattrs = (c: Counters): number => c.getattrsLocal + c.getattrMisses;
  const before = (await agentStats(m.agent)).counters;
  for (let i = 0; i < N; i++) {
    fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'wx'));
    fs.mkdirSync(path.join(dir, `m${i}`));
  }
  const shown = shape(fs.statSync(dir, { bigint: true }));
  const after = (await agentStats(m.agent)).counters;
  // The kernel drops the directory's attributes at each make and asks once before the next (its
  // permission check); a prediction it could not keep was asked for again by the check after.
  t.true(getattrs(after) - getattrs(before) <= 2 * N + 2, `${getattrs(after) - getattrs(before)} GETATTRs for ${2 * N} makes`);
  syncDir(dir);
  await m.host.stop();
  await m.restartHost();
  await m.remountAgent();
  t.deepEqual(shape(fs.statSync(dir, { bigint: true })), shown, 'the host has what the kernel kept');
});

maybe('a file written at once after its posted create has its data; mkdir then a create inside it at once; O_EXCL of a name that exists fails', async (t) => {
  const m = await mountedVolume(t, 'shm');
  fs.writeFileSync(path.join(m.mp, 'warm'), '');
  const before = (await agentStats(m.agent)).counters;
  for (let i = 0; i < 20; i++) {
    const sub = path.join(m.mp, `s${i}`);
    fs.mkdirSync(sub);
    fs.writeFileSync(path.join(sub, 'inner'), `inner ${i}\n`);
    fs.mkdirSync(path.join(sub, 'deeper'));
    fs.writeFileSync(path.join(sub, 'deeper', 'x'), `x ${i}\n`);
  }
  for (let i = 0; i < 20; i++) {
    t.is(fs.readFileSync(path.join(m.mp, `s${i}`, 'inner'), 'utf8'), `inner ${i}\n`);
    t.is(fs.readFileSync(path.join(m.mp, `s${i}`, 'deeper', 'x'), 'utf8'), `x ${i}\n`);
    t.deepEqual(fs.readdirSync(path.join(m.mp, `s${i}`)).sort(), ['deeper', 'inner']);
  }
  const after = (await agentStats(m.agent)).counters;
  t.true(after.postedMeta - before.postedMeta >= 40, `posted: ${after.postedMeta - before.postedMeta}`);
  // O_EXCL: exact, whether the name is one the kernel knows or one only the table knows.
  const p = path.join(m.mp, 's0', 'inner');
  t.throws(() => fs.openSync(p, 'wx'), { code: 'EEXIST' });
  await m.remountAgent();
  t.throws(() => fs.openSync(p, 'wx'), { code: 'EEXIST' });
  t.throws(() => fs.mkdirSync(path.join(m.mp, 's0')), { code: 'EEXIST' });
  t.is(fs.readFileSync(p, 'utf8'), 'inner 0\n', 'and did not truncate it');
});

maybe('a set-group-ID directory gives its group (and to a subdirectory its bit) to posted creates, as the host makes them', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const g = path.join(m.mp, 'g');
  fs.mkdirSync(g);
  fs.chownSync(g, 0, 4321);
  fs.chmodSync(g, 0o2777);
  fs.writeFileSync(path.join(m.mp, 'warm'), '');
  syncDir(m.mp);
  const before = (await agentStats(m.agent)).counters;
  // An unprivileged user (the kernel checks the directory's permission; its group is not theirs).
  run('sh', ['-c', `umask 022; touch ${g}/f; mkdir ${g}/sub; touch ${g}/sub/f2`], { uid: 65534, gid: 65534 });
  const got = [fs.statSync(path.join(g, 'f')), fs.statSync(path.join(g, 'sub')), fs.statSync(path.join(g, 'sub', 'f2'))]
    .map((s) => ({ uid: s.uid, gid: s.gid, mode: s.mode.toString(8) }));
  t.deepEqual(got, [
    { uid: 65534, gid: 4321, mode: '100644' },
    { uid: 65534, gid: 4321, mode: '42755' },
    { uid: 65534, gid: 4321, mode: '100644' },
  ]);
  const after = (await agentStats(m.agent)).counters;
  t.true(after.postedMeta - before.postedMeta >= 2, 'posted (the one in the new directory may wait for it)');
  syncDir(g);
  await m.remountAgent();
  const again = [fs.statSync(path.join(g, 'f')), fs.statSync(path.join(g, 'sub')), fs.statSync(path.join(g, 'sub', 'f2'))]
    .map((s) => ({ uid: s.uid, gid: s.gid, mode: s.mode.toString(8) }));
  t.deepEqual(again, got, 'the host made them so');
});

maybe('a posted create the host refuses (the volume is full) fails at close with EDQUOT, and the name is not left visible', async (t) => {
  const m = await mountedVolume(t, 'shm', { quota: '1048576' });
  fs.writeFileSync(path.join(m.mp, 'warm'), '');
  // Fill the quota to the byte (the data, then names until a create is refused).
  spawnSync('dd', ['if=/dev/urandom', `of=${path.join(m.mp, 'big')}`, 'bs=64k', 'count=15'], { encoding: 'utf8' });
  const probe = spawnSync('python3', ['-c', `import os, errno
d=${JSON.stringify(m.mp)}
made=0
for i in range(100000):
    p=os.path.join(d, 'n%05d' % i + 'x' * 200)
    try:
        fd=os.open(p, os.O_CREAT|os.O_EXCL|os.O_WRONLY, 0o644)
        os.close(fd)
        made+=1
    except OSError as e:
        print(e.errno, os.path.exists(p), made)
        break`], { encoding: 'utf8' });
  const [errno, exists, made] = probe.stdout.trim().split(' ');
  t.is(errno, '122', `EDQUOT at close (or open), got ${probe.stdout}${probe.stderr}`);
  t.is(exists, 'False', 'the refused name is not visible');
  t.log(`files made before the quota: ${made}`);
  const stats = (await agentStats(m.agent)).counters;
  t.true((stats.rpcsByProc.CREATE_AT ?? 0) > 0, 'the creates were posted');
  const names = fs.readdirSync(m.mp).filter((n) => n.startsWith('n'));
  t.is(names.length, Number(made), 'the listing has exactly the files made');
});

maybe('on a volume another VM also attaches, creates wait for the host, and each VM sees the other\'s new names at once', async (t) => {
  const { a, b } = await twoVms(t, { a: LONG_CACHE, b: LONG_CACHE });
  fs.mkdirSync(path.join(a.mp, 'd'));
  fs.readdirSync(path.join(b.mp, 'd'));
  const before = (await agentStats(a)).counters;
  for (let i = 0; i < 10; i++) {
    t.false(fs.existsSync(path.join(b.mp, 'd', `f${i}`))); // a negative entry in B's kernel
    fs.writeFileSync(path.join(a.mp, 'd', `f${i}`), `a ${i}\n`);
    t.is(fs.readFileSync(path.join(b.mp, 'd', `f${i}`), 'utf8'), `a ${i}\n`);
    fs.mkdirSync(path.join(b.mp, 'd', `m${i}`));
    t.true(fs.statSync(path.join(a.mp, 'd', `m${i}`)).isDirectory());
  }
  const after = (await agentStats(a)).counters;
  t.is(sentBetween(before, after, 'CREATE_AT'), 0);
  t.is(sentBetween(before, after, 'CREATE'), 10);
  t.is(fs.readdirSync(path.join(a.mp, 'd')).length, 20);
  t.is(fs.readdirSync(path.join(b.mp, 'd')).length, 20);
});

maybe('over TCP (no table) creates wait for the host', async (t) => {
  const m = await mountedVolume(t, 'tcp');
  const before = (await agentStats(m.agent)).counters;
  fs.writeFileSync(path.join(m.mp, 'x'), 'x\n');
  fs.mkdirSync(path.join(m.mp, 'y'));
  const after = (await agentStats(m.agent)).counters;
  t.is(after.postedMeta - before.postedMeta, 0);
  t.is(sentBetween(before, after, 'CREATE'), 1);
  t.is(sentBetween(before, after, 'MKDIR'), 1);
  t.is(fs.readFileSync(path.join(m.mp, 'x'), 'utf8'), 'x\n');
});


maybe('once a posted mkdir is applied, its directory\'s attributes are cached again: a path through it costs no request', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'sub');
  fs.mkdirSync(dir); // posted: its parent's attributes are predicted (not cached) until the reply is read
  await new Promise((r) => setTimeout(r, 300)); // the host has applied it; nothing else reads its reply
  for (let i = 0; i < 5; i++) fs.statSync(path.join(dir, `absent${i}`), { throwIfNoEntry: false });
  const before = (await agentStats(m.agent)).counters;
  for (let round = 0; round < 3; round++) for (let i = 0; i < 5; i++) fs.statSync(path.join(dir, `absent${i}`), { throwIfNoEntry: false });
  const after = (await agentStats(m.agent)).counters;
  // Names known absent and attributes cached: the kernel asks nothing more.
  t.is(after.getattrsLocal - before.getattrsLocal, 0, 'GETATTRs of the directory');
  t.is(after.lookupsLocal - before.lookupsLocal, 0, 'LOOKUPs');
});
