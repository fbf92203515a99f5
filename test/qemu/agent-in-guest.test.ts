// The agent in a real QEMU guest (TCG): `prism agent mount --pci auto` inside the guest mounts a volume
// served by `prism host serve` on this machine, through the two ivshmem devices `prism qemu-args`
// prints (the VRPC region on an ivshmem-doorbell device, which the guest's agent binds to vfio-pci for
// the host's interrupts, and the read-only metadata table). The guest runs scripts/qemu-guest/steps.sh
// from its initramfs (built by scripts/qemu-guest/build.sh) and reports over the serial console; at its
// SYNC points this test does the host's part: reads the guest's files through a second VM's agent on
// this machine, writes one through it, `prism put`s files, checks the table file is unchanged, and
// measures the host process's CPU while the guest idles with the volume mounted.
//
// Slow (a few minutes under TCG) and needs root, /dev/fuse, qemu-system-x86_64, busybox-static, cpio:
// it has its own run, `npm run test:qemu` (ava.qemu.config.js); `npm test` does not include it.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingProgramsReason } from '../helpers/programs.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const prismBin = path.join(root, 'bin', 'prism.js');
const GUEST_TIMEOUT_MS = 10 * 60_000;
/** The most CPU the host may use while the guest idles with the volume mounted (doorbell): 1% of a core. */
const IDLE_CPU_MAX_PCT = 1;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

interface Step { ok: boolean; detail: string }
interface Run {
  steps: Map<string, Step>;
  /** PRISM TIME name ms */
  times: Map<string, number>;
  data: Map<string, string[]>;
  blocks: Map<string, string>;
  /** CPU of the host process (and of QEMU) between the guest's SYNCs NAME-begin and NAME-end. */
  idle: Map<string, { ms: number; hostPct: number; hostTicks: number; qemuPct?: number }>;
  /** What the host checked at the SYNC points and afterwards. */
  host: Map<string, Step>;
  bootMs?: number;
  guestUptimeAtInit?: number;
  totalMs: number;
  console: string;
  consoleFile: string;
  error?: string;
}

function md5(b: Buffer | string): string {
  return crypto.createHash('md5').update(b).digest('hex');
}

function prism(store: string, args: string[], input?: string): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [prismBin, '--store', store, ...args], { encoding: 'utf8', input, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15, after the command's ')'). */
function cpuTicks(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch { return undefined; }
}

/**
 * QEMU's arguments with one -machine: `prism qemu-args` gives `-machine q35`, and QEMU would take
 * only the last of two (or refuse them); the options of every -machine/-M go into the first.
 */
function mergeMachine(args: string[]): string[] {
  const out: string[] = [];
  let at = -1;
  for (let i = 0; i < args.length; i++) {
    if ((args[i] === '-machine' || args[i] === '-M') && i + 1 < args.length) {
      const v = args[++i]!;
      if (at < 0) { at = out.length + 1; out.push('-machine', v); continue; }
      const [type, ...props] = v.split(',');
      const have = out[at]!.split(',');
      // a second machine type would conflict: keep the first one's, take the other's properties
      if (type!.includes('=')) props.unshift(type!);
      else if (have[0]!.includes('=')) have.unshift(type!);
      out[at] = [...have, ...props].join(',');
    } else out.push(args[i]!);
  }
  return out;
}

function startHost(store: string, vms: string[]): Promise<{ child: ChildProcess; stop(): Promise<number | null>; log(): string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [prismBin, '--store', store, 'host', 'serve', ...vms.flatMap((v) => ['--vm', v])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => { out += d; if (/^ready$/m.test(out)) resolve({ child, log: () => out, stop }); });
    child.stderr!.on('data', (d) => { out += d; });
    child.once('exit', (code) => reject(new Error(`host exited with ${code}: ${out}`)));
    function stop(): Promise<number | null> {
      return new Promise((res) => {
        if (child.exitCode !== null || child.signalCode !== null) { res(child.exitCode); return; }
        child.once('exit', (code) => res(code));
        child.kill('SIGTERM');
      });
    }
  });
}

