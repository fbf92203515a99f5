// Posted unlinks, renames and SETATTRs in VrpcFs against a fake host and an in-memory metadata table: when the agent may
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
  /** The last argument of each posted call (the time, for the *_AT procedures). */
  readonly postedLast: unknown[] = [];
  removeFails: PrismError | null = null;
  setattrFails: PrismError | null = null;
  /** An older host (version 2 before SETATTR_AT) answers it ENOSYS. */
  knowsSetattrAt = true;
  removed = new Set<string>();
  private readonly queue: Array<() => void> = [];
  table?: MetaTable;

  post = (proc: Proc, args: unknown[]): Promise<unknown[]> => new Promise((resolve, reject) => {
    this.postedProcs.push(proc);
    this.postedLast.push(args[args.length - 1]);
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
      case Proc.REMOVE_AT:
        if (this.removeFails) throw this.removeFails;
        if (this.removed.has(name())) throw new PrismError('ENOENT', 'no entry');
        this.removed.add(name());
        this.table?.putEntry(VOL, ROOT_INO, Buffer.from(name()), null); // published before the reply, as the host does
        return [];
      case Proc.RENAME:
      case Proc.RENAME_AT: {
        const from = Buffer.from(name()), to = Buffer.from(args[3] as Uint8Array);
        const e = this.table?.getEntry(VOL, ROOT_INO, from);
        if (!e) throw new PrismError('ENOENT', 'no entry');
        // Published before the reply, as the host does.
        this.table?.putEntry(VOL, ROOT_INO, from, null);
        this.table?.putEntry(VOL, ROOT_INO, to, { fh: Buffer.from(e.fh), ino: e.ino });
        return [];
      }
      case Proc.LOOKUP:
        if (this.removed.has(name())) throw new PrismError('ENOENT', 'no entry');
        return [fhOf(FILE), attrOf(FILE, 0o100644)];
      case Proc.SETATTR:
        if (this.setattrFails) throw this.setattrFails;
        this.table?.putAttr(VOL, FILE, attrOf(FILE, 0o100600), false);
        return [attrOf(FILE, 0o100600)];
      case Proc.SETATTR_AT: {
        if (!this.knowsSetattrAt) throw new PrismError('ENOSYS', 'SETATTR_AT is not known here');
        if (this.setattrFails) throw this.setattrFails;
        // As the store makes it: the mode bits and times given, "now" and ctime the call's time.
        const [set, at] = [args[1] as Array<number | [number, number] | true | null>, args[2] as [number, number]];
        const was = this.table!.getAttr(VOL, FILE)!;
        const time = (t: [number, number] | true | null | number, s: number, ns: number) => (t === null ? [s, ns] : t === true ? at : t as [number, number]);
        const a = [...was] as typeof was;
        if (set[0] !== null) a[1] = (was[1] & 0o170000) | (set[0] as number);
        [a[8], a[9]] = time(set[4]!, was[8], was[9]);
        [a[10], a[11]] = time(set[5]!, was[10], was[11]);
        [a[12], a[13]] = at;
        this.table?.putAttr(VOL, FILE, a, false);
        return [a];
      }
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

test('an unlink the table can answer is posted; until its reply is read the table answers nothing about the name and both nodes', async (t) => {
  const { host, fs } = setup();
  await fs.unlink(ctx, 1n, 'a');
  await fs.unlink(ctx, 1n, 'b'); // another name of the same directory: posted too
  t.deepEqual(host.postedProcs, [Proc.REMOVE_AT, Proc.REMOVE_AT], 'stamped with the agent\'s time');
  t.deepEqual(host.sent, [], 'nothing waited for');
  t.is(fs.counters.get('postedMeta'), 2);
  // The table still says "a" exists: the agent reads the replies first (the host publishes before
  // replying), then answers from the table, with no RPC of its own.
  const err = await t.throwsAsync(fs.lookup(ctx, 1n, 'a'));
  t.is((err as PrismError).code, 'ENOENT');
  t.deepEqual(host.sent, []);
  t.is(host.pending, 0, 'the replies were read');
  await t.notThrowsAsync(fs.fsync(ctx, 1n));
  // The directory's attributes right after (the kernel checks the next unlink's permission with
  // them): as the host will make them, mtime and ctime the time the REMOVE_AT carries, so the kernel
  // may keep them; not waited for.
  const other = setup({ settle: false });
  await other.fs.unlink(ctx, 1n, 'a');
  const dir = await other.fs.getattr(ctx, 1n);
  t.deepEqual(other.host.sent, [], 'no RPC, no wait for the REMOVE');
  t.not(dir.validSec, 0, 'exact: the kernel may keep it');
  t.deepEqual(dir.mtime, other.host.postedLast[0]);
  t.deepEqual(dir.ctime, other.host.postedLast[0]);
});

test('an error the host gives for a posted REMOVE is reported by the directory\'s next fsync, once', async (t) => {
  const { host, fs } = setup();
  host.removeFails = new PrismError('EIO', 'the store failed');
  await fs.unlink(ctx, 1n, 'a');
  const err = await t.throwsAsync(fs.fsync(ctx, 1n));
  t.is((err as PrismError).code, 'EIO');
  await t.notThrowsAsync(fs.fsync(ctx, 1n), 'reported once');
});

test('ENOENT for a posted REMOVE (sent again after a host had applied it) is no error', async (t) => {
  const { host, fs } = setup();
  host.removed.add('a');
  await fs.unlink(ctx, 1n, 'a');
  await t.notThrowsAsync(fs.fsync(ctx, 1n));
});

test('without the host\'s sole mark, for a directory, or a name the table lacks, the unlink waits for its REMOVE', async (t) => {
  const shared = setup({ sole: false });
  await shared.fs.unlink(ctx, 1n, 'a');
  t.deepEqual(shared.host.postedProcs, []);
  t.deepEqual(shared.host.sent, [Proc.REMOVE]);

  const { host, fs } = setup();
  await fs.unlink(ctx, 1n, 'd'); // the kernel sends no UNLINK for a directory it knows, but the table decides here
  await fs.unlink(ctx, 1n, 'unknown');
  t.deepEqual(host.postedProcs, []);
  t.deepEqual(host.sent, [Proc.REMOVE, Proc.REMOVE]);
});

test('a chmod or utime of a node the table holds is posted, stamped with the agent\'s time: the host makes what the kernel was told, which it may keep', async (t) => {
  const { host, fs, table } = setup();
  await fs.lookup(ctx, 1n, 'a'); // the kernel knows the node (from the table: no RPC)
  // The first waits for its reply: it tells whether the host takes SETATTR_AT.
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o640 });
  t.deepEqual(host.sent, [Proc.SETATTR_AT]);
  host.sent.length = 0;
  const a = await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600, mtime: [5, 6], atime: 'now' });
  t.deepEqual(host.postedProcs, [Proc.SETATTR_AT]);
  t.deepEqual(host.sent, [], 'not waited for');
  t.is(a.mode, 0o100600);
  t.deepEqual(a.mtime, [5, 6]);
  t.is(a.validSec, undefined, 'the kernel may keep it');
  t.deepEqual(a.atime, a.ctime, '"now" is the change\'s time');
  host.answerAll();
  const made = table.getAttr(VOL, FILE)!;
  t.deepEqual([made[1], made[8], made[9], made[10], made[11], made[12], made[13]], [Number(a.mode), a.atime[0], a.atime[1], 5, 6, a.ctime[0], a.ctime[1]], 'the host made what the kernel was told');
  const g = await fs.getattr(ctx, BigInt(FILE));
  t.deepEqual(host.sent, [], 'from the table once the reply is read (the host updated it first)');
  t.is(g.mode, 0o100600);
  // A truncation is not posted (kept with the file's writes), nor is anything without the mark.
  const shared = setup({ sole: false });
  await shared.fs.lookup(ctx, 1n, 'a');
  shared.host.sent.length = 0;
  await shared.fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(shared.host.sent, [Proc.SETATTR]);
  t.deepEqual(shared.host.postedProcs, []);
});

