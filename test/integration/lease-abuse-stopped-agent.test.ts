// Issue 11, item 6 (lease abuse) with real processes: two VMs' agents mount one volume over shared
// memory with 30 s kernel caches. One agent is stopped (SIGSTOP) so its notifier cannot acknowledge
// the change log: the other VM's changes must be answered within the acknowledgement deadline, not
// after the stopped VM's 30 s lease. Once continued, the stopped VM revalidates (the host fenced it)
// and sees every change: with 30 s kernel caches, only invalidations can make it see them.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { attachMetaTable } from '../../src/metadata-share/file.js';
import { agentStats as statsOf, fuseSkipReason, mountAgent, type Agent } from '../helpers/agent.js';
import { prism, startHost, type RunningHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const skip = fuseSkipReason();
const t = skip ? test.skip : test.serial;
if (skip) console.error(`lease-abuse-stopped-agent.test: skipped: ${skip}`);

const long = ['--attr-timeout', '30', '--entry-timeout', '30'];

interface Setup { shm: string; host: RunningHost; a: Agent; b: Agent }

async function setup(tt: ExecutionContext, hostArgs: string[] = []): Promise<Setup> {
  const dir = tmpDir(tt);
  const store = path.join(dir, 'store');
  const shm = fs.mkdtempSync('/dev/shm/prism-test-fence-');
  tt.teardown(() => fs.rmSync(shm, { recursive: true, force: true }));
  if (prism(store, ['volume', 'create', 'vol']).code !== 0) throw new Error('volume create failed');
  const host = await startHost(store, ['--shm-dir', shm, '--vm', 'a=vol', '--vm', 'b=vol', ...hostArgs]);
  tt.teardown(async () => { await host.stop(); });
  const agents: Agent[] = [];
  for (const vm of ['a', 'b']) {
    const mp = path.join(dir, vm);
    fs.mkdirSync(mp);
    const agent = await mountAgent(store, ['--shm', `${shm}/prism-${vm}`, '--volume', 'vol', ...long], mp);
    // Continued first, whatever happened: a stopped agent's mount hangs whoever touches it.
    tt.teardown(async () => { agent.child.kill('SIGCONT'); await agent.umount(); });
    await statsOf(agent);
    agents.push(agent);
  }
  return { shm, host, a: agents[0]!, b: agents[1]! };
}


/** Poll until `ok` (the agent needs a moment once continued); the last value either way. */
async function until<T>(get: () => Promise<T> | T, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((res) => setTimeout(res, 50));
  }
}

function fenced(shm: string, vm: string): boolean {
  const m = attachMetaTable(`${shm}/prism-${vm}-meta`);
  try { return m.table.fenced; } finally { m.close(); }
}

