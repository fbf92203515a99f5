// Posted chmod/chown/utime in VrpcFs against a fake host and an in-memory metadata table: when the agent may
// answer itself, what bypasses the table until the reply, and how a late error is reported.
import test from 'ava';
import { PrismError } from '../../src/errors.js';
import type { Link } from '../../src/guest-agent/host-link.js';
import { VrpcFs } from '../../src/guest-agent/vrpc-fs.js';
import { MetaTable } from '../../src/metadata-share/table.js';
import { Proc } from '../../src/protocol/procs.js';

const VOL = 7, ROOT_INO = 2, FILE = 5, DIR = 6, FILE2 = 8;
const ctx = { uid: 0, gid: 0, pid: 1 };
const fhOf = (ino: number) => Buffer.from([1, 0, 0, 0, VOL, ino]);
const attrOf = (ino: number, mode: number) => [ino, mode, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0];

/** A host that answers posted calls when a later call or settle() reads them, as SyncLink does. */
class FakeHost implements Link {
  readonly sent: Proc[] = [];
  readonly postedProcs: Proc[] = [];
  removeFails: PrismError | null = null;
  setattrFails: PrismError | null = null;
  removed = new Set<string>();
  private readonly queue: Array<() => void> = [];
  table?: MetaTable;

  post = (proc: Proc, args: unknown[]): Promise<unknown[]> => new Promise((resolve, reject) => {
    this.postedProcs.push(proc);
    this.queue.push(() => { try { resolve(this.run(proc, args)); } catch (e) { reject(e); } });
  });

  settle?: () => void = () => { this.answerAll(); };
  answerAll(): void { for (const answer of this.queue.splice(0)) answer(); }
  get pending(): number { return this.queue.length; }

  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    this.answerAll(); // replies of posted calls come first on the channel
    this.sent.push(proc);
    try {
      const r = this.run(proc, args);
      return Promise.resolve(take ? take(r) : r);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private run(proc: Proc, args: unknown[]): unknown[] {
    const name = () => Buffer.from(args[1] as Uint8Array).toString('latin1');
    switch (proc) {
      case Proc.REMOVE:
        if (this.removeFails) throw this.removeFails;
        if (this.removed.has(name())) throw new PrismError('ENOENT', 'no entry');
        this.removed.add(name());
        this.table?.putEntry(VOL, ROOT_INO, Buffer.from(name()), null); // published before the reply, as the host does
        return [];
      case Proc.LOOKUP:
        if (this.removed.has(name())) throw new PrismError('ENOENT', 'no entry');
        return [fhOf(FILE), attrOf(FILE, 0o100644)];
      case Proc.SETATTR:
        if (this.setattrFails) throw this.setattrFails;
        this.table?.putAttr(VOL, FILE, attrOf(FILE, 0o100600), false);
        return [attrOf(FILE, 0o100600)];
      case Proc.GETATTR:
        return [attrOf(FILE, 0o100600)];
      case Proc.COMMIT:
        return [Buffer.alloc(8, 1)];
      default:
        throw new PrismError('ENOSYS', `not in the fake: ${proc}`);
    }
  }
}

function setup(o: { sole?: boolean; settle?: boolean } = {}): { host: FakeHost; fs: VrpcFs; table: MetaTable } {
  const table = MetaTable.create(new ArrayBuffer(1 << 20), 16);
  if (o.sole ?? true) table.markSole(VOL);
  table.putEntry(VOL, ROOT_INO, Buffer.from('a'), { fh: fhOf(FILE), ino: FILE });
  table.putAttr(VOL, FILE, attrOf(FILE, 0o100644), false);
  table.putEntry(VOL, ROOT_INO, Buffer.from('b'), { fh: fhOf(FILE2), ino: FILE2 });
  table.putAttr(VOL, FILE2, attrOf(FILE2, 0o100644), false);
  table.putEntry(VOL, ROOT_INO, Buffer.from('d'), { fh: fhOf(DIR), ino: DIR });
  table.putAttr(VOL, DIR, attrOf(DIR, 0o040755), false);
  table.putAttr(VOL, ROOT_INO, attrOf(ROOT_INO, 0o040755), false);
  const host = new FakeHost();
  host.table = table;
  if (o.settle === false) host.settle = undefined;
  const fs = new VrpcFs(host, fhOf(ROOT_INO), ROOT_INO, { shared: table });
  return { host, fs, table };
}

test('an unlink waits for its REMOVE (not posted: the kernel asks for the directory right after)', async (t) => {
  const { host, fs } = setup();
  await fs.unlink(ctx, 1n, 'a');
  t.deepEqual(host.postedProcs, []);
  t.deepEqual(host.sent, [Proc.REMOVE]);
});

test('without the host\'s sole mark, or for a node the table lacks, a chmod waits for its SETATTR', async (t) => {
  const shared = setup({ sole: false });
  await shared.fs.lookup(ctx, 1n, 'a');
  await shared.fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(shared.host.postedProcs, []);
  t.deepEqual(shared.host.sent, [Proc.SETATTR]);
  const { host, fs } = setup();
  await fs.lookup(ctx, 1n, 'a');
  host.table!.removeAttr(VOL, FILE);
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(host.postedProcs, []);
  t.deepEqual(host.sent, [Proc.SETATTR]);
});

test('until a posted SETATTR\'s reply is read the table answers nothing about the node; without a link that can read replies, the host is asked', async (t) => {
  const tcp = setup({ settle: false });
  await tcp.fs.lookup(ctx, 1n, 'a');
  await tcp.fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(tcp.host.postedProcs, [Proc.SETATTR]);
  const g = await tcp.fs.getattr(ctx, BigInt(FILE));
  t.deepEqual(tcp.host.sent, [Proc.GETATTR]);
  t.is(g.mode, 0o100600);
});

test('a chmod or utime of a node the table holds is posted; its reply is not cached by the kernel, and getattr asks the host until the SETATTR is answered', async (t) => {
  const { host, fs } = setup();
  await fs.lookup(ctx, 1n, 'a'); // the kernel knows the node (from the table: no RPC)
  const a = await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600, mtime: [5, 6], atime: 'now' });
  t.deepEqual(host.postedProcs, [Proc.SETATTR]);
  t.deepEqual(host.sent, []);
  t.is(a.mode, 0o100600);
  t.deepEqual(a.mtime, [5, 6]);
  t.is(a.validSec, 0, 'the host stamps ctime: the kernel asks again');
  const g = await fs.getattr(ctx, BigInt(FILE));
  t.deepEqual(host.sent, [], 'from the table once the reply is read (the host updated it first)');
  t.is(g.mode, 0o100600);
  t.is(g.validSec, undefined);
  // A truncation is not posted (kept with the file's writes), nor is anything without the mark.
  const shared = setup({ sole: false });
  await shared.fs.lookup(ctx, 1n, 'a');
  shared.host.sent.length = 0;
  await shared.fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(shared.host.sent, [Proc.SETATTR]);
  t.deepEqual(shared.host.postedProcs, []);
});

test('an error the host gives for a posted SETATTR is reported by the file\'s next fsync', async (t) => {
  const { host, fs } = setup();
  host.setattrFails = new PrismError('ENOSPC', 'the store is full');
  await fs.lookup(ctx, 1n, 'a');
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  const err = await t.throwsAsync(fs.fsync(ctx, BigInt(FILE)));
  t.is((err as PrismError).code, 'ENOSPC');
  await t.notThrowsAsync(fs.fsync(ctx, BigInt(FILE)));
});
