// Issue 11 (metadata-share trust boundary): the host maps its metadata table files read-write and
// guests trust what they hold, so a file someone else made or can write is refused, not adopted.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openMetaTable } from '../../src/metadata-share/file.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';

const n = nativeAvailable();
const why = !n.ok ? n.reason : process.geteuid?.() !== 0 ? 'giving a file to another user (chown) needs root' : undefined;
const t = why ? test.skip : test;
if (why) console.error(`metadata-share foreign-table-file.test: skipped: ${why}`);

t('the host refuses a metadata table file it did not make: a symlink, another owner\'s, or one anyone can write', (tt) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-meta-own-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const size = 1 << 20;
  const planted = path.join(dir, 'planted');
  fs.writeFileSync(planted, Buffer.alloc(size));
  const link = path.join(dir, 'prism-a-meta');
  fs.symlinkSync(planted, link);
  tt.throws(() => openMetaTable(link, size), { message: /ELOOP.*symbolic link/ });
  const foreign = path.join(dir, 'prism-b-meta');
  fs.writeFileSync(foreign, Buffer.alloc(size));
  fs.chownSync(foreign, 65534, 65534);
  tt.throws(() => openMetaTable(foreign, size), { message: /EACCES.*belongs to uid 65534/ });
  const open = path.join(dir, 'prism-c-meta');
  fs.writeFileSync(open, Buffer.alloc(size));
  fs.chmodSync(open, 0o666);
  tt.throws(() => openMetaTable(open, size), { message: /EEXIST.*has mode 0666/ });
  const ours = path.join(dir, 'prism-d-meta');
  const t = openMetaTable(ours, size);
  t.close();
  tt.is(fs.statSync(planted).size, size, 'the planted target untouched');
});