/** Build the guest, start the host, boot the guest, answer its SYNCs, then check the store offline. */
async function runScenario(): Promise<Run> {
  const t0 = Date.now();
  const run: Run = { steps: new Map(), times: new Map(), data: new Map(), blocks: new Map(), host: new Map(), idle: new Map(), totalMs: 0, console: '', consoleFile: '' };
  const hostCheck = (name: string, ok: boolean, detail = '') => { run.host.set(name, { ok, detail }); };

  const built = spawnSync('bash', [path.join(root, 'scripts', 'qemu-guest', 'build.sh')], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`scripts/qemu-guest/build.sh failed: ${built.stderr}`);
  const kernel = /^KERNEL=(.*)$/m.exec(built.stdout)![1]!;
  const initrd = /^INITRD=(.*)$/m.exec(built.stdout)![1]!;

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-qemu-'));
  const store = path.join(dir, 'store');
  const otherMnt = path.join(dir, 'other');
  fs.mkdirSync(otherMnt);
  run.consoleFile = path.join(dir, 'console.log');
  const vm = `qg${process.pid}`, other = `qo${process.pid}`, vol = 'vol';
  const metaFile = `/dev/shm/prism-${vm}-meta`;

  let r = prism(store, ['volume', 'create', vol]);
  if (r.code !== 0) throw new Error(`volume create: ${r.err}`);
  r = prism(store, ['put', `${vol}:/pre.txt`, '-'], 'put before the host started\n');
  if (r.code !== 0) throw new Error(`put: ${r.err}`);

  const host = await startHost(store, [`${vm}=${vol}`, `${other}=${vol}`]);
  let qemu: ChildProcess | undefined;
  let otherMounted = false;
  try {
    const qa = prism(store, ['qemu-args', vm]);
    if (qa.code !== 0) throw new Error(`qemu-args: ${qa.err}`);
    const metaHead = Buffer.alloc(64);
    const fd = fs.openSync(metaFile, 'r');
    fs.readSync(fd, metaHead, 0, 64, 0);
    fs.closeSync(fd);

    // qemu-args: -machine q35 -device intel-iommu, the doorbell device on the host's ivshmem server
    // socket (the host serves it already), and the metadata table's ivshmem-plain device
    const args = mergeMachine([
      '-accel', 'tcg,thread=multi', '-smp', '2', '-cpu', 'max', '-m', '1024', '-nographic', '-no-reboot',
      '-kernel', kernel, '-initrd', initrd, '-append', `console=ttyS0 quiet panic=-1 prism.volume=${vol}${process.env.PRISM_QEMU_APPEND ? ` ${process.env.PRISM_QEMU_APPEND}` : ''}`,
      ...qa.out.trim().split(/\s+/),
    ]);
    run.data.set('qemu-args', args);
    const bootStart = Date.now();
    qemu = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const consoleOut = fs.createWriteStream(run.consoleFile);
    let pending = '';
    let block: { name: string; lines: string[] } | undefined;
    let chain = Promise.resolve();
    const idleStart = new Map<string, { at: number; host?: number; qemu?: number }>();

    const onSync = async (name: string) => {
      if (name.endsWith('-begin')) {
        idleStart.set(name.slice(0, -'-begin'.length), { at: performance.now(), host: cpuTicks(host.child.pid), qemu: cpuTicks(qemu?.pid) });
      } else if (name.endsWith('-end')) {
        const what = name.slice(0, -'-end'.length);
        const t1 = performance.now(), h1 = cpuTicks(host.child.pid), q1 = cpuTicks(qemu?.pid);
        const b = idleStart.get(what);
        if (b && b.host !== undefined && h1 !== undefined) {
          const ms = t1 - b.at;
          const pct = (ticks: number) => (ticks / CLK_TCK) * 1000 / ms * 100;
          run.idle.set(what, { ms, hostTicks: h1 - b.host, hostPct: pct(h1 - b.host), qemuPct: b.qemu !== undefined && q1 !== undefined ? pct(q1 - b.qemu) : undefined });
        }
      } else if (name === 'written') {
        // (1) the guest's writes are in the volume: read them through another VM's agent
        const m = prism(store, ['agent', 'mount', '--shm', `/dev/shm/prism-${other}`, '--volume', vol, otherMnt]);
        otherMounted = m.code === 0;
        hostCheck('other-agent-mount', otherMounted, m.err.trim());
        if (otherMounted) {
          const read = (f: string) => { try { return fs.readFileSync(path.join(otherMnt, f)); } catch (e) { return Buffer.from(`(${(e as Error).message})`); } };
          const hello = read('hello.txt').toString();
          hostCheck('guest-write-hello', hello === 'hello from the guest\n', JSON.stringify(hello));
          const b = read('dir/b.txt').toString();
          hostCheck('guest-write-rename', b === 'line one\nline two\nappended\n', JSON.stringify(b));
          const small = Buffer.concat(Array.from({ length: 100 }, (_, i) => read(`small/f${i + 1}`)));
          hostCheck('guest-write-small', md5(small) === run.data.get('small-md5')?.[0], `md5 ${md5(small)} vs guest ${run.data.get('small-md5')?.[0]}`);
          const big = read('big');
          hostCheck('guest-write-big', md5(big) === run.data.get('big-md5')?.[0], `${big.length} bytes, md5 ${md5(big)} vs guest ${run.data.get('big-md5')?.[0]}`);
          try {
            fs.writeFileSync(path.join(otherMnt, 'other.txt'), 'written by the other VM\n');
            hostCheck('other-vm-write', true);
          } catch (e) { hostCheck('other-vm-write', false, (e as Error).message); }
        }
        // (2) files put by the host while it runs (through its admin socket)
        const p1 = prism(store, ['put', `${vol}:/from-host.txt`, '-'], 'put by the host\n');
        const p2 = prism(store, ['put', `${vol}:/hello.txt`, '-'], 'hello, replaced by the host\n');
        hostCheck('host-put', p1.code === 0 && p2.code === 0, `${p1.err}${p2.err}`.trim());
      } else if (name === 'meta-written') {
        // (4) the guest tried to write the table: the host's file must not have changed there
        const now = Buffer.alloc(64);
        const f = fs.openSync(metaFile, 'r');
        fs.readSync(f, now, 0, 64, 0);
        fs.closeSync(f);
        hostCheck('meta-unchanged', now.subarray(0, 8).equals(metaHead.subarray(0, 8)) && !now.includes('GUESTWR!') && !now.subarray(0, 4).equals(Buffer.from('EWR!')),
          `first 8 bytes before ${metaHead.subarray(0, 8).toString('hex')}, after ${now.subarray(0, 8).toString('hex')}`);
      }
      qemu!.stdin!.write('go\n');
    };

    const onLine = (line: string) => {
      if (block) {
        if (line === `PRISM END ${block.name}`) { run.blocks.set(block.name, block.lines.join('\n')); block = undefined; } else block.lines.push(line);
        return;
      }
      // a marker may follow the console's escape sequences or a kernel message on the same line
      const at = line.indexOf('PRISM ');
      const m = at < 0 ? null : /^PRISM (\S+)(?: (\S+))?(?: (.*))?$/.exec(line.slice(at));
      if (!m) return;
      const [, kind, name = '', rest = ''] = m;
      if (kind === 'UP') { run.bootMs = Date.now() - bootStart; run.guestUptimeAtInit = Number(name) * 1000; } else if (kind === 'STEP') {
        run.steps.set(name, { ok: rest.startsWith('ok'), detail: rest.replace(/^(ok|fail) ?/, '') });
      } else if (kind === 'TIME') run.times.set(name, Number(rest));
      else if (kind === 'DATA') run.data.set(name, rest.split(' '));
      else if (kind === 'BEGIN') block = { name, lines: [] };
      else if (kind === 'SYNC') chain = chain.then(() => onSync(name)).catch((e) => { hostCheck(`sync-${name}`, false, String(e)); qemu!.stdin!.write('go\n'); });
    };

    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { run.error = `the guest did not finish within ${GUEST_TIMEOUT_MS / 1000} s`; qemu!.kill('SIGKILL'); }, GUEST_TIMEOUT_MS);
      const take = (d: Buffer) => {
        const s = d.toString('latin1');
        consoleOut.write(d);
        run.console += s;
        pending += s;
        let nl;
        while ((nl = pending.indexOf('\n')) >= 0) {
          onLine(pending.slice(0, nl).replace(/\r/g, ''));
          pending = pending.slice(nl + 1);
        }
      };
      qemu!.stdout!.on('data', take);
      qemu!.stderr!.on('data', take);
      qemu!.once('error', (e) => { clearTimeout(timer); reject(e); });
      qemu!.once('exit', (code, sig) => {
        clearTimeout(timer);
        consoleOut.end();
        if (!/^PRISM DONE$/m.test(run.console.replace(/\r/g, ''))) run.error ??= `qemu exited (${code ?? sig}) before the guest said PRISM DONE`;
        resolve();
      });
    });
    await chain;
  } finally {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    if (otherMounted) {
      const u = prism(store, ['agent', 'umount', otherMnt]);
      if (u.code !== 0) prism(store, ['agent', 'umount', '--lazy', otherMnt]);
    }
    await new Promise((res) => setTimeout(res, 500));
    const code = await host.stop();
    hostCheck('host-stopped-cleanly', code === 0, `exit ${code}; log: ${host.log().slice(-2000)}`);
  }

  // (1) again, offline: the store itself holds what the guest wrote
  const cat = (f: string) => { const c = prism(store, ['cat', `${vol}:${f}`]); return c.code === 0 ? c.out : `(exit ${c.code}: ${c.err.trim()})`; };
  hostCheck('offline-hello', cat('/hello.txt') === 'hello, replaced by the host\n', JSON.stringify(cat('/hello.txt')));
  hostCheck('offline-rename', cat('/dir/b.txt') === 'line one\nline two\nappended\n', JSON.stringify(cat('/dir/b.txt')));
  hostCheck('offline-other', cat('/other.txt') === 'written by the other VM\n', JSON.stringify(cat('/other.txt')));
  const bigOut = spawnSync(process.execPath, [prismBin, '--store', store, 'cat', `${vol}:/big`], { maxBuffer: 64 << 20 });
  hostCheck('offline-big', md5(bigOut.stdout) === run.data.get('big-md5')?.[0], `${bigOut.stdout.length} bytes`);
  const ls = prism(store, ['ls', `${vol}:/small`]);
  hostCheck('offline-small', ls.code === 0 && ls.out.trim().split('\n').length === 100, `${ls.out.trim().split('\n').length} names`);
  const fsck = prism(store, ['fsck']);
  hostCheck('fsck', fsck.code === 0, (fsck.out + fsck.err).trim().slice(-500));
  run.totalMs = Date.now() - t0;
  const summary = {
    bootMs: run.bootMs, guestUptimeAtInitMs: run.guestUptimeAtInit, times: Object.fromEntries(run.times), totalMs: run.totalMs,
    data: Object.fromEntries(run.data), idle: Object.fromEntries(run.idle),
    steps: Object.fromEntries(run.steps), host: Object.fromEntries(run.host), error: run.error, console: run.consoleFile,
  };
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(summary, null, 2));
  // keep the console log and the summary; the store and the VMs' shared-memory files go
  fs.rmSync(store, { recursive: true, force: true });
  for (const f of [vm, other].flatMap((n) => [`/dev/shm/prism-${n}`, `/dev/shm/prism-${n}-meta`, `/dev/shm/prism-${n}.ivshmem`])) fs.rmSync(f, { force: true });
  return run;
}

