// `npm run bench -- guest [--quick] [--kvm] [--reps N] [--targets raw,prism-shm,...]`, or
// `--report CONSOLE_LOG` for the report of a run whose guest's console was kept (an interrupted one): Prism inside a QEMU guest
// against the ways a VM gets a file system today, all attached to one guest boot and run with the same
// workloads (bench/guest-run.ts, inside the guest):
//   raw          ext4 on a virtio-blk disk backed by a raw image (the virtual-disk baseline)
//   qcow2        ext4 on a virtio-blk disk, a qcow2 linked clone of a base image (qemu-img create -b)
//   virtiofs     virtiofsd (QEMU's, from Debian) sharing a host directory
//   nfs          NFSv3, the guest kernel's client, NFS-Ganesha (FSAL VFS) on the host, QEMU user network
//   prism-shm    Prism over ivshmem (the doorbell) with the metadata table
//   prism-nometa the same without the metadata table (every LOOKUP and GETATTR is an RPC)
//   prism-tcp    Prism over the TCP fallback through QEMU's user network
// Workloads: a C build (make -j2, clean, again), untar a real tree and rm -rf it, git clone/status/
// diff over thousands of files, and the fs suite's phases. Ratios against `raw` are the headline.
// The guest's userland (gcc, make, git, tar) is this machine's own packages on a read-only disk
// (scripts/qemu-guest/tools-image.sh). Needs root, qemu-system-x86, qemu-utils, busybox-static, cpio,
// e2fsprogs; virtiofsd (qemu-system-common), nfs-ganesha + nfs-ganesha-vfs + rpcbind for theirs:
// a target whose server is missing is reported as skipped with the reason.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeProject } from './c-project.js';
import { parseMarkers, TARGETS, WORKLOADS, type GuestMarker, type GuestPlan, type GuestTarget } from './guest-plan.js';
import { chart, collect, render } from './guest-report.js';
import { sh, waitFor } from './processes.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const prismBin = path.join(root, 'bin', 'prism.js');
const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const VM = 'benchguest', VM_TCP = 'benchguesttcp';
/** How long the servers of the targets may take to come up, and how often to look. */
const SERVER_WAIT = { ms: 30_000, everyMs: 100 };

interface Options { quick: boolean; kvm: boolean; reps?: number; only?: string[]; report?: string }

function options(argv: string[]): Options {
  const o: Options = { quick: process.env.PRISM_BENCH_QUICK === '1', kvm: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') o.quick = true;
    else if (a === '--kvm') o.kvm = true;
    else if (a === '--targets') o.only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a === '--report') o.report = argv[++i];
    else if (a === '--reps') {
      o.reps = Number(argv[++i]);
      if (!Number.isInteger(o.reps) || o.reps < 1) throw new Error('bench guest: --reps needs a whole number of at least 1');
    } else throw new Error(`bench guest: unknown option ${a} (--quick, --kvm, --reps N, --targets a,b, --report CONSOLE_LOG)`);
  }
  return o;
}

const QUICK_TARGETS = ['raw', 'virtiofs', 'nfs', 'prism-shm'];
/** Sized so that a TCG guest runs the whole set in about an hour (--quick: a few minutes). */
const SIZES = {
  full: { reps: 3, modules: 24, treeFiles: 1000, fs: { dirs: 10, filesPerDir: 50, seqMiB: 32, randomWrites: 512 } },
  quick: { reps: 1, modules: 12, treeFiles: 400, fs: { dirs: 5, filesPerDir: 40, seqMiB: 8, randomWrites: 128 } },
};

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function version(cmd: string, args: string[], pattern: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return pattern.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown';
}

function progress(msg: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${msg}`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    }).on('error', reject);
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); }).on('error', () => resolve(false));
  });
}

/** The bench VMs' region and table files (the host keeps them while QEMU maps them). */
function removeShmFiles(): void {
  for (const f of fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`prism-${VM}`))) fs.rmSync(path.join('/dev/shm', f), { force: true });
}

/** Processes started for the run, stopped at the end whatever happens. */
class Children {
  private list: ChildProcess[] = [];
  add(c: ChildProcess): ChildProcess { this.list.push(c); return c; }
  async stopAll(): Promise<void> {
    await Promise.all(this.list.map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) { resolve(); return; }
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      c.once('exit', () => { clearTimeout(t); resolve(); });
      c.kill('SIGTERM');
    })));
  }
}

// ---- the host's side of each target --------------------------------------------------------------

/** ext4 images for the two virtio-blk targets: a raw one, and a qcow2 linked clone of a base. */
function disks(work: string): { raw: string; qcow2: string } {
  const raw = path.join(work, 'raw.img'), base = path.join(work, 'base.img'), qcow2 = path.join(work, 'clone.qcow2');
  for (const f of [raw, base]) {
    sh('truncate', ['-s', '4G', f]);
    // initialized now, so that the guest's kernel does not zero inode tables while it is measured
    sh('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', f]);
  }
  sh('qemu-img', ['convert', '-O', 'qcow2', base, `${base}.qcow2`]);
  fs.rmSync(base);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${base}.qcow2`, '-F', 'qcow2', qcow2]);
  // on the disk now: else the guest's first fsync on the raw disk pays for writing mkfs's inode tables
  sh('sync', []);
  return { raw, qcow2 };
}

