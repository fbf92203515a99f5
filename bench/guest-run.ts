// Runs inside the bench guest (scripts/qemu-guest/init.sh with prism.bench=1): loads the modules of
// the targets, brings up the network, mounts the tools image (this machine's gcc, make, git, tar as a
// read-only root to chroot into) and the inputs disk, then mounts each target of /in/plan.json in
// turn at /sysroot/mnt/t and times the workloads on it. Reports on the console (guest-plan.ts).
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MARKER, type GuestMarker, type GuestPlan, type GuestTarget, type Workload } from './guest-plan.js';

const ROOT = '/sysroot';
const MNT = `${ROOT}/mnt/t`;
/** The workloads' directory on the target, as the chroot sees it and as this process does. */
const W = '/mnt/t/w';
const WH = `${ROOT}${W}`;
const HOUR = 3600_000;

function report(m: GuestMarker): void {
  process.stdout.write(`${MARKER}${JSON.stringify(m)}\n`);
}

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: HOUR, ...opts });
  if (r.error || r.status !== 0) {
    const why = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-3).join(' / ');
    throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? `exit ${r.status}`}${why ? `: ${why}` : ''}`);
  }
  return String(r.stdout ?? '');
}

/** A shell command in the tools chroot. */
function inRoot(script: string): string {
  return run('chroot', [ROOT, '/bin/sh', '-c', script], {
    env: { PATH: '/usr/bin:/usr/sbin:/bin:/sbin', HOME: '/tmp/home', LANG: 'C', GIT_CONFIG_NOSYSTEM: '1' },
  });
}

function dropCaches(): void {
  run('sync', []);
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Reads the compiler, the tools and the inputs into the page cache, so that every workload starts
 * with them cached whatever ran before it (the fs phases drop the caches). Not timed. */
function warmTools(): void {
  inRoot('tar -cf - /usr/bin /usr/libexec/gcc /usr/lib/gcc /usr/include /in 2>/dev/null | cat >/dev/null');
}

function seconds(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function loadModules(group: string): void {
  for (const m of fs.readFileSync(`/lib/modules/${group}.order`, 'utf8').split('\n').filter(Boolean)) {
    const r = spawnSync('insmod', [`/lib/modules/${m}`], { encoding: 'utf8' });
    if (r.status !== 0 && !/exists/i.test(r.stderr)) throw new Error(`insmod ${m}: ${r.stderr.trim()}`);
  }
}

/** The virtio disk whose serial is `serial` (QEMU's -device virtio-blk-pci,serial=...). */
function diskWithSerial(serial: string): string {
  for (const d of fs.readdirSync('/sys/block')) {
    try {
      if (fs.readFileSync(`/sys/block/${d}/serial`, 'utf8').trim() === serial) return `/dev/${d}`;
    } catch { /* not a virtio disk */ }
  }
  throw new Error(`no disk with serial ${serial}`);
}

function setUp(): GuestPlan {
  loadModules('bench');
  // QEMU's user network: the guest is 10.0.2.15, the host's loopback is 10.0.2.2
  run('ip', ['link', 'set', 'lo', 'up']);
  run('ip', ['link', 'set', 'eth0', 'up']);
  run('ip', ['addr', 'add', '10.0.2.15/24', 'dev', 'eth0']);
  run('ip', ['route', 'add', 'default', 'via', '10.0.2.2']);
  fs.mkdirSync(ROOT, { recursive: true });
  run('mount', ['-o', 'ro', diskWithSerial('tools'), ROOT]);
  run('mount', ['-o', 'ro', diskWithSerial('inputs'), `${ROOT}/in`]);
  run('mount', ['-t', 'tmpfs', 'tmpfs', `${ROOT}/tmp`]);
  for (const d of ['dev', 'proc', 'sys']) run('mount', ['--bind', `/${d}`, `${ROOT}/${d}`]);
  fs.mkdirSync(`${ROOT}/tmp/home`);
  // git refuses repositories owned by someone else (NFS may map root's files to another owner)
  inRoot("git config --global safe.directory '*' && git config --global user.email bench@prism && git config --global user.name bench");
  return JSON.parse(fs.readFileSync(`${ROOT}/in/plan.json`, 'utf8')) as GuestPlan;
}

function mountTarget(t: GuestTarget): void {
  const m = t.mount;
  switch (m.kind) {
    case 'blk': run('mount', [diskWithSerial(m.serial), MNT]); break;
    case 'virtiofs': run('mount', ['-t', 'virtiofs', m.tag, MNT]); break;
    // util-linux's mount hands the options to the kernel's NFS client as they are (no mount.nfs
    // helper in the image, no portmapper lookups: the ports are given)
    case 'nfs': inRoot(`mount -t nfs -o vers=3,proto=tcp,port=${m.port},mountport=${m.mountPort},mountproto=tcp,nolock,noacl,addr=${m.addr},mountaddr=${m.addr} ${m.addr}:${m.export} /mnt/t`); break;
    case 'prism': run('/usr/bin/prism', ['agent', 'mount', ...m.args, MNT]); break;
  }
}

function unmountTarget(t: GuestTarget): void {
  if (t.mount.kind === 'prism') run('/usr/bin/prism', ['agent', 'umount', MNT]);
  else run('umount', [MNT]);
}

// ---- workloads: each returns seconds per phase; what it leaves behind is removed untimed ----------

function build(): Record<string, number> {
  inRoot(`cp -R /in/cproj ${W}/cproj`);
  const build = seconds(() => inRoot(`make -s -C ${W}/cproj -j2`));
  const rebuild = seconds(() => inRoot(`make -s -C ${W}/cproj clean && make -s -C ${W}/cproj -j2`));
  if (!/^-?\d+$/.test(inRoot(`${W}/cproj/app`).trim())) throw new Error('the program built does not run');
  return { build, rebuild };
}

function untar(): Record<string, number> {
  const untar = seconds(() => inRoot(`tar -xf /in/tree.tar -C ${W}`));
  const remove = seconds(() => inRoot(`rm -rf ${W}/tree`));
  return { untar, 'rm -rf': remove };
}

function git(): Record<string, number> {
  const clone = seconds(() => inRoot(`git clone -q --no-hardlinks /in/repo.git ${W}/repo`));
  const status = seconds(() => inRoot(`git -C ${W}/repo status --porcelain`));
  // change up to 50 tracked files, then ask what changed
  const n = inRoot(`cd ${W}/repo && git ls-files | awk 'NR % 40 == 1' | head -50 | while read -r f; do echo changed >>"$f"; echo "$f"; done | wc -l`).trim();
  let changed = '';
  const diff = seconds(() => { changed = inRoot(`git -C ${W}/repo diff --shortstat`); });
  if (!new RegExp(`^\\s*${n} files? changed`).test(changed)) throw new Error(`changed ${n} files, git diff saw: ${changed.trim()}`);
  return { 'git clone': clone, 'git status': status, 'git diff': diff };
}

/** The phases of `npm run bench -- fs`, smaller: files of 512 B - 8 KiB in directories, stat and read
 * them, a big file written and read sequentially, 4 KiB random writes into it, remove it all. */
function fsPhases(p: GuestPlan['fs']): Record<string, number> {
  const dir = path.join(WH, 'fs');
  const pool = crypto.randomBytes(1 << 20);
  const files: string[] = [];
  let x = 12345;
  const r: Record<string, number> = {};
  r.create = seconds(() => {
    fs.mkdirSync(dir);
    for (let d = 0; d < p.dirs; d++) {
      fs.mkdirSync(path.join(dir, `d${d}`));
      for (let f = 0; f < p.filesPerDir; f++) {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        const n = 512 + (x % 7681), at = x % (pool.length - n);
        const file = path.join(dir, `d${d}`, `f${f}`);
        fs.writeFileSync(file, pool.subarray(at, at + n));
        files.push(file);
      }
    }
  });
  dropCaches();
  r.stat = seconds(() => { for (const f of files) fs.lstatSync(f); });
  r['read all'] = seconds(() => { for (const f of files) fs.readFileSync(f); });
  const big = path.join(dir, 'big'), bytes = p.seqMiB << 20;
  r['write seq'] = seconds(() => {
    const fd = fs.openSync(big, 'w');
    for (let off = 0; off < bytes; off += pool.length) fs.writeSync(fd, pool, 0, pool.length, off);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
  dropCaches();
  r['read seq'] = seconds(() => {
    const fd = fs.openSync(big, 'r');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let off = 0; off < bytes; off += buf.length) fs.readSync(fd, buf, 0, buf.length, off);
    fs.closeSync(fd);
  });
  r['random 4K'] = seconds(() => {
    const fd = fs.openSync(big, 'r+');
    const page = pool.subarray(0, 4096);
    for (let i = 0; i < p.randomWrites; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      fs.writeSync(fd, page, 0, 4096, (x % (bytes / 4096)) * 4096);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
  r.remove = seconds(() => fs.rmSync(dir, { recursive: true }));
  return r;
}

function workload(w: Workload, plan: GuestPlan): Record<string, number> {
  switch (w) {
    case 'build': return build();
    case 'untar': return untar();
    case 'git': return git();
    case 'fs': return fsPhases(plan.fs);
  }
}

function main(): void {
  report({ kind: 'info', key: 'guest kernel', value: os.release() });
  report({ kind: 'info', key: 'guest cpus', value: String(os.cpus().length) });
  report({ kind: 'info', key: 'guest memory MiB', value: String(Math.round(os.totalmem() / 2 ** 20)) });
  const plan = setUp();
  report({ kind: 'info', key: 'plan', value: JSON.stringify(plan) });
  for (const t of plan.targets) {
    try {
      mountTarget(t);
    } catch (e) {
      report({ kind: 'skip', target: t.id, reason: `mount failed: ${(e as Error).message}` });
      continue;
    }
    try {
      for (let rep = 1; rep <= plan.reps; rep++) {
        for (const w of plan.workloads) {
          report({ kind: 'progress', target: t.id, workload: w, rep });
          try {
            fs.rmSync(WH, { recursive: true, force: true });
            fs.mkdirSync(WH);
            run('sync', []);
            warmTools();
            for (const [phase, s] of Object.entries(workload(w, plan))) report({ kind: 'result', target: t.id, workload: w, phase, rep, seconds: s });
          } catch (e) {
            report({ kind: 'fail', target: t.id, workload: w, rep, reason: (e as Error).message });
          }
        }
      }
      fs.rmSync(WH, { recursive: true, force: true });
      if (t.mount.kind === 'prism') {
        // how the agent reached the host (doorbell, polling, TCP) and how many RPCs the workloads cost
        const s = spawnSync('/usr/bin/prism', ['agent', 'stats', MNT, '--json'], { encoding: 'utf8' });
        report({ kind: 'info', key: `agent stats ${t.id}`, value: s.status === 0 ? s.stdout.trim() : `(agent stats failed: ${s.stderr.trim()})` });
      }
    } finally {
      try { unmountTarget(t); } catch (e) { report({ kind: 'info', key: `umount ${t.id}`, value: (e as Error).message }); }
    }
  }
  report({ kind: 'done' });
}

try {
  main();
} catch (e) {
  report({ kind: 'info', key: 'error', value: (e as Error).stack ?? String(e) });
  report({ kind: 'done' });
}
