// Mounts the in-memory FileSystem through the FUSE session and drives it with real syscalls.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemFs } from '../../src/guest-agent/fuse/memfs.js';
import * as native from '../../src/native/mount.js';
import { fuseSkipReason, mounted } from '../helpers/agent.js';
import { mountAndServe } from '../../src/guest-agent/fuse/session.js';

const reason = fuseSkipReason();
const t = reason ? test.skip : test.serial;
if (reason) console.error(`fuse.test: skipped: ${reason}`);

t('memfs over FUSE: mkdir, write/read, readdir, rename, unlink, stat, symlink', async (tt) => {
  const mp = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-fuse-'));
  const { done } = mountAndServe(mp, new MemFs());
  try {
    tt.true(mounted(mp));
    await fs.promises.mkdir(path.join(mp, 'd'), { mode: 0o750 });
    const st = await fs.promises.stat(path.join(mp, 'd'));
    tt.true(st.isDirectory());
    tt.is(st.mode & 0o777, 0o750);
    tt.is(st.nlink, 2);
    const data = Buffer.alloc(300_000, 'abc');
    await fs.promises.writeFile(path.join(mp, 'd', 'f'), data);
    tt.deepEqual(await fs.promises.readFile(path.join(mp, 'd', 'f')), data);
    const fst = await fs.promises.stat(path.join(mp, 'd', 'f'));
    tt.is(fst.size, data.length);
    tt.is(fst.nlink, 1);
    tt.true(fst.isFile());
    tt.deepEqual((await fs.promises.readdir(path.join(mp, 'd'))).sort(), ['f']);
    await fs.promises.rename(path.join(mp, 'd', 'f'), path.join(mp, 'g'));
    tt.deepEqual((await fs.promises.readdir(mp)).sort(), ['d', 'g']);
    tt.deepEqual(await fs.promises.readdir(path.join(mp, 'd')), []);
    await fs.promises.symlink('g', path.join(mp, 'l'));
    tt.is(await fs.promises.readlink(path.join(mp, 'l')), 'g');
    tt.true((await fs.promises.lstat(path.join(mp, 'l'))).isSymbolicLink());
    await fs.promises.unlink(path.join(mp, 'g'));
    await tt.throwsAsync(fs.promises.stat(path.join(mp, 'g')), { code: 'ENOENT' });
    await tt.throwsAsync(fs.promises.rmdir(mp + '/nope'), { code: 'ENOENT' });
    await fs.promises.rmdir(path.join(mp, 'd'));
    tt.deepEqual(await fs.promises.readdir(mp), ['l']);
  } finally {
    native.umount(mp, false);
    await done;
  }
  tt.false(mounted(mp));
  fs.rmdirSync(mp);
});

t('a killed server leaves a mount that umount -l cleans', async (tt) => {
  const mp = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-fuse-kill-'));
  const session = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/guest-agent/fuse/session.js');
  const memfs = path.join(path.dirname(session), 'memfs.js');
  const code = `const {mountAndServe}=await import(${JSON.stringify(session)});const {MemFs}=await import(${JSON.stringify(memfs)});mountAndServe(${JSON.stringify(mp)},new MemFs());console.log('up');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
  });
  tt.true(mounted(mp));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  tt.true(mounted(mp)); // the mount outlives its server
  const r = spawnSync('umount', ['-l', mp]);
  tt.is(r.status, 0, r.stderr?.toString());
  tt.false(mounted(mp));
  fs.rmdirSync(mp);
});
