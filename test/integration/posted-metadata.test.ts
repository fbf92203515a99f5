// Posted metadata changes (issue 13): on a volume no other VM attaches, the agent answers a chmod,
// chown or utime itself when its table holds the node, and posts the SETATTR. Counted by `prism agent
// stats`; the result is visible at once through the mount and survives a host restart after fsync.
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { agentStats, fuseSkipReason, run } from '../helpers/agent.js';
import { prism } from '../helpers/host.js';
import { mountedVolume } from '../helpers/mounted-volume.js';

const skip = fuseSkipReason();
const maybe = skip ? test.skip : test.serial;
if (skip) test('posted metadata (skipped)', (t) => { t.log(skip); t.pass(); });

const N = 40;

maybe('a `prism put` into the volume makes chmod synchronous again; unlinks always wait for their REMOVE', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'd');
  fs.mkdirSync(dir);
  for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(dir, `f${i}`), `file ${i}\n`);
  const b0 = (await agentStats(m.agent)).counters;
  fs.chmodSync(path.join(dir, 'f0'), 0o600);
  fs.unlinkSync(path.join(dir, 'f1'));
  t.false(fs.existsSync(path.join(dir, 'f1')));
  const a0 = (await agentStats(m.agent)).counters;
  t.is(a0.postedMeta - b0.postedMeta, 1, 'the chmod, not the unlink');
  // The host itself changes the volume: from then on the agent asks it (its table's mark is gone).
  const src = path.join(m.dir, 'src.txt');
  fs.writeFileSync(src, 'from the host\n');
  t.is(prism(m.store, ['put', 'vol:/d/from-host', src]).code, 0);
  const b1 = (await agentStats(m.agent)).counters;
  fs.chmodSync(path.join(dir, 'f2'), 0o640);
  fs.chmodSync(path.join(dir, 'from-host'), 0o600);
  t.is(fs.statSync(path.join(dir, 'f2')).mode & 0o7777, 0o640);
  const a1 = (await agentStats(m.agent)).counters;
  t.is(a1.postedMeta - b1.postedMeta, 0, 'not posted once the host changed the volume');
  t.is((a1.rpcsByProc.SETATTR ?? 0) - (b1.rpcsByProc.SETATTR ?? 0), 2);
});

maybe('chmod and utime on a volume of one VM are posted and seen exactly at once', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'c');
  fs.mkdirSync(dir);
  for (let i = 0; i < N; i++) fs.writeFileSync(path.join(dir, `f${i}`), `file ${i}\n`);
  for (let i = 0; i < N; i++) fs.statSync(path.join(dir, `f${i}`));
  const before = (await agentStats(m.agent)).counters;
  for (let i = 0; i < N; i++) {
    const p = path.join(dir, `f${i}`);
    const c0 = fs.statSync(p).ctimeMs;
    fs.chmodSync(p, 0o600 + (i % 8));
    t.is(fs.statSync(p).mode & 0o7777, 0o600 + (i % 8)); // asks the host (the table is behind), so the reply is read
    fs.utimesSync(p, 1000 + i, 2000 + i);
    const s = fs.statSync(p);
    t.is(s.mode & 0o7777, 0o600 + (i % 8));
    t.is(s.atimeMs, (1000 + i) * 1000);
    t.is(s.mtimeMs, (2000 + i) * 1000);
    t.true(s.ctimeMs >= c0);
    t.is(fs.statSync(p).ctimeMs, s.ctimeMs, 'ctime is the host\'s, stable');
  }
  const after = (await agentStats(m.agent)).counters;
  t.is(after.postedMeta - before.postedMeta, 2 * N);
  t.is((after.rpcsByProc.SETATTR ?? 0) - (before.rpcsByProc.SETATTR ?? 0), 2 * N);
  // An unprivileged user cannot chmod another's file: the kernel refuses before the agent is asked.
  t.throws(() => run('chmod', ['777', path.join(dir, 'f0')], { uid: 65534, gid: 65534 }));
  t.is(fs.statSync(path.join(dir, 'f0')).mode & 0o7777, 0o600);
  // Durable once the file is fsynced: a restarted host has them.
  for (let i = 0; i < N; i++) {
    const fd = fs.openSync(path.join(dir, `f${i}`), 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  await m.host.stop();
  await m.restartHost();
  t.is(fs.statSync(path.join(dir, 'f3')).mode & 0o7777, 0o603);
  t.is(fs.statSync(path.join(dir, 'f3')).mtimeMs, 2003 * 1000);
});

maybe('over TCP (no table) every chmod waits for its SETATTR', async (t) => {
  const m = await mountedVolume(t, 'tcp');
  fs.writeFileSync(path.join(m.mp, 'x'), 'x\n');
  const before = (await agentStats(m.agent)).counters;
  fs.chmodSync(path.join(m.mp, 'x'), 0o600);
  const after = (await agentStats(m.agent)).counters;
  t.is(after.postedMeta - before.postedMeta, 0);
  t.is(fs.statSync(path.join(m.mp, 'x')).mode & 0o7777, 0o600);
});
