// The metadata-sharing benchmark (issue 6): the same metadata workloads on Prism over shared memory,
// with five agent configurations in the same run, so the numbers compare as ratios. The agent answers
// LOOKUP and GETATTR from the host's metadata table when it holds them; the counters of
// `prism agent stats` show how many RPCs each workload still sends. Needs root (mounts).
//
// Each configuration gets a fresh instant clone of the same volume, a fresh host (so its metadata
// table starts empty) and a fresh mount (so the kernel's caches start cold); then, in this order:
// stat by path (twice), find (twice), ls -lR, git status (twice).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '../src/cli/format.js';
import { isMounted } from '../src/native/mount.js';
import { attachMetaTable } from '../src/metadata-share/file.js';
import { queryStats, type AgentStats } from '../src/guest-agent/stats.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const prismBin = path.join(repoDir, 'bin/prism.js');
const DIRS = 200;
const FILES_PER_DIR = 100;
const FILES = DIRS * FILES_PER_DIR;
/** Work-tree files of the git repository get this mtime, well before the index is written (no racily clean entries). */
const OLD_MTIME = new Date('2024-01-01T00:00:00Z');

interface Config { name: string; short: string; args: string[]; coherent: boolean }

// Cache times are given explicitly, so each configuration means the same whatever the agent's defaults
// (since fa3ff4c: 10 s with a metadata table, 1 s without).
const CONFIGS: Config[] = [
  { name: 'no sharing, coherent', short: 'no sharing, 0 s', args: ['--no-meta', '--attr-timeout', '0', '--entry-timeout', '0'], coherent: true },
  { name: 'sharing, 1 s', short: 'sharing, 1 s', args: ['--attr-timeout', '1', '--entry-timeout', '1'], coherent: true },
  { name: 'sharing, timeouts 0', short: 'sharing, 0 s', args: ['--attr-timeout', '0', '--entry-timeout', '0'], coherent: true },
  { name: 'sharing, 10 s (default)', short: 'sharing, 10 s', args: ['--attr-timeout', '10', '--entry-timeout', '10'], coherent: true },
  { name: 'no sharing, 1 s (not coherent)', short: 'no sharing, 1 s', args: ['--no-meta', '--attr-timeout', '1', '--entry-timeout', '1'], coherent: false },
];

/** The same git settings for every configuration: no untracked cache or fsmonitor; the index's
 * inode, device, owner and ctime are not compared (they differ between the local repository and the
 * mount), so git compares mtime (whole seconds), size and mode and finds nothing to refresh. */
const GIT = ['-c', 'core.untrackedCache=false', '-c', 'core.fsmonitor=false', '-c', 'core.checkStat=minimal',
  '-c', 'core.trustCtime=false', '-c', 'gc.auto=0', '-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid'];
const GIT_ENV = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', LC_ALL: 'C' };

interface Workload { id: string; label: string; per: number; cmd: (mp: string, list: string) => string[] }

const WORKLOADS: Workload[] = [
  { id: 'stat1', label: 'stat by path, pass 1', per: FILES, cmd: (_mp, list) => ['sh', '-c', `xargs -a '${list}' stat -c '%s' > /dev/null`] },
  { id: 'stat2', label: 'stat by path, pass 2', per: FILES, cmd: (_mp, list) => ['sh', '-c', `xargs -a '${list}' stat -c '%s' > /dev/null`] },
  { id: 'find1', label: 'find -printf, pass 1', per: FILES, cmd: (mp) => ['sh', '-c', `find '${mp}/tree' -printf '%s %m %p\\n' > /dev/null`] },
  { id: 'find2', label: 'find -printf, pass 2', per: FILES, cmd: (mp) => ['sh', '-c', `find '${mp}/tree' -printf '%s %m %p\\n' > /dev/null`] },
  { id: 'ls', label: 'ls -lR', per: FILES, cmd: (mp) => ['sh', '-c', `ls -lR '${mp}/tree' > /dev/null`] },
  { id: 'git1', label: 'git status, 1st', per: FILES, cmd: (mp) => ['git', '-C', `${mp}/repo`, ...GIT, 'status', '--porcelain'] },
  { id: 'git2', label: 'git status, 2nd', per: FILES, cmd: (mp) => ['git', '-C', `${mp}/repo`, ...GIT, 'status', '--porcelain'] },
];

const NUMERIC = ['rpcs', 'lookupsLocal', 'lookupMisses', 'getattrsLocal', 'getattrMisses', 'invalidations', 'logRecordsLost'] as const;
type Counters = Record<(typeof NUMERIC)[number], number> & { rpcsByProc: Record<string, number> };

interface Measure {
  ms: number; counters: Counters; rpcsPerFile: number;
  /** git status: what it printed (nothing: the work tree matches the index) and whether it rewrote .git/index (a RENAME). */
  output?: string; indexRewritten?: boolean;
}