const why = (() => {
  if (process.getuid?.() !== 0) return 'needs root (FUSE mounts, /dev/shm regions)';
  if (!fs.existsSync('/dev/fuse')) return 'needs /dev/fuse';
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) return 'needs qemu-system-x86_64 (apt-get install qemu-system-x86)';
  const missing = missingProgramsReason(['busybox', 'cpio']); // the guest's initramfs
  if (missing) return missing.replace('install-system-deps.sh', 'install-system-deps.sh guest');
  return undefined;
})();

if (why) test.skip(`agent in a QEMU guest: ${why}`, () => {});

let scenario: Promise<Run> | undefined;
function scenarioOnce(t: ExecutionContext): Promise<Run> {
  t.timeout(GUEST_TIMEOUT_MS + 5 * 60_000);
  scenario ??= runScenario();
  return scenario;
}

/** One ava test per guest step or host check; the whole run happens once. */
function check(title: string, pick: (r: Run) => Step | undefined): void {
  if (why) return; // one skipped test says why (above)
  const fn = async (t: ExecutionContext) => {
    const run = await scenarioOnce(t);
    const s = pick(run);
    if (run.error) t.log(`scenario: ${run.error} (console: ${run.consoleFile})`);
    if (!s) { t.fail(`not reached (console: ${run.consoleFile}): ${run.console.slice(-3000)}`); return; }
    if (s.detail) t.log(s.detail);
    t.true(s.ok, s.detail);
  };
  test.serial(title, fn);
}

