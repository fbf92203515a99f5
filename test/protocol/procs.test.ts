// Each procedure is defined once (src/protocol/procs.ts) and everything else derives from that: these
// checks run over the definitions, so a new procedure is covered without being listed here.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrismError } from '../../src/errors.js';
import { Dispatcher } from '../../src/host/dispatch.js';
import { PROCS, PROC_NAMES, PROC_NUMBERS, methodName, type ArgKind, type ArgKinds, type Proc } from '../../src/protocol/procs.js';
import { makeStubs } from '../../src/protocol/stubs.js';
import { argFields, validateArgs } from '../../src/protocol/validate.js';
import { Store } from '../../src/store/store.js';
import { tmpDir } from '../helpers/tmp.js';

/** A well-formed value of each kind (typed: a new kind needs one here). */
const SAMPLE: { [K in ArgKind]: ArgKinds[K] } = {
  fh: Buffer.alloc(29, 1), name: Buffer.from('f'), lookupName: Buffer.from('..'), xname: Buffer.from('user.x'), xvalue: Buffer.from('v'),
  target: Buffer.from('/t'), data: Buffer.from('d'), cookie: Buffer.alloc(0), volume: 'vol', u32: 7, u53: 7, small: 1, perm: 0o644,
  nodeMode: 0o100644, offset: 0, count: 4096, bool: true, gids: [0], setattr: [null, null, null, null, null, null], time: [1, 2],
};

/** A value of another JavaScript type than the kind's. */
function wrongTyped(x: unknown): unknown {
  if (x instanceof Uint8Array || typeof x === 'boolean') return 7;
  if (typeof x === 'number') return '7';
  if (typeof x === 'string') return Buffer.from(x);
  return 'x'; // arrays
}

const samples = (proc: Proc): unknown[] => argFields(proc)!.map((k) => SAMPLE[k]);
const docs = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/protocol.md'), 'utf8');

test('every procedure has a definition, a stub, and a row in docs/protocol.md with its number and name', (t) => {
  const documented = [...docs.matchAll(/^\| (\d+) \| ([A-Z_]+) \|/gm)].map((m) => [Number(m[1]), m[2]]);
  t.deepEqual(PROC_NUMBERS.map((p) => [p, PROCS[p].name]), documented);
  const called: number[] = [];
  const stubs = makeStubs(<T>(proc: Proc) => { called.push(proc); return Promise.resolve(undefined as T); }) as unknown as Record<string, () => unknown>;
  for (const p of PROC_NUMBERS) {
    t.is(PROC_NAMES[p], PROCS[p].name);
    t.is(typeof stubs[methodName(PROCS[p].name)], 'function', `a stub for ${PROCS[p].name}`);
    stubs[methodName(PROCS[p].name)]!();
  }
  t.deepEqual(called, [...PROC_NUMBERS], 'each stub calls its own procedure');
});

test('validation of each procedure takes well-formed arguments and rejects a wrong-typed one in every position', (t) => {
  for (const p of PROC_NUMBERS) {
    const name = PROCS[p].name;
    const good = samples(p);
    t.notThrows(() => validateArgs(p, good), `${name} takes well-formed arguments`);
    for (let i = 0; i < good.length; i++) {
      const args = [...good];
      args[i] = wrongTyped(args[i]);
      const e = t.throws(() => validateArgs(p, args), undefined, `${name} argument ${i} (${PROCS[p].args[i]![0]})`);
      t.true(e instanceof PrismError && e.code === 'EINVAL', `${name} argument ${i}: ${String(e)}`);
    }
    t.throws(() => validateArgs(p, [...good, 0]), { message: /EINVAL/ }, `${name} with an argument too many`);
  }
  t.throws(() => validateArgs(1000, []), { message: /ENOSYS/ });
});

test('the host has a handler for every procedure (well-formed arguments never answer ENOSYS)', (t) => {
  const store = Store.open(path.join(tmpDir(t), 'store'));
  t.teardown(() => store.abandon());
  store.createVolume('vol');
  const d = new Dispatcher(store, { name: 'vm', volumes: ['vol'] }, crypto.randomBytes(32), { commit: () => Promise.resolve(), verifier: new Uint8Array(8) });
  for (const p of PROC_NUMBERS) {
    let code = 'ok';
    try { void d.call(p, samples(p)); } catch (e) { code = e instanceof PrismError ? e.code : String(e); }
    t.not(code, 'ENOSYS', PROCS[p].name);
    // A made-up handle is refused by the handler (it ran), never by a missing one.
    if (argFields(p)!.includes('fh')) t.is(code, 'ESTALE', PROCS[p].name);
  }
});
