// The host's tables against its own answers: two VMs work one volume through their dispatchers (the
// code the host runs for each request) in random interleavings; whenever a VM's table answers a
// LOOKUP or GETATTR, the answer equals what the RPC gives right after. A third VM's table never
// holds anything of a volume it does not attach.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Dispatcher } from '../../src/host/dispatch.js';
import { ACK_MS, MetaPublisher, type Listener, type ListenerWords } from '../../src/metadata-share/publisher.js';
import { MetaTable, SLOT_SIZE } from '../../src/metadata-share/table.js';
import { Proc } from '../../src/protocol/procs.js';
import { PrismError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';

const NAMES = ['a', 'b', 'c', 'd'].map((n) => Buffer.from(n));
const DOTDOT = Buffer.from('..');

interface Vm { name: string; d: Dispatcher; table: MetaTable }

function setup(t: { teardown(fn: () => void): void }, listen?: (vm: string) => Listener) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-meta-'));
  const store = Store.open(dir);
  t.teardown(() => { store.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  store.createVolume('shared');
  store.createVolume('other');
  const secret = crypto.randomBytes(32);
  const publisher = new MetaPublisher();
  const vms = new Map<string, Vm>();
  for (const [name, volumes] of [['a', ['shared']], ['b', ['shared']], ['c', ['other']]] as const) {
    const table = MetaTable.create(new ArrayBuffer(MetaTable.geometry(1 << 20, 64).slotsAt + 4096 * SLOT_SIZE), 64);
    const hooks = { commit: () => Promise.resolve(), verifier: new Uint8Array(8), meta: publisher.sink(name) };
    const d = new Dispatcher(store, { name, volumes: [...volumes] }, secret, hooks);
    publisher.add({ name, volumes, key: d.key, table, listener: listen?.(name) });
    vms.set(name, { name, d, table });
  }
  const v = store.volume('shared');
  return { store, v, vms, fh: (vm: Vm, ino: number) => vm.d.key.make({ volumeId: v.rec.id, ino }) };
}

/** A request's result, or its error code. */
function call(vm: Vm, proc: Proc, args: unknown[]): unknown[] | string {
  try {
    const r = vm.d.call(proc, args);
    if (r instanceof Promise) throw new Error('no VM listens in this test: nothing to wait for');
    return r;
  } catch (e) {
    if (e instanceof PrismError) return e.code;
    throw e;
  }
}

type Op =
  | { op: 'create' | 'mkdir' | 'unlink' | 'rmdir' | 'symlink'; dir: number; name: number }
  | { op: 'rename'; dir: number; name: number; dir2: number; name2: number; flags: number }
  | { op: 'link'; dir: number; name: number; dir2: number; name2: number }
  | { op: 'chmod' | 'truncate' | 'write' | 'setxattr'; dir: number; name: number; n: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('create' as const, 'mkdir' as const, 'unlink' as const, 'rmdir' as const, 'symlink' as const), dir: fc.nat(3), name: fc.nat(3) }),
  fc.record({ op: fc.constant('rename' as const), dir: fc.nat(3), name: fc.nat(3), dir2: fc.nat(3), name2: fc.nat(3), flags: fc.constantFrom(0, 0, 1, 2) }),
  fc.record({ op: fc.constant('link' as const), dir: fc.nat(3), name: fc.nat(3), dir2: fc.nat(3), name2: fc.nat(3) }),
  fc.record({ op: fc.constantFrom('chmod' as const, 'truncate' as const, 'write' as const, 'setxattr' as const), dir: fc.nat(3), name: fc.nat(3), n: fc.nat(70000) }),
);

