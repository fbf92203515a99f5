// A mount with the kernel's writeback cache (--writeback-cache): small writes reach the agent merged
// (counted WRITE RPCs, not timed), what was written is on the host after close with the size and mtime
// the kernel showed, write errors (a full volume) still surface at fsync and close, and two VMs on one
// volume see each other's sizes (the kernel keeps its own until the notifier prunes the node).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { kernelTakesPrune } from '../../src/guest-agent/fuse/protocol.js';
import { agentStats, fuseSkipReason } from '../helpers/agent.js';
import { isoNs, prism, prismBin } from '../helpers/host.js';
import { fullVolumeKeepsWhatFits } from '../helpers/full-volume.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { LONG_CACHE, twoVms } from '../helpers/two-vms.js';

const reason = fuseSkipReason();
const t = reason ? test.skip : test.serial;
if (reason) console.error(`writeback-cache.test: skipped: ${reason}`);

const PAGES = 256;
const PAGE = 4096;

/** 256 pwrites of 4 KiB at shuffled page offsets of a 1 MiB file, then close; returns the WRITE RPCs they cost. */
async function randomWrites(m: Awaited<ReturnType<typeof mountedVolume>>, name: string): Promise<{ writes: number; expected: Buffer }> {
  const writesBefore = (await agentStats(m.agent)).counters.rpcsByProc.WRITE ?? 0;
  const expected = Buffer.alloc(PAGES * PAGE);
  const order = Array.from({ length: PAGES }, (_, i) => (i * 97) % PAGES); // 97 is prime to 256: each page once
  const fd = fs.openSync(path.join(m.mp, name), 'w');
  for (const p of order) {
    const page = Buffer.alloc(PAGE, p & 0xff);
    page.writeUInt32LE(p, 0);
    page.copy(expected, p * PAGE);
    fs.writeSync(fd, page, 0, PAGE, p * PAGE);
  }
  fs.closeSync(fd);
  return { writes: ((await agentStats(m.agent)).counters.rpcsByProc.WRITE ?? 0) - writesBefore, expected };
}

t('small random writes reach the host merged, and all of them are there after close', async (tt) => {
  const wb = await mountedVolume(tt, 'shm', { agentArgs: ['--writeback-cache'] });
  const { writes, expected } = await randomWrites(wb, 'f');
  // Without the cache each pwrite is a WRITE (checked below); with it the dirty pages go out together.
  tt.log(`${writes} WRITE RPCs`);
  tt.true(writes < PAGES / 4, `${writes} WRITE RPCs for ${PAGES} pwrites`);
  tt.true(fs.readFileSync(path.join(wb.mp, 'f')).equals(expected));
  const st = fs.statSync(path.join(wb.mp, 'f'), { bigint: true });
  tt.is(st.size, BigInt(PAGES * PAGE));
  // The host has what the kernel showed: the data, the size and the mtime it kept and wrote back at close.
  await wb.host.stop();
  tt.true(Buffer.from(spawnSync(process.execPath, [prismBin, '--store', wb.store, 'cat', 'vol:/f']).stdout).equals(expected));
  const host = JSON.parse(prism(wb.store, ['stat', 'vol:/f', '--json']).out) as { size: number; mtime: string };
  tt.is(host.size, PAGES * PAGE);
  tt.is(host.mtime, isoNs(st.mtimeNs));

  const plain = await mountedVolume(tt, 'shm', { agentArgs: ['--no-writeback-cache'] });
  tt.is((await randomWrites(plain, 'f')).writes, PAGES);
});