async function startVirtiofsd(work: string, kids: Children): Promise<string> {
  if (!fs.existsSync(VIRTIOFSD)) throw new Error(`${VIRTIOFSD} is missing (apt-get install qemu-system-common)`);
  const dir = path.join(work, 'virtiofs'), sock = path.join(work, 'virtiofs.sock');
  fs.mkdirSync(dir);
  // sandbox=chroot: namespaces may be unavailable in a container; the guest is ours either way
  const c = kids.add(spawn(VIRTIOFSD, [`--socket-path=${sock}`, '-o', `source=${dir}`, '-o', 'cache=auto', '-o', 'sandbox=chroot'], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  c.stderr!.on('data', (d) => { err += d; });
  await waitFor('virtiofsd', () => fs.existsSync(sock), c, SERVER_WAIT).catch((e) => { throw new Error(`${(e as Error).message}: ${err.trim()}`); });
  return sock;
}

async function startGanesha(work: string, kids: Children): Promise<{ port: number; mountPort: number; export: string }> {
  if (!has('ganesha.nfsd')) throw new Error('ganesha.nfsd is missing (apt-get install nfs-ganesha nfs-ganesha-vfs)');
  if (!fs.existsSync('/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so')) throw new Error('FSAL VFS is missing (apt-get install nfs-ganesha-vfs)');
  // Ganesha registers with the portmapper and gives up without one
  if (spawnSync('pgrep', ['-x', 'rpcbind'], { stdio: 'ignore' }).status !== 0) {
    if (!has('rpcbind')) throw new Error('rpcbind is missing (apt-get install rpcbind)');
    sh('rpcbind', ['-w']);
  }
  const dir = path.join(work, 'nfs-export');
  fs.mkdirSync(dir);
  fs.mkdirSync('/var/lib/nfs/ganesha', { recursive: true });
  const port = await freePort(), mountPort = await freePort();
  const conf = path.join(work, 'ganesha.conf');
  fs.writeFileSync(conf, `NFS_CORE_PARAM {
  Protocols = 3; NFS_Port = ${port}; MNT_Port = ${mountPort};
  Enable_NLM = false; Enable_RQUOTA = false; Bind_addr = 127.0.0.1;
}
NFSV4 { Graceless = true; }
EXPORT {
  Export_Id = 1; Path = ${dir}; Pseudo = /bench;
  Access_Type = RW; Squash = No_Root_Squash; Protocols = 3; Transports = TCP; SecType = sys;
  FSAL { Name = VFS; }
}
`);
  const log = path.join(work, 'ganesha.log');
  const c = kids.add(spawn('ganesha.nfsd', ['-F', '-L', log, '-f', conf, '-p', path.join(work, 'ganesha.pid'), '-N', 'NIV_EVENT'], { stdio: 'ignore' }));
  await waitFor('ganesha', async () => (await listening(port)) && (await listening(mountPort)), c, SERVER_WAIT)
    .catch((e) => { throw new Error(`${(e as Error).message}: ${fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' / ') : ''}`); });
  return { port, mountPort, export: dir };
}

async function startPrism(work: string, kids: Children): Promise<{ store: string; port: number }> {
  const store = path.join(work, 'store');
  for (const v of ['gshm', 'gtcp']) sh(process.execPath, [prismBin, '--store', store, 'volume', 'create', v]);
  const c = kids.add(spawn(process.execPath, [prismBin, '--store', store, 'host', 'serve', '--vm', `${VM}=gshm`, '--vm', `${VM_TCP}=gtcp`, '--tcp', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] }));
  let out = '';
  c.stdout!.on('data', (d) => { out += d; });
  await waitFor('prism host serve', () => /^ready$/m.test(out), c, SERVER_WAIT);
  return { store, port: Number(/listening on [^:]+:(\d+)/.exec(out)![1]) };
}

// ---- inputs: the same bytes for every target ----------------------------------------------------

/** The inputs disk: the C project, the tree to untar, a bare git repository, the plan, the TCP token. */
function inputs(work: string, plan: GuestPlan, o: Options, token?: string): { img: string; tree: { packages: number; files: number; MiB: number } } {
  const dir = path.join(work, 'inputs');
  fs.mkdirSync(dir);
  writeProject(path.join(dir, 'cproj'), SIZES[o.quick ? 'quick' : 'full'].modules);
  // packages of the project's own node_modules (files of all sizes, as npm leaves them), in name order
  // until there are enough files: as a tarball, and committed to a git repository
  const nm = path.join(root, 'node_modules');
  const want = SIZES[o.quick ? 'quick' : 'full'].treeFiles;
  const chosen: string[] = [];
  let files = 0;
  for (const p of fs.readdirSync(nm).filter((n) => !n.startsWith('.')).sort()) {
    if (files >= want) break;
    chosen.push(p);
    files += Number(sh('sh', ['-c', `find '${p}' -type f | wc -l`], { cwd: nm }).trim());
  }
  sh('tar', ['-C', nm, '--transform', 's,^,tree/,', '-cf', path.join(dir, 'tree.tar'), ...chosen]);
  const repo = path.join(work, 'repo');
  fs.mkdirSync(repo);
  sh('tar', ['-C', repo, '--strip-components=1', '-xf', path.join(dir, 'tree.tar')]);
  const git = (args: string[], cwd = repo) => sh('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@prism', ...args], { cwd });
  git(['init', '-q']);
  git(['add', '-A', '-f']);
  git(['commit', '-q', '-m', 'tree']);
  git(['clone', '-q', '--bare', repo, path.join(dir, 'repo.git')], work);
  fs.rmSync(repo, { recursive: true });
  if (token !== undefined) fs.writeFileSync(path.join(dir, `${VM_TCP}.token`), token, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'plan.json'), JSON.stringify(plan));
  const img = path.join(work, 'inputs.img');
  const mib = Math.ceil(Number(sh('du', ['-sm', dir]).split('\t')[0]) * 1.3) + 64;
  sh('mkfs.ext4', ['-q', '-F', '-L', 'prism-inputs', '-d', dir, img, `${mib}M`]);
  return { img, tree: { packages: chosen.length, files, MiB: Math.round(fs.statSync(path.join(dir, 'tree.tar')).size / 2 ** 20) } };
}