const step = (name: string) => (r: Run) => r.steps.get(name);
const hostSaw = (name: string) => (r: Run) => r.host.get(name);

check('guest: fuse.ko loads and /dev/fuse exists', step('fuse'));
check('guest: VFIO\'s modules load (init.sh) and /dev/vfio/vfio exists', step('vfio'));
check('guest: sees the two ivshmem devices of prism qemu-args', step('pci'));
check('guest: node runs', step('node'));
// Both once failed here, found by this test: a futex wake on the PCI BAR mapping (EFAULT) broke the
// handshake, and READ data written to /dev/fuse straight from the BAR failed (EFAULT, the read EIO).
check('guest: prism agent mount --pci auto mounts the volume', step('mount'));
check('guest: reads a file put before the host started', step('read-pre'));
check('guest: writes, appends, renames, symlinks and reads back', step('write-read'));
check('guest: 100 small files written and read back', step('small-files'));
check('guest: a 16 MiB file written and read back', step('big-file'));
// The agent bound the doorbell device to vfio-pci and waits on its MSI-X vector: without the doorbell
// (no VFIO, no IOMMU, the device not connected to the host's ivshmem server) it polls, and fails here.
check('guest: the agent waits on the doorbell (transport doorbell (pci), interrupts > 0)', step('doorbell'));
check('host: a second agent (other VM, same volume) mounts on this machine', hostSaw('other-agent-mount'));
check('host: sees the guest\'s file through the other VM', hostSaw('guest-write-hello'));
check('host: sees the guest\'s rename and append', hostSaw('guest-write-rename'));
check('host: sees the guest\'s 100 small files', hostSaw('guest-write-small'));
check('host: sees the guest\'s 16 MiB file', hostSaw('guest-write-big'));
check('host: prism put through the running host', hostSaw('host-put'));
check('guest: a new file put by the host is readable at once', step('host-put-new'));
check('guest: a file replaced by the host is read anew at once (30 s kernel caches)', step('host-put-replace'));
check('guest: a file written by the other VM is readable at once', step('other-vm-write'));
check('guest: prism agent stats shows the metadata table (a PCI BAR) in use', step('meta-used'));
check('guest: lookups and getattrs answered locally from the table', (r) => {
  const text = r.blocks.get('stats');
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as { metaTable: string | null; counters: { lookupsLocal: number; getattrsLocal: number; rpcs: number } };
    const c = s.counters;
    return { ok: !!s.metaTable && c.lookupsLocal > 0, detail: `metaTable ${s.metaTable}, lookupsLocal ${c.lookupsLocal}, getattrsLocal ${c.getattrsLocal}, rpcs ${c.rpcs}` };
  } catch (e) { return { ok: false, detail: `stats output is not JSON: ${text}` }; }
});
check('host: the guest\'s writes to the metadata table BAR left the table file unchanged', hostSaw('meta-unchanged'));
check('guest: still works after trying to write the table', step('meta-after-write'));
check(`host: under ${IDLE_CPU_MAX_PCT}% of a core while the guest idles 5 s with the volume mounted (doorbell)`, (r) => {
  const i = r.idle.get('idle');
  if (!i) return undefined;
  return {
    ok: i.hostPct < IDLE_CPU_MAX_PCT,
    detail: `host process ${i.hostPct.toFixed(2)}% of a core (${i.hostTicks} ticks of 1/${CLK_TCK} s in ${(i.ms / 1000).toFixed(2)} s); QEMU ${i.qemuPct?.toFixed(1) ?? '?'}%; transport ${r.data.get('transport')?.join(' ') ?? '?'}`,
  };
});
check('guest: remounts with --no-doorbell (transport polling)', step('remount'));
check('guest: remounts with the doorbell again (the device still bound to vfio-pci)', step('remount-doorbell'));
check('guest: prism agent umount', step('umount'));
check('host: stops cleanly after the guest is gone', hostSaw('host-stopped-cleanly'));
check('offline: the store holds the guest\'s and the host\'s writes', (r) => {
  const names = ['offline-hello', 'offline-rename', 'offline-other', 'offline-big', 'offline-small'];
  const bad = names.filter((n) => !r.host.get(n)?.ok);
  return { ok: bad.length === 0, detail: bad.map((n) => `${n}: ${r.host.get(n)?.detail}`).join('; ') };
});
check('offline: prism fsck is clean', hostSaw('fsck'));