// Serial: the lease test measures waits that a property run on the same event loop would stretch.
test.serial('random changes from two VMs: what a table answers is what the RPC answers', (t) => {
  let checked = 0;
  fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom('a', 'b'), opArb), { minLength: 1, maxLength: 40 }), (ops) => {
    const { v, vms, fh } = setup(t);
    const a = vms.get('a')!, b = vms.get('b')!;
    // Directories by number: the root and up to three below it (made by whoever gets there first).
    const dirs = (): Array<number | undefined> => ['/', '/a', '/b', '/a/c'].map((p) => { try { return v.resolve(p); } catch { return undefined; } });
    const target = (vm: Vm, d: number, n: number): [Buffer, Buffer] | undefined => {
      const ino = dirs()[d];
      return ino === undefined ? undefined : [fh(vm, ino), NAMES[n]!];
    };
    // Read phase: for each VM, each directory and name: the table first, then the RPC.
    // Every directory ever seen, wherever it has moved since (its ".." must follow it), even removed.
    const known = new Set<number>();
    const compare = (vm: Vm): boolean => {
      for (const d of dirs()) if (d !== undefined) known.add(d);
      for (const dir of known) {
        for (const name of [...NAMES, DOTDOT]) {
          let shared = vm.table.getEntry(v.rec.id, dir, name);
          // A name not held in a directory held complete is absent (as the agent answers it).
          if (shared === undefined && name !== DOTDOT && vm.table.isComplete(v.rec.id, dir)) shared = null;
          const sharedAttr = shared ? vm.table.getAttr(v.rec.id, shared.ino) : undefined;
          const r = call(vm, Proc.LOOKUP, [fh(vm, dir), name]);
          if (shared === undefined) continue;
          checked++;
          if (shared === null) { if (typeof r !== 'string') return false; continue; } // ENOENT (ESTALE in a removed directory)
          if (typeof r === 'string') return false;
          if (!Buffer.from(r[0] as Uint8Array).equals(Buffer.from(shared.fh)) || (r[1] as number[])[0] !== shared.ino) return false;
          if (sharedAttr && JSON.stringify(sharedAttr) !== JSON.stringify(r[1])) return false;
          const again = vm.table.getAttr(v.rec.id, shared.ino);
          const g = call(vm, Proc.GETATTR, [fh(vm, shared.ino)]);
          if (again && (typeof g === 'string' || JSON.stringify(again) !== JSON.stringify(g[0]))) return false;
          // "No extended attributes" is only said when true.
          if (vm.table.noXattrs(v.rec.id, shared.ino)) {
            checked++;
            const l = call(vm, Proc.LISTXATTR, [fh(vm, shared.ino)]);
            if (typeof l === 'string' || (l[0] as unknown[]).length !== 0) return false;
          }
        }
      }
      return true;
    };
    for (const [who, o] of ops) {
      const vm = who === 'a' ? a : b;
      const at = target(vm, o.dir, o.name);
      if (at) {
        const [dfh, name] = at;
        const child = () => { const r = call(vm, Proc.LOOKUP, [dfh, name]); return typeof r === 'string' ? undefined : r[0]; };
        switch (o.op) {
          case 'create': call(vm, Proc.CREATE, [dfh, name, 0o644, 0, 0, false]); break;
          case 'mkdir': call(vm, Proc.MKDIR, [dfh, name, 0o755, 0, 0]); break;
          case 'symlink': call(vm, Proc.SYMLINK, [dfh, name, Buffer.from('t'), 0, 0]); break;
          case 'unlink': call(vm, Proc.REMOVE, [dfh, name]); break;
          case 'rmdir': call(vm, Proc.RMDIR, [dfh, name]); break;
          case 'rename': case 'link': {
            const to = target(vm, o.dir2, o.name2);
            if (!to) break;
            if (o.op === 'rename') call(vm, Proc.RENAME, [dfh, name, to[0], to[1], o.flags]);
            else { const c = child(); if (c) call(vm, Proc.LINK, [c, to[0], to[1]]); }
            break;
          }
          default: {
            const c = child();
            if (!c) break;
            if (o.op === 'chmod') call(vm, Proc.SETATTR, [c, [o.n & 0o777, null, null, null, null, null]]);
            else if (o.op === 'truncate') call(vm, Proc.SETATTR, [c, [null, null, null, o.n, null, null]]);
            else if (o.op === 'write') call(vm, Proc.WRITE, [c, o.n, Buffer.alloc(100, 1), 0]);
            else call(vm, Proc.SETXATTR, [c, Buffer.from('user.x'), Buffer.from([o.n & 255]), 0]);
          }
        }
      }
      if (!compare(a) || !compare(b)) return false;
    }
    // Nothing of the shared volume in the table of the VM that does not attach it; handles are per VM.
    if (vms.get('c')!.table.heldVolumes().size !== 0) return false;
    const e = a.table.getEntry(v.rec.id, v.rootIno, NAMES[0]!);
    if (e) {
      try { b.d.key.open(e.fh); return false; } catch { /* a's handle is not b's */ }
    }
    return true;
  }), { numRuns: 60 });
  t.true(checked > 500, `${checked} table answers compared with the RPC`);
});

