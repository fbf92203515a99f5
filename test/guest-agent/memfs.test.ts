// MemFs keeps spare capacity behind a file (so sequential writes are not copied once per write):
// the file's length is attr.size, never the buffer's, and bytes past a truncation read back as zeros.
import test from 'ava';
import { MemFs } from '../../src/guest-agent/fuse/memfs.js';

const ctx = { uid: 0, gid: 0, pid: 0 };

async function read(m: MemFs, ino: bigint, offset: number, size: number): Promise<Buffer> {
  let got = Buffer.alloc(0);
  await m.read(ctx, ino, 0n, BigInt(offset), size, (d) => { got = Buffer.from(d); });
  return got;
}

test('sizes follow writes and truncations, not the buffer behind them', async (t) => {
  const m = new MemFs();
  const { entry } = await m.create(ctx, 1n, 'f', 0o644);
  const ino = entry.ino;
  for (let i = 0; i < 5; i++) await m.write(ctx, ino, 0n, BigInt(i * 3), Buffer.from('abc'));
  t.is((await m.getattr(ctx, ino)).size, 15n);
  t.is((await read(m, ino, 0, 100)).toString(), 'abcabcabcabcabc');
  t.is((await read(m, ino, 20, 10)).length, 0);

  // A write inside the file does not change its size.
  await m.write(ctx, ino, 0n, 2n, Buffer.from('Z'));
  t.is((await m.getattr(ctx, ino)).size, 15n);

  // Truncate down, then extend: the cut bytes must not come back.
  t.is((await m.setattr(ctx, ino, { size: 4n })).size, 4n);
  t.is((await read(m, ino, 0, 100)).toString(), 'abZa');
  t.is((await m.setattr(ctx, ino, { size: 10n })).size, 10n);
  t.deepEqual(await read(m, ino, 0, 100), Buffer.concat([Buffer.from('abZa'), Buffer.alloc(6)]));
  await m.write(ctx, ino, 0n, 12n, Buffer.from('q'));
  t.deepEqual(await read(m, ino, 0, 100), Buffer.concat([Buffer.from('abZa'), Buffer.alloc(8), Buffer.from('q')]));

  // Growing well past the capacity keeps the contents.
  await m.setattr(ctx, ino, { size: 1n << 20n });
  t.is((await m.getattr(ctx, ino)).size, 1n << 20n);
  t.is((await read(m, ino, 0, 4)).toString(), 'abZa');
  t.deepEqual(await read(m, ino, (1 << 20) - 8, 100), Buffer.alloc(8));
});