// ---- the run ------------------------------------------------------------------------------------

/** The report of a kept console log: what the guest finished before it stopped. */
function fromConsole(file: string) {
  const markers = parseMarkers(fs.readFileSync(file, 'utf8'));
  const planInfo = markers.find((m) => m.kind === 'info' && m.key === 'plan');
  // a guest that did not say its plan (older ones): the targets and repetitions it reported on
  const seen = new Set(markers.flatMap((m) => ('target' in m ? [m.target] : [])));
  const plan: GuestPlan = planInfo?.kind === 'info' ? JSON.parse(planInfo.value) as GuestPlan : {
    targets: TARGETS.filter((t) => seen.has(t.id)).map((t) => ({ ...t, mount: { kind: 'blk', serial: t.id } })),
    workloads: [...WORKLOADS], reps: Math.max(1, ...markers.map((m) => ('rep' in m ? m.rep : 1))), fs: { dirs: 0, filesPerDir: 0, seqMiB: 0, randomWrites: 0 },
  };
  const res = collect(markers, plan, new Map());
  const r = render(res);
  const heading = `Prism inside a QEMU guest, from ${file} (${markers.some((m) => m.kind === 'done') ? 'complete' : 'interrupted'}; ${plan.reps} run(s) each planned)`;
  return { results: { fromConsole: file, plan, targets: res }, table: `${heading}\n\n${r.text}`, files: { md: `${heading}\n\n${r.markdown}`, svg: chart(res, 'TCG') } };
}