test.serial('a change waits for the other VM to apply the log; a VM that never does is waited for its deadline, then not', async (t) => {
  const listeners = new Map<string, ListenerWords>();
  const { v, vms, fh } = setup(t, (vm) => {
    const s = { applied: 0, leaseMs: 0, fenceAck: 0, polls: false };
    listeners.set(vm, s);
    return { read: () => ({ ...s }) };
  });
  const a = vms.get('a')!, b = vms.get('b')!;
  listeners.get('b')!.leaseMs = 10_000; // long, and polling: only the acknowledgement can end a wait this short
  listeners.get('b')!.polls = true;
  // b caches a name; a creates it: the reply waits until b has applied the log records.
  const r = a.d.call(Proc.CREATE, [fh(a, v.rootIno), Buffer.from('f'), 0o644, 0, 0, false]);
  t.true(r instanceof Promise, 'a change b may cache is held back');
  let answered = false;
  void (r as Promise<unknown>).then(() => { answered = true; });
  await new Promise((res) => setTimeout(res, 5));
  t.false(answered, 'not before b applies the log');
  const log = MetaTable.attach(b.table.buffer);
  const records = Array.from({ length: log.logHead }, (_, n) => log.readLog(n));
  t.deepEqual(records.map((c) => (c === 'lost' ? c : c.kind)).sort(), ['attr', 'attr', 'entry'], 'the root and the new file attributes, the name');
  listeners.get('b')!.applied = log.logHead;
  await r;
  t.true(answered);
  // Nothing b's kernel can hold: a's own VM is never waited for, b with lease 0 neither.
  listeners.get('b')!.leaseMs = 0;
  t.false(a.d.call(Proc.MKDIR, [fh(a, v.rootIno), Buffer.from('d'), 0o755, 0, 0]) instanceof Promise);
  // A b that stops acknowledging: waited for its deadline (not its lease), then fenced.
  listeners.get('b')!.leaseMs = 10_000;
  listeners.get('b')!.polls = false;
  const t0 = performance.now();
  await a.d.call(Proc.REMOVE, [fh(a, v.rootIno), Buffer.from('f')]);
  const waited = performance.now() - t0;
  t.true(waited >= ACK_MS * 0.9 && waited < 5000, `waited ${waited.toFixed(0)} ms with a deadline of ${ACK_MS} ms (lease 10 s)`);
  t.true(b.table.fenced);
  const again = a.d.call(Proc.RMDIR, [fh(a, v.rootIno), Buffer.from('d')]);
  t.false(again instanceof Promise, 'a fenced VM is not waited for again until it revalidates');
});

test.serial('".." follows a directory moved by another VM, and goes with a removed one', (t) => {
  const { v, vms, fh } = setup(t);
  const a = vms.get('a')!, b = vms.get('b')!;
  const mk = (vm: Vm, dir: number, name: string) => (call(vm, Proc.MKDIR, [fh(vm, dir), Buffer.from(name), 0o755, 0, 0]) as unknown[])[1] as number[];
  const da = mk(a, v.rootIno, 'a')[0]!, db = mk(a, v.rootIno, 'b')[0]!, dc = mk(a, da, 'c')[0]!;
  call(b, Proc.LOOKUP, [fh(b, dc), DOTDOT]);
  t.is(b.table.getEntry(v.rec.id, dc, DOTDOT)?.ino, da, 'b has seen c/.. = a');
  call(a, Proc.RENAME, [fh(a, da), Buffer.from('c'), fh(a, db), Buffer.from('c'), 0]);
  const after = b.table.getEntry(v.rec.id, dc, DOTDOT);
  t.true(after === undefined || after?.ino === db, `c/.. in b's table after the move: ${after?.ino} (b is ${db})`);
  call(a, Proc.LOOKUP, [fh(a, dc), DOTDOT]);
  call(a, Proc.RMDIR, [fh(a, db), Buffer.from('c')]);
  t.is(a.table.getEntry(v.rec.id, dc, DOTDOT), undefined, 'a removed directory has no ".."');
  t.is(b.table.getEntry(v.rec.id, dc, DOTDOT), undefined);
});
