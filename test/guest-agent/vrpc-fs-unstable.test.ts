// VrpcFs's handling of unstable writes against a fake host: the write verifier, kept data, background COMMITs.
import test from 'ava';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
import { PrismError } from '../../src/errors.js';
import { Proc } from '../../src/protocol/procs.js';
import type { Link } from '../../src/guest-agent/host-link.js';
import { VrpcFs } from '../../src/guest-agent/vrpc-fs.js';

const V1 = Buffer.alloc(8, 1), V2 = Buffer.alloc(8, 2);
const ROOT_INO = 2;
const ctx = { uid: 0, gid: 0, pid: 1 };
const fhOf = (ino: number) => Buffer.from([1, 0, 0, 0, 7, ino]);
const attrOf = (ino: number) => [ino, 0o100644, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/**
 * A host in memory. `mode`: 'tcp' answers WRITEs after `writeMs` (replies arrive while others are
 * in flight); 'shm' posts WRITEs and answers them when a later call or settle() reads them, as SyncLink.
 */
class FakeHost implements Link {
  verf = V1;
  /** Handles the host has (others: ESTALE). */
  readonly files = new Set<string>([fhOf(ROOT_INO).toString('latin1')]);
  commits = 0;
  writes = 0;
  /** Times the agent itself asked for the posted calls' replies (settle), a round trip on a SyncLink. */
  settles = 0;
  /**
   * What the host took, in order: `W<ino>` for a WRITE as it arrives, `C` for a COMMIT once done (it
   * makes durable what arrived before it arrived: `C<n>` says it covers the first n entries).
   */
  readonly took: string[] = [];
  writeMs = 0;
  commitMs = 0;
  /** COMMIT fails with EIO after this many ms (the host unreachable until the link's deadline). */
  commitFailsAfterMs: number | null = null;
  /** The next WRITE reply carries no verifier. */
  badReply = false;
  /** WRITEs fail with this while a file is being sent again. */
  refuse: PrismError | null = null;
  private readonly posted: Array<() => void> = [];
  post?: (proc: Proc, args: unknown[]) => Promise<unknown[]>;
  settle?: () => void;

  constructor(readonly mode: 'tcp' | 'shm' = 'tcp') {
    if (mode === 'shm') {
      this.post = (proc, args) => new Promise((resolve, reject) => {
        // Read by a later call or settle(): the promise settles then, synchronously, as SyncLink's.
        this.posted.push(() => { try { resolve(this.runNow(proc, args)); } catch (e) { reject(e); } });
      });
      this.settle = () => { this.settles++; this.answerPosted(); };
    }
  }

  file(ino: number): void { this.files.add(fhOf(ino).toString('latin1')); }

  private answerPosted(): void {
    for (const answer of this.posted.splice(0)) answer();
  }

  call(proc: Proc, args?: unknown[]): Promise<unknown[]>;
  call<T>(proc: Proc, args: unknown[], take: (r: unknown[]) => T): Promise<T>;
  call(proc: Proc, args: unknown[] = [], take?: (r: unknown[]) => unknown): Promise<unknown> {
    this.answerPosted(); // replies of posted calls come first on the channel
    const r = this.run(proc, args);
    return take ? r.then(take) : r;
  }

  private runNow(proc: Proc, args: unknown[]): unknown[] {
    switch (proc) {
      case Proc.LOOKUP: {
        const ino = Number(Buffer.from(args[1] as Uint8Array).toString('latin1').slice(1));
        return [fhOf(ino), attrOf(ino)];
      }
      case Proc.WRITE: {
        this.writes++;
        this.took.push(`W${(args[0] as Uint8Array)[5]}`);
        if (!this.files.has(Buffer.from(args[0] as Uint8Array).toString('latin1'))) throw new PrismError('ESTALE', 'no such file');
        if (this.refuse) throw this.refuse;
        if (this.badReply) { this.badReply = false; return [(args[2] as Buffer).length, 0]; }
        return [(args[2] as Buffer).length, 0, this.verf];
      }
      case Proc.REMOVEXATTR: // the first write of a file drops its capabilities: the fake's files have none
        throw new PrismError('ENODATA', 'no such attribute');
      default:
        throw new PrismError('ENOSYS', `not in the fake: ${proc}`);
    }
  }

  private async run(proc: Proc, args: unknown[]): Promise<unknown[]> {
    switch (proc) {
      case Proc.WRITE: {
        const r = this.runNow(proc, args);
        if (this.writeMs) await sleep(this.writeMs);
        return r;
      }
      case Proc.COMMIT: {
        this.commits++;
        const covers = this.took.length;
        if (this.commitFailsAfterMs !== null) {
          await sleep(this.commitFailsAfterMs);
          throw new PrismError('EIO', 'the host did not answer in time');
        }
        const verf = this.verf;
        if (this.commitMs) await sleep(this.commitMs);
        this.took.push(`C${covers}`);
        return [verf];
      }
      default:
        return this.runNow(proc, args);
    }
  }
}

async function mount(host: FakeHost, ...inos: number[]): Promise<VrpcFs> {
  const fs = new VrpcFs(host, fhOf(ROOT_INO), ROOT_INO);
  for (const ino of inos) {
    host.file(ino);
    await fs.lookup(ctx, 1n, `f${ino}`);
  }
  return fs;
}

/** The background COMMIT, as the timer or the bound starts it; resolves when it ends. */
async function commitBehind(fs: VrpcFs): Promise<void> {
  const p = (fs as unknown as { writeBehind: { commitBehind(): void; behind: Promise<unknown> | null } }).writeBehind;
  p.commitBehind();
  await p.behind;
}

/** Bytes the agent holds (kept or in flight). */
const held = (fs: VrpcFs) => (fs as unknown as { writeBehind: { unstable: { bytes: number } } }).writeBehind.unstable.bytes;

const data = (n: number, fill = 1) => Buffer.alloc(n, fill);

test('a background COMMIT that sends a file again to a restarted host that lost it: the next fsync fails with EIO, once', async (t) => {
  const host = new FakeHost();
  const fs = await mount(host, 5, 6);
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  await fs.flush(ctx, 5n);
  // The host restarts and no longer has file 5 (made less than a commit before it was killed).
  host.verf = V2;
  host.files.delete(fhOf(5).toString('latin1'));
  // A reply from the new instance starts a background COMMIT, which sends file 5's write again: ESTALE.
  await fs.write(ctx, 6n, 1n, 0n, data(10));
  await fs.flush(ctx, 6n);
  for (let i = 0; i < 100 && host.commits === 0; i++) await tick();
  await commitBehind(fs);
  t.true(host.commits > 0, 'a background COMMIT ran');
  const err = await t.throwsAsync(fs.fsync(ctx, 5n));
  t.is((err as PrismError).code, 'EIO');
  await t.notThrowsAsync(fs.fsync(ctx, 5n), 'reported once');
  await t.notThrowsAsync(fs.fsync(ctx, 6n), 'other files are not concerned');
  fs.close?.();
});

test('a change refused when sent again in the background (EDQUOT) is reported by the next flush', async (t) => {
  const host = new FakeHost();
  const fs = await mount(host, 5);
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  await fs.flush(ctx, 5n);
  host.verf = V2;
  host.refuse = new PrismError('EDQUOT', 'quota exceeded');
  // The restart seen in a COMMIT reply: the background commit goes round again and sends file 5 again.
  await commitBehind(fs);
  host.refuse = null;
  const err = await t.throwsAsync(fs.flush(ctx, 5n));
  t.is((err as PrismError).code, 'EDQUOT');
  await t.notThrowsAsync(fs.flush(ctx, 5n));
  fs.close?.();
});

test('tcp: a background COMMIT during a stream of writes is one COMMIT, not 8 and an EIO', async (t) => {
  const host = new FakeHost('tcp');
  host.writeMs = 5; // a WRITE is always in flight when a COMMIT is sent
  host.commitMs = 3;
  const fs = await mount(host, 5);
  let stop = false;
  let off = 0n;
  const stream = (async () => {
    while (!stop) {
      await fs.write(ctx, 5n, 1n, off, data(512));
      off += 512n;
      await tick();
    }
  })();
  await sleep(10);
  const before = host.commits;
  await commitBehind(fs);
  const commits = host.commits - before;
  stop = true;
  await stream;
  await fs.fsync(ctx, 5n);
  t.is(commits, 1, 'no round again without a restart');
  t.is(held(fs), 0);
  fs.close?.();
});

test('shm: a background COMMIT collects the posted writes\' replies first: one host COMMIT covers them', async (t) => {
  const host = new FakeHost('shm');
  const fs = await mount(host, 5);
  for (let i = 0; i < 3; i++) await fs.write(ctx, 5n, 1n, BigInt(i * 100), data(100));
  const before = host.commits;
  await commitBehind(fs);
  t.is(host.commits - before, 1);
  t.is(held(fs), 0, 'the COMMIT covered them');
  const before2 = host.commits;
  await fs.fsync(ctx, 5n);
  t.is(host.commits - before2, 1);
  fs.close?.();
});

test('a host restart during the COMMIT still sends the data again and commits it (fsync goes round again)', async (t) => {
  const host = new FakeHost('tcp');
  const fs = await mount(host, 5);
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  await fs.flush(ctx, 5n);
  host.verf = V2; // the write was answered by V1; the COMMIT by V2
  const writes = host.writes;
  await fs.fsync(ctx, 5n);
  t.is(host.writes - writes, 1, 'sent again, once');
  // The fsync's two, and maybe the background one the restart starts (it finds the data sent again).
  t.true(host.commits >= 2 && host.commits <= 3, `${host.commits} COMMITs`);
  fs.close?.();
});

test('host unreachable with the bound full: write(2) fails with EIO when the background COMMIT fails, not never', async (t) => {
  const host = new FakeHost('tcp');
  const fs = await mount(host, 5);
  host.commitFailsAfterMs = 20;
  const MiB = 1 << 20;
  let failed: unknown = null;
  for (let i = 0; i < 70 && !failed; i++) {
    const w = fs.write(ctx, 5n, 1n, BigInt(i * MiB), data(MiB)).then(() => null, (e: unknown) => e);
    const r = await Promise.race([w, sleep(2000, 'hung')]);
    if (r === 'hung') return t.fail(`write ${i} never returned`);
    failed = r;
  }
  t.truthy(failed, 'a write failed');
  t.is((failed as PrismError).code, 'EIO');
  // The host is back: the data held is committed and writes go on.
  host.commitFailsAfterMs = null;
  await fs.write(ctx, 5n, 1n, 0n, data(MiB));
  await fs.fsync(ctx, 5n);
  t.pass();
  fs.close?.();
});

test('a WRITE reply without a verifier fails the write (reported at flush), not the agent', async (t) => {
  const host = new FakeHost('tcp');
  const fs = await mount(host, 5);
  host.badReply = true;
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  const err = await t.throwsAsync(fs.flush(ctx, 5n));
  t.is((err as PrismError).code, 'EIO');
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  await Promise.race([fs.fsync(ctx, 5n), sleep(2000).then(() => { throw new Error('fsync hung'); })]);
  t.pass();
  fs.close?.();
});

test('close() stops the background COMMIT timer', (t) => {
  const set = globalThis.setInterval, clear = globalThis.clearInterval;
  const made: unknown[] = [], cleared: unknown[] = [];
  globalThis.setInterval = ((...a: Parameters<typeof setInterval>) => { const h = set(...a); made.push(h); return h; }) as typeof setInterval;
  globalThis.clearInterval = ((h: Parameters<typeof clearInterval>[0]) => { cleared.push(h); clear(h); }) as typeof clearInterval;
  try {
    const fs = new VrpcFs(new FakeHost(), fhOf(ROOT_INO), ROOT_INO);
    t.is(made.length, 1);
    t.is(typeof fs.close, 'function');
    fs.close();
    t.deepEqual(cleared, made);
  } finally {
    globalThis.setInterval = set;
    globalThis.clearInterval = clear;
  }
});

test('an fsync whose file is sent again after its COMMIT went out (a restart seen meanwhile) does not return before a COMMIT after that', async (t) => {
  const host = new FakeHost('tcp');
  const fs = await mount(host, 5, 6);
  await fs.write(ctx, 5n, 1n, 0n, data(100));
  await fs.flush(ctx, 5n); // answered by the first instance, not committed
  host.verf = V2; // the host restarted and lost it
  host.commitMs = 5; // the COMMIT's reply comes after the other write's
  const other = fs.write(ctx, 6n, 1n, 0n, data(10)); // answered first by the new instance: the agent sees the restart
  await fs.fsync(ctx, 5n);
  const took = [...host.took]; // what the host had done when fsync returned
  await other;
  const durable = Math.max(0, ...took.filter((x) => x.startsWith('C')).map((x) => Number(x.slice(1))));
  t.true(took.lastIndexOf('W5') < durable, `the last WRITE of the file was made durable by a COMMIT done: ${took.join(' ')}`);
  fs.close?.();
});

test('shm: fsync sends its COMMIT at once, not after a round trip for the posted writes\' replies; it covers them and reports their errors', async (t) => {
  const host = new FakeHost('shm');
  const fs = await mount(host, 5, 6);
  for (let i = 0; i < 3; i++) await fs.write(ctx, 5n, 1n, BigInt(i * 100), data(100));
  const settles = host.settles;
  await fs.fsync(ctx, 5n);
  t.is(host.settles, settles, 'no settle before (or after) the COMMIT: its own call reads the replies');
  t.is(host.commits, 1);
  t.is(held(fs), 0, 'the COMMIT covers the writes sent before it');

  await fs.write(ctx, 6n, 1n, 0n, data(100));
  host.refuse = new PrismError('ENOSPC', 'the store is full');
  await fs.write(ctx, 6n, 1n, 100n, data(100)); // posted: refused when the host reads it
  const err = await t.throwsAsync(fs.fsync(ctx, 6n));
  t.is((err as PrismError).code, 'ENOSPC', 'the refused write fails the fsync');
  host.refuse = null;
  await fs.fsync(ctx, 6n); // reported once
  fs.close?.();
});