export async function run(argv: string[] = process.argv.slice(3)) {
  const o = options(argv);
  if (o.report) return fromConsole(o.report);
  if (process.getuid?.() !== 0) throw new Error('bench guest needs root (FUSE and loop images on the host, the ivshmem server)');
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['qemu-img', 'qemu-utils'], ['mkfs.ext4', 'e2fsprogs'], ['busybox', 'busybox-static'], ['cpio', 'cpio']]) {
    if (!has(cmd!)) throw new Error(`${cmd} is missing (apt-get install ${pkg})`);
  }
  const wanted = TARGETS.map((t) => t.id).filter((id) => (o.only ? o.only.includes(id) : !o.quick || QUICK_TARGETS.includes(id)));
  const unknown = (o.only ?? []).filter((id) => !TARGETS.some((t) => t.id === id));
  if (unknown.length) throw new Error(`unknown targets ${unknown.join(', ')} (${TARGETS.map((t) => t.id).join(', ')})`);

  progress('building the guest (kernel, initramfs, tools image)');
  const built = sh('bash', [path.join(root, 'scripts/qemu-guest/build.sh')]);
  const kernel = /^KERNEL=(.*)$/m.exec(built)![1]!, initrd = /^INITRD=(.*)$/m.exec(built)![1]!;
  const tools = /^TOOLS=(.*)$/m.exec(sh('bash', [path.join(root, 'scripts/qemu-guest/tools-image.sh')]))![1]!;

  const work = fs.mkdtempSync('/var/tmp/prism-bench-guest-');
  const kids = new Children();
  // Interrupted: the guest and the servers stop too, whoever sent the signal
  const interrupted = (sig: NodeJS.Signals) => {
    progress('');
    process.stderr.write(`bench guest: ${sig}: stopping the guest and the servers (kept ${work})\n`);
    void kids.stopAll().then(() => { removeShmFiles(); process.exit(sig === 'SIGINT' ? 130 : 143); });
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const skipped = new Map<string, string>();
  const qemuArgs: string[] = [];
  const plan: GuestPlan = {
    targets: [], workloads: [...WORKLOADS], reps: o.reps ?? SIZES[o.quick ? 'quick' : 'full'].reps, fs: SIZES[o.quick ? 'quick' : 'full'].fs,
  };
  const add = (t: GuestTarget) => { if (wanted.includes(t.id)) plan.targets.push(t); };
  const label = (id: string) => TARGETS.find((t) => t.id === id)!.label;
  let consoleText = '';
  const consoleFile = path.join(work, 'console.log');
  let ok = false;
  try {
    progress('preparing the targets');
    const d = disks(work);
    qemuArgs.push('-drive', `file=${d.raw},format=raw,if=none,id=raw`, '-device', 'virtio-blk-pci,drive=raw,serial=raw');
    qemuArgs.push('-drive', `file=${d.qcow2},format=qcow2,if=none,id=qcow2`, '-device', 'virtio-blk-pci,drive=qcow2,serial=qcow2');
    add({ id: 'raw', label: label('raw'), mount: { kind: 'blk', serial: 'raw' } });
    add({ id: 'qcow2', label: label('qcow2'), mount: { kind: 'blk', serial: 'qcow2' } });
    if (wanted.includes('virtiofs')) {
      try {
        const sock = await startVirtiofsd(work, kids);
        qemuArgs.push('-chardev', `socket,id=vfs,path=${sock}`, '-device', 'vhost-user-fs-pci,chardev=vfs,tag=prismbench');
        add({ id: 'virtiofs', label: label('virtiofs'), mount: { kind: 'virtiofs', tag: 'prismbench' } });
      } catch (e) { skipped.set('virtiofs', (e as Error).message); }
    }
    if (wanted.includes('nfs')) {
      try {
        const g = await startGanesha(work, kids);
        add({ id: 'nfs', label: label('nfs'), mount: { kind: 'nfs', addr: '10.0.2.2', port: g.port, mountPort: g.mountPort, export: g.export } });
      } catch (e) { skipped.set('nfs', (e as Error).message); }
    }
    const p = await startPrism(work, kids);
    const fixed = ['--pci', 'auto', '--volume', 'gshm'];
    add({ id: 'prism-shm', label: label('prism-shm'), mount: { kind: 'prism', args: fixed } });
    add({ id: 'prism-nometa', label: label('prism-nometa'), mount: { kind: 'prism', args: [...fixed, '--no-meta'] } });
    add({ id: 'prism-tcp', label: label('prism-tcp'), mount: { kind: 'prism', args: ['--tcp', `10.0.2.2:${p.port}`, '--token-file', `/sysroot/in/${VM_TCP}.token`, '--vm', VM_TCP, '--volume', 'gtcp'] } });
    qemuArgs.push(...sh(process.execPath, [prismBin, '--store', p.store, 'qemu-args', VM]).trim().split(/\s+/));
    const token = fs.readFileSync(path.join(p.store, 'vms', `${VM_TCP}.token`), 'utf8');
    progress('preparing the inputs (C project, tree, git repository)');
    const { img: inputsImg, tree } = inputs(work, plan, o, token);

    const memMiB = 2048;
    const args = [
      '-accel', o.kvm ? 'kvm' : 'tcg,thread=multi', '-smp', '2', '-cpu', o.kvm ? 'host' : 'max', '-m', `${memMiB}M`,
      '-nographic', '-no-reboot', '-kernel', kernel, '-initrd', initrd, '-append', 'console=ttyS0 quiet panic=-1 prism.bench=1',
      // virtio-fs needs the guest's memory shared with virtiofsd
      '-object', `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`, '-numa', 'node,memdev=mem',
      '-drive', `file=${tools},format=raw,if=none,id=tools,readonly=on`, '-device', 'virtio-blk-pci,drive=tools,serial=tools',
      '-drive', `file=${inputsImg},format=raw,if=none,id=inputs,readonly=on`, '-device', 'virtio-blk-pci,drive=inputs,serial=inputs',
      '-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0',
      ...qemuArgs,
    ];
    const t0 = Date.now();
    const qemu = kids.add(spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    const log = fs.createWriteStream(consoleFile);
    await new Promise<void>((resolve, reject) => {
      const limit = setTimeout(() => { qemu.kill('SIGKILL'); reject(new Error('the guest did not finish within 4 hours')); }, 4 * 3600_000);
      const onData = (d: Buffer) => {
        log.write(d);
        consoleText += d.toString();
        const last = parseMarkers(d.toString()).filter((m) => m.kind === 'progress').pop();
        if (last && last.kind === 'progress') progress(`${((Date.now() - t0) / 60_000).toFixed(1)} min: ${last.target} ${last.workload} #${last.rep}/${plan.reps}`);
      };
      qemu.stdout!.on('data', onData);
      qemu.stderr!.on('data', onData);
      qemu.once('exit', (code) => { clearTimeout(limit); log.end(); code === 0 ? resolve() : reject(new Error(`qemu exited with ${code}: ${consoleText.trim().split('\n').slice(-5).join(' / ')}`)); });
    });
    progress('');
    const markers = parseMarkers(consoleText);
    const error = markers.find((m) => m.kind === 'info' && m.key === 'error');
    if (!markers.some((m) => m.kind === 'done')) throw new Error(`the guest stopped before it was done (console: ${consoleFile})`);
    const info = Object.fromEntries(markers.filter((m): m is Extract<GuestMarker, { kind: 'info' }> => m.kind === 'info').map((m) => [m.key, m.value]));
    if (error) throw new Error(`the guest failed: ${info.error} (console: ${consoleFile})`);
    const res = collect(markers, plan, skipped);
    if (TARGETS.every((t) => res[t.id]!.skipped)) throw new Error(`no target ran: ${TARGETS.map((t) => `${t.id}: ${res[t.id]!.skipped}`).join('; ')}`);
    const accel = o.kvm ? 'KVM' : 'TCG (software emulation: the guest\'s CPU work is slowed far more than the host\'s)';
    const r = render(res);
    const description = {
      accel: o.kvm ? 'kvm' : 'tcg', quick: o.quick, reps: plan.reps, guestMinutes: (Date.now() - t0) / 60_000,
      host: { cpus: os.cpus().length, kernel: os.release(), qemu: version('qemu-system-x86_64', ['--version'], /version (\S+)/), ganesha: version('ganesha.nfsd', ['-v'], /Release = V?(\S+)/), virtiofsd: version(VIRTIOFSD, ['--version'], /version (\S+)/) },
      guest: info, plan, tree, buildFiles: SIZES[o.quick ? 'quick' : 'full'].modules + 1,
    };
    ok = true;
    const heading = `Prism inside a QEMU guest (${accel}; ${plan.reps} run(s) each, median, ± half the spread, ratio to ext4 on a raw virtio-blk disk)`;
    return {
      results: { ...description, targets: res },
      table: `${heading}\n\n${r.text}`,
      files: { md: `# bench guest, ${new Date().toISOString()}\n\n${heading}\n\n${r.markdown}`, svg: chart(res, accel) },
    };
  } finally {
    progress('');
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await kids.stopAll();
    removeShmFiles();
    if (ok) fs.rmSync(work, { recursive: true, force: true });
    else process.stderr.write(`bench guest: kept ${work} (console.log, ganesha.log)\n`);
  }
}