test('a host without SETATTR_AT: chmod and utime are posted as SETATTRs, answered uncached, and getattr asks until the reply', async (t) => {
  const { host, fs } = setup();
  host.knowsSetattrAt = false;
  await fs.lookup(ctx, 1n, 'a');
  const a = await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600, mtime: [5, 6], atime: 'now' });
  t.deepEqual(host.sent, [Proc.SETATTR_AT], 'asked once');
  t.deepEqual(host.postedProcs, [Proc.SETATTR]);
  t.is(a.mode, 0o100600);
  t.is(a.validSec, 0, 'the host stamps ctime: the kernel asks again');
  host.answerAll();
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o644 });
  t.deepEqual(host.sent, [Proc.SETATTR_AT], 'not asked again');
  t.deepEqual(host.postedProcs, [Proc.SETATTR, Proc.SETATTR]);
});

test('an error the host gives for a posted SETATTR is reported by the file\'s next fsync', async (t) => {
  const { host, fs } = setup();
  await fs.lookup(ctx, 1n, 'a');
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o640 }); // the first waits (is the host's SETATTR_AT there?)
  host.setattrFails = new PrismError('ENOSPC', 'the store is full');
  await fs.setattr!(ctx, BigInt(FILE), { mode: 0o600 });
  t.deepEqual(host.postedProcs, [Proc.SETATTR_AT]);
  const err = await t.throwsAsync(fs.fsync(ctx, BigInt(FILE)));
  t.is((err as PrismError).code, 'ENOSPC');
  await t.notThrowsAsync(fs.fsync(ctx, BigInt(FILE)));
});