t('the times the kernel sends back after a rename or an unlink cost no RPC; a utimensat to the same mtime still does', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { agentArgs: ['--writeback-cache'] });
  const setattrs = async () => { const by = (await agentStats(m.agent)).counters.rpcsByProc; return (by.SETATTR ?? 0) + (by.SETATTR_AT ?? 0); };
  for (let i = 0; i < 10; i++) fs.writeFileSync(path.join(m.mp, `f${i}`), `file ${i}`);
  spawnSync('sync', ['-f', m.mp]);
  const before = await setattrs();
  for (let i = 0; i < 10; i++) fs.renameSync(path.join(m.mp, `f${i}`), path.join(m.mp, `g${i}`));
  spawnSync('sync', ['-f', m.mp]); // the kernel writes back each renamed file's ctime (a SETATTR)
  tt.is(await setattrs(), before, 'SETATTRs sent after the renames');
  // touch -m to the mtime it has: the kernel sends a ctime of now, newer than the host's, so it goes.
  const st = fs.statSync(path.join(m.mp, 'g0'), { bigint: true });
  const at = `@${st.mtimeNs / 1_000_000_000n}.${String(st.mtimeNs % 1_000_000_000n).padStart(9, '0')}`;
  tt.is(spawnSync('touch', ['-m', '-d', at, path.join(m.mp, 'g0')]).status, 0);
  tt.is(await setattrs(), before + 1, 'the touch -m is sent');
  tt.is(fs.readFileSync(path.join(m.mp, 'g9'), 'utf8'), 'file 9');
  // An unlinked file's times come back too, when the table no longer holds it.
  // RPCs but the background COMMITs (the agent sends one a second while data waits to be committed).
  const rpcs = async () => { const c = (await agentStats(m.agent)).counters; return c.rpcs - (c.rpcsByProc.COMMIT ?? 0); };
  const beforeUnlinks = await rpcs();
  for (let i = 1; i < 10; i++) fs.unlinkSync(path.join(m.mp, `g${i}`));
  spawnSync('sync', ['-f', m.mp]);
  tt.is(await setattrs(), before + 1, 'SETATTRs sent after the unlinks');
  tt.is(await rpcs(), beforeUnlinks + 9, 'one RPC (the REMOVE) per unlink');
  tt.deepEqual(fs.readdirSync(m.mp), ['g0']);
});

t('by default the cache is on where only this VM changes the volume and the kernel can prune, else off', async (tt) => {
  const sole = await mountedVolume(tt, 'shm');
  tt.is((await agentStats(sole.agent)).writebackCache, kernelTakesPrune(os.release()), `kernel ${os.release()}`);
  const { a } = await twoVms(tt, { a: [], b: [] });
  tt.false((await agentStats(a)).writebackCache, 'a volume two VMs mount');
  const tcp = await mountedVolume(tt, 'tcp');
  tt.false((await agentStats(tcp.agent)).writebackCache, 'no metadata table: nothing says the volume is this VM\'s alone');
  const off = await mountedVolume(tt, 'shm', { agentArgs: ['--no-writeback-cache'] });
  tt.false((await agentStats(off.agent)).writebackCache);
});

t('files created, written and closed: no wait for the host at close, and their times sent back only when the kernel changed them', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { agentArgs: ['--writeback-cache'] });
  fs.mkdirSync(path.join(m.mp, 'd'));
  const before = (await agentStats(m.agent)).counters;
  const n = 50;
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(m.mp, 'd', `f${i}`), `file ${i}\n`);
  const after = (await agentStats(m.agent)).counters;
  const sent = (p: string) => (after.rpcsByProc[p] ?? 0) - (before.rpcsByProc[p] ?? 0);
  // A create stamped with the kernel's coarse clock: a write within the same tick leaves the times,
  // and the kernel has none to send back (a later tick: a SETATTR, posted behind the WRITE).
  tt.true(sent('SETATTR') + sent('SETATTR_AT') < n, `${sent('SETATTR')} SETATTRs for ${n} files`);
  tt.is(sent('WRITE'), n);
  // No quota, room on the host's disk: a close waits for nothing (errors are left to fsync).
  tt.true(after.settles - before.settles <= 2, `${after.settles - before.settles} waits for ${n} files`);
  // What the kernel showed is what the host has, times to the nanosecond, whether or not they were sent back.
  const shown = new Map(fs.readdirSync(path.join(m.mp, 'd')).map((f) => [f, fs.statSync(path.join(m.mp, 'd', f), { bigint: true })]));
  await m.host.stop();
  const host = JSON.parse(prism(m.store, ['ls', 'vol:/d', '--json']).out) as Array<{ name: string; size: number; mtime: string; ctime: string }>;
  tt.is(host.length, n);
  for (const h of host) {
    const st = shown.get(h.name)!;
    tt.deepEqual([h.size, h.mtime, h.ctime], [Number(st.size), isoNs(st.mtimeNs), isoNs(st.ctimeNs)], h.name);
  }
});

t('a full volume: errors of cached writes surface at fsync and at close, and nothing else is lost', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { quota: '1M', agentArgs: ['--writeback-cache'] });
  fullVolumeKeepsWhatFits(tt, m.mp); // the write() calls land in the page cache; close and fsync report the error
});

