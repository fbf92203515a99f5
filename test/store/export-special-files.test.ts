// Export makes FIFOs, device nodes and sockets itself (mknod(2) through the files addon): their type,
// device numbers, mode, owner and times come out as the volume holds them.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { exportPath } from '../../src/store/export.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

const asRoot = process.getuid?.() === 0;
/** glibc's makedev for majors and minors of 12 and 20 bits: the high part lands in the upper word. */
const makedev = (major: number, minor: number): number =>
  (((minor >>> 20) & 0xfff) | (major & 0xfffff000)) * 2 ** 32 +
  (((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0);

test('export to a directory makes a fifo, a socket, and (as root) character and block devices', async (t) => {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  const v = store.createVolume('v');
  const root = v.rootIno;
  v.mknod(root, 'fifo', 0o010640, 0, 7, 8);
  v.mknod(root, 'sock', 0o140755, 0, 7, 8);
  const nullDev = makedev(1, 3), bigDev = makedev(259, 1048575);
  if (asRoot) {
    v.mknod(root, 'null', 0o020666, nullDev, 0, 0);
    v.mknod(root, 'blk', 0o060600, bigDev, 0, 6);
  }
  for (const name of ['fifo', 'sock']) v.setattr(v.resolve(`/${name}`), { mtime: [1600000000, 123456000] });

  const out = path.join(tmpDir(t), 'out');
  await exportPath(store, 'v', out);
  const st = (name: string) => fs.lstatSync(path.join(out, name), { bigint: false });
  t.true(st('fifo').isFIFO());
  t.is(st('fifo').mode & 0o7777, 0o640);
  t.true(st('sock').isSocket(), 'a socket file, with no server behind it');
  t.is(st('sock').mode & 0o7777, 0o755);
  t.is(Math.round(st('sock').mtimeMs), 1600000000123);
  if (asRoot) {
    t.is(st('fifo').uid, 7);
    t.is(st('fifo').gid, 8);
    t.true(st('null').isCharacterDevice());
    t.is(st('null').rdev, nullDev);
    t.is(st('null').mode & 0o7777, 0o666);
    t.true(st('blk').isBlockDevice());
    t.is(st('blk').rdev, bigDev, 'device numbers above 12/20 bits survive');
    t.is(st('blk').gid, 6);
  }
  t.deepEqual(fs.readdirSync(out).sort(), asRoot ? ['blk', 'fifo', 'null', 'sock'] : ['fifo', 'sock']);
});