if (!why) {
  test.serial('figures: boot, mount and I/O times in the guest', async (t) => {
    const run = await scenarioOnce(t);
    const ms = (n: string) => (run.times.has(n) ? `${run.times.get(n)} ms` : 'n/a');
    t.log(`guest boot to /init: ${run.bootMs} ms (host clock; guest uptime ${run.guestUptimeAtInit} ms)`);
    t.log(`node start ${ms('node-start')}, prism --help ${ms('prism-help')}, agent mount ${ms('mount')}`);
    if (run.blocks.has('mount-diagnosis')) t.log(`mount diagnosis:\n${run.blocks.get('mount-diagnosis')}`);
    t.log(`100 x 1 KiB files: write ${ms('small-write')}, read ${ms('small-read')}; 16 MiB: write+sync ${ms('big-write')}, read ${ms('big-read')}`);
    t.log(`metadata table: ${run.steps.get('meta-used')?.ok ? 'used' : 'not used'}; whole scenario ${run.totalMs} ms; console ${run.consoleFile}`);
    for (const n of ['meta-mmap-write', 'meta-devmem-write']) if (run.blocks.has(n)) t.log(`${n}: ${run.blocks.get(n)}`);
    t.log(`transport ${run.data.get('transport')?.join(' ') ?? '?'}; doorbell ${run.data.get('doorbell')?.join(' ') ?? '?'}`);
    for (const [what, i] of run.idle) {
      t.log(`idle ${what}: host ${i.hostPct.toFixed(2)}% of a core (${i.hostTicks} ticks in ${(i.ms / 1000).toFixed(2)} s), QEMU ${i.qemuPct?.toFixed(1) ?? '?'}%`);
    }
    // round trips, doorbell vs polling (steps.sh rt): total ms of 100 ops, and per-op percentiles
    for (const op of ['create', 'read']) {
      for (const how of ['doorbell', 'polling', 'doorbell2']) {
        const n = `rt-${op}-${how}`;
        if (run.times.has(n)) t.log(`${op} x100 (${how}): ${run.times.get(n)} ms, ${run.data.get(n)?.join(' ')}`);
      }
    }
    for (const how of ['doorbell', 'polling', 'doorbell2']) if (run.data.has(`rt-${how}`)) t.log(`rt ${how}: ${run.data.get(`rt-${how}`)!.join(' ')}`);
    for (const how of ['doorbell', 'polling', 'doorbell2', 'polling2', 'spin']) if (run.data.has(`null-${how}`)) t.log(`NULL round trip (${how}): ${run.data.get(`null-${how}`)!.join(' ')}`);
    for (const n of ['doorbell-stats', 'doorbell-agent-log', 'doorbell-dmesg', 'doorbell-devices', 'agent-log-remount']) if (run.blocks.has(n)) t.log(`${n}:\n${run.blocks.get(n)}`);
    t.truthy(run.bootMs);
  });
}