/** How full the VM's metadata table is (slots by kind): a key whose 8-slot probe window is full evicts another. */
interface TableLoad { slots: number; attrs: number; entries: number; absent: number; loadPct: number }

function tableLoad(file: string): TableLoad {
  const m = attachMetaTable(file);
  try {
    const b = Buffer.from(m.buffer);
    const slotsAt = b.readUInt32LE(7 * 4); // header word 7: where the slots start (after the change log)
    const kinds = [0, 0, 0, 0];
    for (let i = 0; i < m.table.slots; i++) kinds[b[slotsAt + i * 512 + 4]!]!++;
    return { slots: m.table.slots, attrs: kinds[1]!, entries: kinds[2]!, absent: kinds[3]!, loadPct: 100 * (m.table.slots - kinds[0]!) / m.table.slots };
  } finally { m.close(); }
}

// ---- helpers (as in bench/fs.ts) ---------------------------------------------------------------------

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  return r.stdout;
}

function prism(store: string, ...args: string[]): string {
  return sh(process.execPath, [prismBin, '--store', store, ...args]);
}

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, child?: ChildProcess): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await ok())) {
    if (child && child.exitCode !== null) throw new Error(`${what}: process exited with ${child.exitCode}`);
    if (Date.now() > until) throw new Error(`${what}: timed out`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function progress(msg: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${msg}`);
}

function delta(a: AgentStats, b: AgentStats): Counters {
  const c = {} as Counters;
  for (const k of NUMERIC) c[k] = b.counters[k] - a.counters[k];
  c.rpcsByProc = {};
  for (const [p, n] of Object.entries(b.counters.rpcsByProc)) {
    const d = n - (a.counters.rpcsByProc[p] ?? 0);
    if (d !== 0) c.rpcsByProc[p] = d;
  }
  return c;
}

// ---- the content ----------------------------------------------------------------------------------

/** tree/dD/fF.txt: 20,000 small files; repo/: a git repository of 20,000 committed files (objects packed). */
function makeContent(src: string): { gitSeconds: number } {
  const tree = path.join(src, 'tree');
  for (let d = 0; d < DIRS; d++) {
    const dir = path.join(tree, `d${d}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < FILES_PER_DIR; f++) fs.writeFileSync(path.join(dir, `f${f}.txt`), `file ${d}/${f}\n`.repeat(1 + (f % 8)));
  }
  const repo = path.join(src, 'repo');
  for (let d = 0; d < DIRS; d++) {
    const dir = path.join(repo, 'src', `m${d}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < FILES_PER_DIR; f++) {
      const p = path.join(dir, `u${f}.c`);
      fs.writeFileSync(p, `/* module ${d}, unit ${f} */\nint u_${d}_${f}(int x) { return x * ${d + 1} + ${f}; }\n`);
      fs.utimesSync(p, OLD_MTIME, OLD_MTIME);
    }
    fs.utimesSync(dir, OLD_MTIME, OLD_MTIME);
  }
  const t = performance.now();
  const git = (...args: string[]) => sh('git', ['-C', repo, ...GIT, ...args], { env: GIT_ENV });
  git('init', '-q');
  git('add', '-A');
  git('commit', '-q', '-m', 'x');
  git('gc', '-q');
  const status = git('status', '--porcelain');
  if (status !== '') throw new Error(`git status of the new repository is not clean: ${status.slice(0, 200)}`);
  return { gitSeconds: (performance.now() - t) / 1000 };
}

// ---- one configuration -------------------------------------------------------------------------------

async function runConfig(store: string, mp: string, list: string, cfg: Config, idx: number): Promise<{ measures: Record<string, Measure>; cliStats: AgentStats; late: Counters; mountMs: number; table: TableLoad | null }> {
  const vol = `c${idx + 1}`;
  prism(store, 'volume', 'clone', 'pristine', vol);
  const vm = `mbench${process.pid}c${idx + 1}`;
  const shmFiles = [`/dev/shm/prism-${vm}`, `/dev/shm/prism-${vm}-meta`];
  const host = spawn(process.execPath, [prismBin, '--store', store, 'host', 'serve', '--vm', `${vm}=${vol}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  host.stdout!.on('data', (d) => { out += d; });
  let agent: ChildProcess | undefined;
  try {
    await waitFor('host start', () => /^ready$/m.test(out), host);
    const t0 = performance.now();
    agent = spawn(process.execPath, [prismBin, 'agent', 'mount', '--foreground', '--volume', vol, '--shm', shmFiles[0]!, ...cfg.args, mp], { stdio: ['ignore', 'inherit', 'inherit'] });
    await waitFor('agent mount', () => isMounted(mp), agent);
    await waitFor('agent stats', () => queryStats(mp).then(() => true, () => false), agent);
    const mountMs = performance.now() - t0;
    const first = await queryStats(mp);
    const wantTable = !cfg.args.includes('--no-meta');
    if ((first.metaTable !== null) !== wantTable) throw new Error(`${cfg.name}: the agent reports metaTable ${first.metaTable}`);
    const measures: Record<string, Measure> = {};
    let before = first;
    for (const w of WORKLOADS) {
      progress(`metadata: ${cfg.name}: ${w.label}`);
      const [cmd, ...args] = w.cmd(mp, list);
      const t = performance.now();
      const r = spawnSync(cmd!, args, { encoding: 'utf8', env: GIT_ENV, maxBuffer: 64 << 20 });
      const ms = performance.now() - t;
      // The agent's stats socket directly (what `prism agent stats --json` prints): microseconds, so the
      // second pass still starts right after the first.
      const after = await queryStats(mp);
      if (r.status !== 0) throw new Error(`${cfg.name}: ${w.label}: ${cmd} exited ${r.status}: ${r.stderr.trim().slice(0, 500)}`);
      const counters = delta(before, after);
      measures[w.id] = { ms, counters, rpcsPerFile: counters.rpcs / w.per };
      if (cmd === 'git') Object.assign(measures[w.id]!, { output: r.stdout.slice(0, 2000), indexRewritten: (counters.rpcsByProc.RENAME ?? 0) > 0 });
      before = after;
      if (process.env.PRISM_BENCH_DEBUG) process.stderr.write(`${cfg.name}: ${w.label}: ${ms.toFixed(0)} ms ${JSON.stringify(counters)}\n`);
    }
    // Cross-check with the CLI: its JSON must match the last snapshot (nothing touched the mount since).
    // Only LOOKUP/GETATTR counters must agree: a RELEASE the kernel sends after the last process
    // closed its files may still be on its way (a CLOSE RPC counted after the last snapshot).
    const cliStats = JSON.parse(sh(process.execPath, [prismBin, 'agent', 'stats', mp, '--json'])) as AgentStats;
    const late = delta(before, cliStats);
    if (NUMERIC.some((k) => k !== 'rpcs' && late[k] !== 0)) throw new Error(`${cfg.name}: prism agent stats --json disagrees with the stats socket: ${JSON.stringify(late)}`);
    return { measures, cliStats, late, mountMs, table: wantTable ? tableLoad(shmFiles[1]!) : null };
  } finally {
    progress(`metadata: ${cfg.name}: unmount`);
    if (agent && agent.exitCode === null) {
      const gone = new Promise((r) => agent!.once('exit', r));
      try { prism(store, 'agent', 'umount', mp); } catch (e) {
        process.stderr.write(`\nmetadata: umount ${mp}: ${(e as Error).message}; detaching lazily\n`);
        spawnSync('umount', ['-l', mp]);
        agent.kill('SIGTERM');
      }
      await gone;
    }
    if (host.exitCode === null) {
      const stopped = new Promise((r) => host.once('exit', r));
      host.kill('SIGTERM');
      await stopped;
    }
    for (const f of shmFiles) fs.rmSync(f, { force: true });
  }
}

// ---- the run -------------------------------------------------------------------------------------

export async function run() {
  if (process.getuid?.() !== 0) throw new Error('the metadata benchmark mounts file systems: run it as root');
  for (const tool of ['git', 'find', 'xargs', 'stat', 'ls']) {
    if (spawnSync(tool, ['--version']).status !== 0) throw new Error(`the metadata benchmark needs ${tool}`);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-bench-metadata-'));
  const started = performance.now();
  // The code measured: the commit checked out when the run starts (npm run bench has just built it).
  const commit = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repoDir, encoding: 'utf8' }).stdout.trim();
  const uncommittedSrcFiles = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: repoDir, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  try {
    const src = path.join(work, 'src');
    const store = path.join(work, 'store');
    const mp = path.join(work, 'mnt');
    const list = path.join(work, 'paths.txt');
    fs.mkdirSync(mp);
    progress('metadata: making 20,000 files and a git repository of 20,000 files');
    const made = makeContent(src);
    if (process.env.PRISM_BENCH_DEBUG) process.stderr.write(`content made in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    progress('metadata: importing');
    const imported = JSON.parse(prism(store, 'volume', 'import', 'pristine', src, '--json')) as { files: number; dirs: number; seconds: number };
    fs.rmSync(src, { recursive: true, force: true });
    const paths: string[] = [];
    for (let d = 0; d < DIRS; d++) for (let f = 0; f < FILES_PER_DIR; f++) paths.push(`${mp}/tree/d${d}/f${f}.txt`);
    fs.writeFileSync(list, `${paths.join('\n')}\n`);

    const results: Record<string, Record<string, Measure>> = {};
    const extra: Record<string, { mountMs: number; statsAtEnd: AgentStats['counters']; countedAfterLastWorkload: Counters; tableAtEnd: TableLoad | null; loadAvg: { before: number; after: number } }> = {};
    for (const [i, cfg] of CONFIGS.entries()) {
      // The 1-minute load average around each configuration: other work on the machine shows up here.
      const loadBefore = os.loadavg()[0]!;
      const r = await runConfig(store, mp, list, cfg, i);
      results[cfg.name] = r.measures;
      extra[cfg.name] = { mountMs: r.mountMs, statsAtEnd: r.cliStats.counters, countedAfterLastWorkload: r.late, tableAtEnd: r.table, loadAvg: { before: loadBefore, after: os.loadavg()[0]! } };
    }
    progress('');
    const base = results[CONFIGS[0]!.name]!;
    const ratios = Object.fromEntries(WORKLOADS.map((w) => [w.id, Object.fromEntries([1, 2, 3].map((i) => [
      `${CONFIGS[0]!.name} / ${CONFIGS[i]!.name}`, base[w.id]!.ms / results[CONFIGS[i]!.name]![w.id]!.ms,
    ]))]));
    const report = {
      setup: {
        files: FILES, dirs: DIRS, gitFiles: FILES, imported, gitSetupSeconds: made.gitSeconds,
        configurations: CONFIGS.map((c) => ({ name: c.name, agentArgs: c.args, coherent: c.coherent })),
        workloads: WORKLOADS.map((w) => ({ id: w.id, label: w.label, command: w.cmd('MP', 'LIST').join(' ') })),
        order: 'per configuration: fresh clone of the volume, fresh host (empty metadata table), fresh mount; then the workloads in the order listed',
        gitConfig: GIT.filter((x) => x !== '-c'),
        commit, uncommittedSrcFiles,
      },
      byConfig: results,
      ratios,
      perConfig: extra,
      totalSeconds: (performance.now() - started) / 1000,
    };
    return { results: report, table: render(results, ratios, extra) };
  } finally {
    if (isMounted(path.join(work, 'mnt'))) spawnSync('umount', ['-l', path.join(work, 'mnt')]);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function render(results: Record<string, Record<string, Measure>>, ratios: Record<string, Record<string, number>>,
  extra: Record<string, { tableAtEnd: TableLoad | null; loadAvg: { before: number; after: number } }>): string {
  const head = ['workload', ...CONFIGS.map((c) => `${CONFIGS.indexOf(c) + 1}. ${c.short}`), 'speedup 1/2', 'speedup 1/3', 'speedup 1/4'];
  const rows = WORKLOADS.map((w) => [
    w.label,
    ...CONFIGS.map((c) => { const m = results[c.name]![w.id]!; return `${(m.ms / 1000).toFixed(2)} s, ${m.counters.rpcs} RPCs`; }),
    ...Object.values(ratios[w.id]!).map((r) => `${r.toFixed(2)}x`),
  ]);
  const perFile = WORKLOADS.map((w) => [w.label, ...CONFIGS.map((c) => {
    const m = results[c.name]![w.id]!.counters;
    return `${(m.rpcs / w.per).toFixed(3)} (L ${m.lookupsLocal}/${m.lookupMisses}, G ${m.getattrsLocal}/${m.getattrMisses})`;
  })]);
  const notes: string[] = [];
  for (const c of CONFIGS) {
    for (const w of WORKLOADS) {
      const m = results[c.name]![w.id]!;
      if (m.output) notes.push(`${c.name}: ${w.label} printed ${JSON.stringify(m.output.slice(0, 200))} (expected nothing)`);
      if (m.indexRewritten) notes.push(`${c.name}: ${w.label} rewrote .git/index`);
    }
    const l = extra[c.name]!.loadAvg;
    notes.push(`${c.name}: load average ${l.before.toFixed(2)} before, ${l.after.toFixed(2)} after`);
    const t = extra[c.name]!.tableAtEnd;
    if (t) notes.push(`${c.name}: metadata table at the end ${t.loadPct.toFixed(1)} % full (${t.entries} entries, ${t.attrs} attributes, ${t.absent} absent names in ${t.slots} slots)`);
  }
  return [
    table([head, ...rows]),
    '',
    'RPCs per file (lookups local/misses, getattrs local/misses):',
    table([['workload', ...CONFIGS.map((c) => `${CONFIGS.indexOf(c) + 1}. ${c.short}`)], ...perFile]),
    '',
    `configurations: ${CONFIGS.map((c, i) => `${i + 1}. ${c.name} (${c.args.join(' ') || 'defaults'})`).join('; ')}`,
    ...notes,
  ].join('\n');
}
