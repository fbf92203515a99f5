// Metadata sharing with real processes: a host and three agents (VMs a and b mount one volume, c
// another), each agent answering LOOKUP and GETATTR from its VM's read-only table. The kernel caches
// for 30 s here, so a fresh answer after another VM's change can only come from the invalidations.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { attachMetaTable } from '../../src/metadata-share/file.js';
import { agentStats as statsOf, fuseSkipReason, mountAgent, run, type Agent } from '../helpers/agent.js';
import { prism, prismBin, startHost, type RunningHost } from '../helpers/host.js';
import { missingProgramsReason } from '../helpers/programs.js';
import { tmpDir } from '../helpers/tmp.js';

const skip = fuseSkipReason() ?? missingProgramsReason(['getfattr', 'setfattr']);
const t = skip ? test.skip : test.serial;
if (skip) console.error(`metadata-share.test: skipped: ${skip}`);

interface Setup { store: string; shm: string; host: RunningHost; agents: Record<'a' | 'b' | 'c', Agent> }

async function setup(tt: ExecutionContext, cacheArgs: Record<'a' | 'b' | 'c', string[]>): Promise<Setup> {
  const dir = tmpDir(tt);
  const store = path.join(dir, 'store');
  const shm = fs.mkdtempSync('/dev/shm/prism-test-meta-');
  tt.teardown(() => fs.rmSync(shm, { recursive: true, force: true }));
  for (const v of ['vol', 'other']) if (prism(store, ['volume', 'create', v]).code !== 0) throw new Error('volume create failed');
  // Live agents' coherence is tested here, not the deadline (late-ack tests): a loaded machine must not get one fenced.
  const host = await startHost(store, ['--shm-dir', shm, '--meta-ack-ms', '2000', '--vm', 'a=vol', '--vm', 'b=vol', '--vm', 'c=other']);
  tt.teardown(async () => { await host.stop(); });
  const agents = {} as Record<'a' | 'b' | 'c', Agent>;
  for (const vm of ['a', 'b', 'c'] as const) {
    const mp = path.join(dir, vm);
    fs.mkdirSync(mp);
    agents[vm] = await mountAgent(store, ['--shm', `${shm}/prism-${vm}`, '--volume', vm === 'c' ? 'other' : 'vol', ...cacheArgs[vm]], mp);
    tt.teardown(() => agents[vm].umount());
    await statsOf(agents[vm]); // answers once its notifier listens
  }
  return { store, shm, host, agents };
}


const long = ['--attr-timeout', '30', '--entry-timeout', '30'];

const stat = (p: string): string => {
  try {
    const s = fs.statSync(p);
    return `${s.mode.toString(8)} ${s.size} ${s.nlink}`;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code!;
  }
};

t('two VMs on one volume see each other\'s changes at once, through kernel caches of 30 s; the host\'s own put too', async (tt) => {
  const { store, agents } = await setup(tt, { a: long, b: long, c: long });
  const A = agents.a.mp, B = agents.b.mp;
  fs.mkdirSync(`${A}/d`);
  for (let i = 0; i < 50; i++) fs.writeFileSync(`${A}/d/f${i}`, `file ${i}\n`);
  // b reads everything once: its kernel now caches entries and attributes (and a miss for "new").
  tt.is(fs.readdirSync(`${B}/d`).length, 50);
  for (let i = 0; i < 50; i++) stat(`${B}/d/f${i}`);
  tt.is(stat(`${B}/d/new`), 'ENOENT');
  tt.is(fs.readFileSync(`${B}/d/f1`, 'utf8'), 'file 1\n');

  const steps: Array<[string, () => void, () => void]> = [
    ['a longer write', () => fs.writeFileSync(`${A}/d/f1`, 'longer content\n'), () => {
      tt.is(stat(`${B}/d/f1`), '100644 15 1');
      tt.is(fs.readFileSync(`${B}/d/f1`, 'utf8'), 'longer content\n');
    }],
    ['chmod', () => fs.chmodSync(`${A}/d/f2`, 0o600), () => tt.is(stat(`${B}/d/f2`), '100600 7 1')],
    ['unlink', () => fs.unlinkSync(`${A}/d/f3`), () => { tt.is(stat(`${B}/d/f3`), 'ENOENT'); tt.false(fs.readdirSync(`${B}/d`).includes('f3')); }],
    ['a name b had looked up in vain', () => fs.writeFileSync(`${A}/d/new`, 'new\n'), () => tt.is(fs.readFileSync(`${B}/d/new`, 'utf8'), 'new\n')],
    ['rename', () => fs.renameSync(`${A}/d/f4`, `${A}/d/g4`), () => { tt.is(stat(`${B}/d/f4`), 'ENOENT'); tt.is(fs.readFileSync(`${B}/d/g4`, 'utf8'), 'file 4\n'); }],
    ['rename over a file', () => fs.renameSync(`${A}/d/f5`, `${A}/d/f6`), () => { tt.is(fs.readFileSync(`${B}/d/f6`, 'utf8'), 'file 5\n'); tt.is(stat(`${B}/d/f5`), 'ENOENT'); }],
    ['hard link', () => fs.linkSync(`${A}/d/f7`, `${A}/d/h7`), () => { tt.is(stat(`${B}/d/f7`), '100644 7 2'); tt.is(stat(`${B}/d/h7`), '100644 7 2'); }],
    ['truncate', () => fs.truncateSync(`${A}/d/f8`, 2), () => tt.is(fs.readFileSync(`${B}/d/f8`, 'utf8'), 'fi')],
    ['mkdir and rmdir', () => { fs.mkdirSync(`${A}/d/sub`); fs.rmdirSync(`${A}/d/sub`); fs.mkdirSync(`${A}/d/sub2`); }, () => {
      tt.is(stat(`${B}/d/sub`), 'ENOENT');
      tt.regex(stat(`${B}/d/sub2`), /^40755 \d+ 2$/);
    }],
    ['an extended attribute on a file b knows has none', () => {
      tt.throws(() => run('getfattr', ['-n', 'user.k', `${B}/d/f10`]), { message: /No such attribute/ });
      run('setfattr', ['-n', 'user.k', '-v', 'v1', `${A}/d/f10`]);
    }, () => tt.is(run('getfattr', ['--only-values', '-n', 'user.k', `${B}/d/f10`]), 'v1')],
    ['b changes, a sees', () => { stat(`${A}/d/f9`); fs.writeFileSync(`${B}/d/f9`, 'from b, longer\n'); }, () => tt.is(fs.readFileSync(`${A}/d/f9`, 'utf8'), 'from b, longer\n')],
    ['prism put through the host', () => { stat(`${A}/d/put`); run(process.execPath, [prismBin, '--store', store, 'put', 'vol:/d/put', '-'], { input: 'put by the host\n' }); }, () => {
      tt.is(fs.readFileSync(`${A}/d/put`, 'utf8'), 'put by the host\n');
      tt.is(fs.readFileSync(`${B}/d/put`, 'utf8'), 'put by the host\n');
    }],
  ];
  for (const [what, change, check] of steps) {
    tt.log(what);
    change();
    check();
  }
  const b = await statsOf(agents.b);
  tt.true(b.counters.invalidations > 10, `${b.counters.invalidations} invalidations applied by b`);
  tt.true(b.counters.xattrsLocal > 0, 'xattr requests answered from the table');
  tt.true(b.metaTable?.endsWith('prism-b-meta'));
});