/** Run a change on a's mount; how long it took. Raced against a bound so a stall fails fast (on main: the 30 s lease). */
async function timed(what: string, op: () => Promise<unknown>, boundMs = 5000): Promise<number> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([op(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} not answered in ${boundMs} ms`)), boundMs); })]);
  clearTimeout(timer);
  return performance.now() - t0;
}

const content = (p: string): string => {
  try { return fs.readFileSync(p, 'utf8'); } catch (e) { return (e as NodeJS.ErrnoException).code!; }
};

t('a stopped VM does not hold another VM\'s changes for its lease; continued, it is fenced, revalidates and sees them', async (tt) => {
  const { shm, host, a, b } = await setup(tt);
  const A = a.mp, B = b.mp;
  fs.mkdirSync(`${A}/d`);
  fs.writeFileSync(`${A}/d/f`, 'one\n');
  // b's kernel caches the directory, the file's name, attributes and pages for 30 s.
  tt.deepEqual(fs.readdirSync(`${B}/d`), ['f']);
  tt.is(content(`${B}/d/f`), 'one\n');
  tt.not(fenced(shm, 'b'), true);

  b.child.kill('SIGSTOP');
  let waits: number[];
  try {
    waits = [
      await timed('MKDIR', () => fs.promises.mkdir(`${A}/d/new`)),
      await timed('WRITE', () => fs.promises.writeFile(`${A}/d/f`, 'two, longer\n')),
      await timed('CREATE', () => fs.promises.writeFile(`${A}/d/g`, 'g\n')),
    ];
    tt.true(fenced(shm, 'b'), "the host fenced b's table");
  } finally {
    b.child.kill('SIGCONT');
  }
  // The deadline is 10 ms; 1 s is generous on a loaded machine, and far below b's 30 s lease.
  tt.log(`a's changes answered in ${waits.map((w) => w.toFixed(1)).join(', ')} ms while b was stopped`);
  tt.true(waits[0]! < 1000, `MKDIR answered in ${waits[0]!.toFixed(1)} ms, not after b's lease`);
  tt.true(waits.every((w) => w < 1000), 'no change waits on a stopped VM');
  tt.regex(host.stderr(), /"vm":"b".*fenced/, 'the host says which VM it fenced');

  // Continued: b replays the log (or drops its kernel cache), acknowledges the fence, sees it all.
  const s = await until(() => statsOf(b), (x) => x.counters.fencesRecovered >= 1);
  tt.true(s.counters.fencesRecovered >= 1, 'b recovered from the fence');
  tt.true(fs.statSync(`${B}/d/new`).isDirectory());
  tt.is(content(`${B}/d/f`), 'two, longer\n');
  tt.is(content(`${B}/d/g`), 'g\n');
  tt.deepEqual(fs.readdirSync(`${B}/d`).sort(), ['f', 'g', 'new']);
  // b's own requests let the host see its acknowledgement: its table answers again. A name never looked
  // up reaches the host each time (a stat of a known file may stay in b's kernel cache, and the host
  // lifts the fence only once a probation that a second fence may have started is over).
  let poke = 0;
  tt.false(await until(() => { fs.existsSync(`${B}/d/never-${poke++}`); return fenced(shm, 'b'); }, (f) => !f), 'unfenced after revalidating');

  // Acknowledging in time again, b is waited for again: a's change reaches b's 30 s cache at once.
  fs.writeFileSync(`${A}/d/f`, 'three, longer still\n');
  tt.is(content(`${B}/d/f`), 'three, longer still\n');
  tt.false(fenced(shm, 'b'));
});

t('a VM stopped while the log wraps drops its whole kernel cache when continued: no stale name, attribute or page', async (tt) => {
  // A 1 MiB table keeps 204 log records: a's changes below overwrite every record b missed.
  const { shm, a, b } = await setup(tt, ['--meta-size', '1']);
  const A = a.mp, B = b.mp;
  fs.mkdirSync(`${A}/d`);
  fs.writeFileSync(`${A}/d/x`, 'x\n');
  fs.writeFileSync(`${A}/d/y`, 'y, longer\n');
  fs.writeFileSync(`${A}/d/z`, 'z\n');
  tt.is(content(`${B}/d/x`), 'x\n');
  tt.is(content(`${B}/d/z`), 'z\n');
  const statBefore = fs.statSync(`${B}/d/z`);

  b.child.kill('SIGSTOP');
  try {
    // The changes b must see come first; their records are overwritten by the flood after them.
    await timed('RENAME', () => fs.promises.rename(`${A}/d/y`, `${A}/d/x`));
    await timed('WRITE', () => fs.promises.writeFile(`${A}/d/z`, 'z, rewritten\n'));
    await timed('CHMOD', () => fs.promises.chmod(`${A}/d/z`, 0o600));
    const t0 = performance.now();
    for (let i = 0; i < 150; i++) fs.writeFileSync(`${A}/flood${i}`, '');
    tt.log(`150 creates with b stopped: ${(performance.now() - t0).toFixed(0)} ms`);
    tt.true(fenced(shm, 'b'));
  } finally {
    b.child.kill('SIGCONT');
  }
  const s = await until(() => statsOf(b), (x) => x.counters.fencesRecovered >= 1 && x.counters.cacheDrops >= 1);
  tt.true(s.counters.logRecordsLost > 0, `${s.counters.logRecordsLost} log records lost`);
  tt.true(s.counters.cacheDrops >= 1, 'b dropped its kernel cache');
  tt.is(content(`${B}/d/x`), 'y, longer\n', 'the renamed-over name');
  tt.is(content(`${B}/d/z`), 'z, rewritten\n', 'the rewritten pages');
  const after = fs.statSync(`${B}/d/z`);
  tt.is(after.mode & 0o777, 0o600, 'the changed attributes');
  tt.not(after.size, statBefore.size);
  tt.is(content(`${B}/d/y`), 'ENOENT');
  tt.true(fs.existsSync(`${B}/flood149`));
});