test('a rename the table can answer is posted: the new name is never answered absent before its reply, the directory\'s attributes are predicted', async (t) => {
  const { host, fs, table } = setup();
  table.markComplete(VOL, ROOT_INO); // "z" is absent by the table: a complete directory without it
  await t.throwsAsync(fs.lookup(ctx, 1n, 'z'), { message: /ENOENT/ });
  await fs.rename(ctx, 1n, 'a', 1n, 'z', 0);
  t.deepEqual(host.postedProcs, [Proc.RENAME_AT]);
  t.deepEqual(host.sent, [], 'nothing waited for');
  const dir = await fs.getattr(ctx, 1n);
  t.not(dir.validSec, 0, 'the directory\'s attributes are predicted exactly: the kernel may keep them');
  t.deepEqual([dir.mtime, dir.ctime], [host.postedLast[0], host.postedLast[0]]);
  t.is(host.pending, 1, 'and not waited for');
  const z = await fs.lookup(ctx, 1n, 'z'); // the table still lacks it: the reply is read first
  t.is(host.pending, 0);
  t.is(z.attr.mode & 0o170000, 0o100000);
  await t.throwsAsync(fs.lookup(ctx, 1n, 'a'), { message: /ENOENT/ });
  t.deepEqual(host.sent, [], 'answered from the table once the reply was read');
});

test('a rename onto a directory, an exchange, a no-replace onto a name, onto itself or without the sole mark waits for its reply', async (t) => {
  for (const [what, from, to, flags, sole] of [
    ['onto a directory', 'a', 'd', 0, true], ['exchange', 'a', 'b', 2, true], ['no-replace onto a name', 'a', 'b', 1, true],
    ['onto itself', 'a', 'a', 0, true], ['no sole mark', 'a', 'z', 0, false],
  ] as const) {
    const { host, fs } = setup({ sole });
    await fs.rename(ctx, 1n, from, 1n, to, flags).catch(() => undefined); // the fake answers only what it knows
    t.deepEqual(host.postedProcs, [], what);
    t.deepEqual(host.sent, [Proc.RENAME], what);
  }
});