t('with no kernel cache, a second stat pass over unchanged files sends zero RPCs; the table holds only the VM\'s volumes', async (tt) => {
  const zero = ['--attr-timeout', '0', '--entry-timeout', '0'];
  const { shm, agents } = await setup(tt, { a: long, b: long, c: zero });
  const C = agents.c.mp;
  const names: string[] = [];
  for (let d = 0; d < 10; d++) {
    fs.mkdirSync(`${C}/d${d}`);
    for (let i = 0; i < 50; i++) { fs.writeFileSync(`${C}/d${d}/f${i}`, 'x'.repeat(i)); names.push(`${C}/d${d}/f${i}`); }
  }
  fs.writeFileSync(`${agents.a.mp}/only-in-vol`, 'a');
  const pass = async () => {
    const before = (await statsOf(agents.c)).counters;
    for (const p of names) fs.statSync(p);
    const after = (await statsOf(agents.c)).counters;
    // The stats' own RPCs only: the agent may COMMIT its unstable writes in the background meanwhile.
    const asked = (c: typeof before) => Object.entries(c.rpcsByProc).reduce((n, [proc, k]) => n + (proc === 'COMMIT' ? 0 : k), 0);
    return { rpcs: asked(after) - asked(before), local: after.lookupsLocal - before.lookupsLocal + after.getattrsLocal - before.getattrsLocal };
  };
  await pass();
  const second = await pass();
  tt.is(second.rpcs, 0, 'second pass: no RPC but background COMMITs');
  tt.true(second.local >= names.length, `${second.local} answers from the table for ${names.length} stats`);
  // What each VM's table holds: its own volumes only.
  const held = (vm: string) => { const m = attachMetaTable(`${shm}/prism-${vm}-meta`); try { return [...m.table.heldVolumes()]; } finally { m.close(); } };
  const a = held('a'), c = held('c');
  tt.is(a.length, 1);
  tt.is(c.length, 1);
  tt.not(a[0], c[0]);
  tt.deepEqual(held('b'), a);
});

t('an agent with --no-meta asks the host for everything and still sees other VMs\' changes (no cache)', async (tt) => {
  const { agents } = await setup(tt, { a: long, b: ['--no-meta', '--attr-timeout', '0', '--entry-timeout', '0'], c: long });
  fs.writeFileSync(`${agents.a.mp}/f`, '1');
  tt.is(fs.readFileSync(`${agents.b.mp}/f`, 'utf8'), '1');
  fs.writeFileSync(`${agents.a.mp}/f`, '22');
  tt.is(stat(`${agents.b.mp}/f`), '100644 2 1');
  const s = await statsOf(agents.b);
  tt.is(s.metaTable, null);
  tt.is(s.counters.lookupsLocal + s.counters.getattrsLocal, 0);
  tt.true(s.counters.rpcs > 0);
});