t('two VMs with the cache on one volume: a file the other VM extends or truncates is seen at once, kernel caches of 30 s', async (tt) => {
  const { a, b } = await twoVms(tt, { a: ['--writeback-cache', ...LONG_CACHE], b: ['--writeback-cache', ...LONG_CACHE] });
  const A = a.mp, B = b.mp;
  fs.writeFileSync(`${A}/f`, 'short\n');
  tt.is(fs.readFileSync(`${B}/f`, 'utf8'), 'short\n'); // b's kernel now holds the node, size 6
  fs.writeFileSync(`${A}/f`, 'much longer content\n');
  tt.is(fs.statSync(`${B}/f`).size, 20);
  tt.is(fs.readFileSync(`${B}/f`, 'utf8'), 'much longer content\n');
  fs.truncateSync(`${A}/f`, 4);
  tt.is(fs.readFileSync(`${B}/f`, 'utf8'), 'much');
  fs.appendFileSync(`${B}/f`, ' more'); // and the other way round, through b's own cache
  tt.is(fs.readFileSync(`${A}/f`, 'utf8'), 'much more');
  tt.true((await agentStats(b)).counters.prunes > 0, 'nodes pruned by b');
});

t('closes with nothing to wait for turn FLUSH off: one FLUSH for many files, whose data is on the host at close all the same; a quota set later is still reported by close and fsync', async (tt) => {
  const m = await mountedVolume(tt, 'shm', { agentArgs: ['--writeback-cache'] });
  const before = (await agentStats(m.agent)).counters;
  const n = 20;
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(m.mp, `f${i}`), `file ${i}\n`);
  const after = (await agentStats(m.agent)).counters;
  tt.is(after.flushes - before.flushes, 1, 'FLUSHes for 20 closes: the first one is answered ENOSYS, and the kernel sends no more');
  // The kernel writes a file's dirty pages back at close and waits for them, FLUSH or not.
  tt.is((after.rpcsByProc.WRITE ?? 0) - (before.rpcsByProc.WRITE ?? 0), n, 'WRITEs sent by the closes');

  // The volume is bounded now: WRITEs wait for the host, files are made by it, and what does not fit
  // is reported by close (as the kernel keeps writeback errors: EIO) and by fsync.
  tt.is(prism(m.store, ['volume', 'quota', 'vol', '1M']).code, 0);
  const creates = (after.rpcsByProc.CREATE ?? 0);
  const big = path.join(m.mp, 'big');
  const fd = fs.openSync(big, 'w');
  const chunk = Buffer.alloc(64 << 10, 7);
  for (let i = 0; i < 32; i++) fs.writeSync(fd, chunk); // 2 MiB into the page cache
  const closed = (() => { try { fs.closeSync(fd); return 'ok'; } catch (e) { return (e as NodeJS.ErrnoException).code; } })();
  tt.is(closed, 'EIO', 'close reports the writes the quota refused');
  const c = (await agentStats(m.agent)).counters;
  tt.is((c.rpcsByProc.CREATE ?? 0) - creates, 1, 'the file was made by the host (a refused create could not be reported at close)');
  tt.is(c.flushes, after.flushes, 'still no FLUSH');
  const fsync = spawnSync('python3', ['-c', `import os
fd=os.open(${JSON.stringify(path.join(m.mp, 'more'))},os.O_CREAT|os.O_WRONLY)
try:
  for i in range(32): os.write(fd,os.urandom(65536))
  os.fsync(fd)
  print('no error')
except OSError as e: print(e.errno)`], { encoding: 'utf8' });
  tt.not(fsync.stdout.trim(), 'no error', 'fsync reports it');
  for (let i = 0; i < n; i++) tt.is(fs.readFileSync(path.join(m.mp, `f${i}`), 'utf8'), `file ${i}\n`);
  fs.unlinkSync(big);
  fs.unlinkSync(path.join(m.mp, 'more'));
  fs.writeFileSync(path.join(m.mp, 'after'), Buffer.alloc(100_000, 1)); // room again
  tt.is(fs.statSync(path.join(m.mp, 'after')).size, 100_000);
  await m.host.stop();
  tt.is(spawnSync(process.execPath, [prismBin, '--store', m.store, 'cat', 'vol:/f7'], { encoding: 'utf8' }).stdout, 'file 7\n');
});
