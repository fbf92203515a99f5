// The `prism` command as an operator runs it beside a serving host, and the one-line error rule:
// each failure is `prism: CODE: message` on stderr with the errno as exit status, never a stack.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { prismBin, startHost } from '../helpers/host.js';
import { AdminConnection } from '../../src/cli/admin-client.js';
import { agentStats, fuseSkipReason, mountAgent } from '../helpers/agent.js';
import { tmpDir } from '../helpers/tmp.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';

const fuseReason = fuseSkipReason();
const fuseTest = fuseReason ? test.skip : test;
if (fuseReason) console.error(`cli-operator.test: the tests with a mounted VM skipped: ${fuseReason}`);
const native = nativeAvailable();
const shmReason = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist' : native.ok ? undefined : native.reason;
const shmTest = shmReason ? test.skip : test;
if (shmReason) console.error(`cli-operator.test: the test of the host's shared-memory files skipped: ${shmReason}`);

function prism(store: string | null, args: string[], input?: string | Buffer) {
  const r = spawnSync(process.execPath, [prismBin, ...(store ? ['--store', store] : []), ...args], { encoding: 'utf8', input, timeout: 60_000, maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The error rule: exactly one line, `prism: CODE: ...`, and the exit status of CODE. */
function oneLineError(t: import('ava').ExecutionContext, r: { code: number | null; err: string }, code: string, errno: number): void {
  t.is(r.code, errno, `exit status for ${code}: ${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  t.is(lines.length, 1, `one line on stderr, got: ${r.err}`);
  t.regex(lines[0]!, new RegExp(`^prism: ${code}: \\S`));
}

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i += 4) { x = (x * 1103515245 + 12345) >>> 0; b.writeUInt32LE(x, i); }
  return b;
}

test('put of a 10 MiB file while the host serves, and a put that fails keeps the old content (served and not)', async (t) => {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  t.is(prism(s, ['volume', 'create', 'vol', '--quota', '4M']).code, 0);
  t.is(prism(s, ['volume', 'create', 'big']).code, 0);
  const tenMiB = bytes(10 << 20, 7), fiveMiB = bytes(5 << 20, 9);
  const file10 = path.join(dir, 'ten'), file5 = path.join(dir, 'five');
  fs.writeFileSync(file10, tenMiB);
  fs.writeFileSync(file5, fiveMiB);
  t.is(prism(s, ['put', 'vol:/keep.txt', '-'], 'old content\n').code, 0);

  // not served: over quota fails with EDQUOT and keeps the old file
  oneLineError(t, prism(s, ['put', 'vol:/keep.txt', file5]), 'EDQUOT', 122);
  t.is(prism(s, ['cat', 'vol:/keep.txt']).out, 'old content\n');

  const vm = `op${process.pid}`;
  const host = await startHost(s, ['--vm', `${vm}=vol,big`]);
  try {
    const r = prism(s, ['put', 'big:/ten.bin', file10]);
    t.is(r.code, 0, r.err);
    oneLineError(t, prism(s, ['put', 'vol:/keep.txt', file5]), 'EDQUOT', 122);
  } finally {
    t.is(await host.stop(), 0);
  }
  const back = spawnSync(process.execPath, [prismBin, '--store', s, 'cat', 'big:/ten.bin'], { maxBuffer: 64 << 20 });
  t.true(back.stdout.equals(tenMiB), `10 MiB back: ${back.stdout.length} bytes`);
  t.is(prism(s, ['cat', 'vol:/keep.txt']).out, 'old content\n', 'the failed put while served kept the old content');
  t.deepEqual(prism(s, ['ls', 'vol:/']).out.trim().split('\n'), ['keep.txt'], 'no temporary file left behind');
});

test('the one-line error rule: bad sizes, missing files, usage errors', (t) => {
  const s = path.join(tmpDir(t), 'store');
  t.is(prism(s, ['volume', 'create', 'ok']).code, 0);
  oneLineError(t, prism(s, ['volume', 'create', 'q', '--quota', 'lots']), 'EINVAL', 22);
  oneLineError(t, prism(s, ['volume', 'quota', 'ok', '10X']), 'EINVAL', 22);
  oneLineError(t, prism(s, ['put', 'ok:/x', '/definitely/not/here']), 'ENOENT', 2);
  oneLineError(t, prism(s, ['frobnicate']), 'EINVAL', 22);
  oneLineError(t, prism(s, ['volume', 'create']), 'EINVAL', 22);
  oneLineError(t, prism(s, ['volume', 'ls', '--bogus']), 'EINVAL', 22);
  t.deepEqual(prism(s, ['ls', 'ok:/']).out, '', 'the failed put made no file');
});

test('output cut short by a closed pipe ends quietly (no EPIPE stack)', (t) => {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(src, `file-with-a-longish-name-${i}`), '');
  t.is(prism(s, ['volume', 'import', 'v', src]).code, 0);
  t.is(prism(s, ['volume', 'create', 'e']).code, 0);
  for (const args of [['ls', '--json', 'v:/'], ['volume', 'diff', 'e', 'v']]) {
    const errFile = path.join(dir, 'err');
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${prismBin}" --store "${s}" ${args.join(' ')} 2>"${errFile}" | head -c 10 >/dev/null`], { encoding: 'utf8' });
    t.is(r.status, 0);
    t.is(fs.readFileSync(errFile, 'utf8'), '', `${args.join(' ')}: nothing on stderr`);
  }
});

test('--version, and diff --exit-code as git has it', (t) => {
  const s = path.join(tmpDir(t), 'store');
  const pkg = JSON.parse(fs.readFileSync(path.resolve(path.dirname(prismBin), '../package.json'), 'utf8')) as { version: string };
  const v = prism(null, ['--version']);
  t.is(v.code, 0);
  t.is(v.out.trim(), pkg.version);
  t.is(prism(s, ['volume', 'create', 'a']).code, 0);
  t.is(prism(s, ['volume', 'clone', 'a', 'b']).code, 0);
  t.is(prism(s, ['volume', 'diff', 'a', 'b', '--exit-code']).code, 0, 'same: 0');
  t.is(prism(s, ['put', 'b:/new', '-'], 'x').code, 0);
  const d = prism(s, ['volume', 'diff', 'a', 'b', '--exit-code']);
  t.is(d.code, 1, 'different: 1');
  t.is(d.out.trim(), '+ /new');
  t.is(prism(s, ['volume', 'diff', 'a', 'b']).code, 0, 'without --exit-code: 0');
});

test('export: a .tar.gz is gzipped, a destination that cannot be written fails at once', (t) => {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  t.is(prism(s, ['volume', 'create', 'v']).code, 0);
  t.is(prism(s, ['put', 'v:/hello.txt', '-'], 'hello\n').code, 0);
  const out = path.join(dir, 'out.tar.gz');
  const r = prism(s, ['volume', 'export', 'v', out, '--json']);
  t.is(r.code, 0, r.err);
  t.like(JSON.parse(r.out), { files: 1, bytes: 6 });
  t.true(fs.statSync(out).isFile(), 'a file, not a directory');
  t.deepEqual([...fs.readFileSync(out).subarray(0, 2)], [0x1f, 0x8b], 'gzip magic');
  t.regex(spawnSync('tar', ['-tzf', out], { encoding: 'utf8' }).stdout, /hello\.txt/);
  const t0 = Date.now();
  const bad = prism(s, ['volume', 'export', 'v', '/proc/prism-export-test']);
  t.true(Date.now() - t0 < 15_000, 'fails at once');
  t.not(bad.code, 0);
  t.is(bad.err.trimEnd().split('\n').length, 1, bad.err);
  t.regex(bad.err, /^prism: E[A-Z]+: /);
});

test('a mistyped --store is an error, not a new empty store; only create and import make one', (t) => {
  const dir = tmpDir(t);
  const typo = path.join(dir, 'stroe');
  oneLineError(t, prism(typo, ['volume', 'ls']), 'ENOENT', 2);
  oneLineError(t, prism(typo, ['store', 'stats']), 'ENOENT', 2);
  t.false(fs.existsSync(typo), 'nothing was created');
  t.is(prism(typo, ['volume', 'create', 'v']).code, 0);
  t.true(fs.existsSync(typo));
});

shmTest('host serve: --no-shm without --tcp is refused, and the shared-memory files go when the host stops', async (t) => {
  const s = path.join(tmpDir(t), 'store');
  t.is(prism(s, ['volume', 'create', 'vol']).code, 0);
  oneLineError(t, prism(s, ['host', 'serve', '--no-shm', '--vm', 'x=vol']), 'EINVAL', 22);
  const vm = `gone${process.pid}`;
  const host = await startHost(s, ['--vm', `${vm}=vol`]);
  const files = [`/dev/shm/prism-${vm}`, `/dev/shm/prism-${vm}-meta`, `/dev/shm/prism-${vm}.ivshmem`];
  t.true(fs.existsSync(files[0]!), 'the region exists while serving');
  t.is(await host.stop(), 0);
  for (const f of files) t.false(fs.existsSync(f), `${f} removed`);
});

/** A store with volume `vol`, served to VM `vm`, mounted by its agent at `mp`. */
async function servedMount(t: import('ava').ExecutionContext, vm: string, hostArgs: string[] = []) {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  const mp = path.join(dir, 'mnt');
  fs.mkdirSync(mp);
  t.is(prism(s, ['volume', 'create', 'vol']).code, 0);
  const host = await startHost(s, ['--vm', `${vm}=vol`, ...hostArgs]);
  const agent = await mountAgent(s, ['--shm', `/dev/shm/prism-${vm}`, '--volume', 'vol'], mp);
  return { dir, s, mp, host, agent };
}

fuseTest('volume rm of a volume a VM has mounted is EBUSY unless --force', async (t) => {
  const { s, mp, host, agent } = await servedMount(t, `busy${process.pid}`);
  try {
    fs.writeFileSync(path.join(mp, 'f'), 'x');
    oneLineError(t, prism(s, ['volume', 'rm', 'vol']), 'EBUSY', 16);
    t.is(fs.readFileSync(path.join(mp, 'f'), 'utf8'), 'x', 'the guest still has its volume');
    const forced = prism(s, ['volume', 'rm', 'vol', '--force']);
    t.is(forced.code, 0, forced.err);
  } finally {
    await agent.umount();
    await host.stop();
  }
  oneLineError(t, prism(s, ['volume', 'rm', 'vol']), 'ENOENT', 2);
});

fuseTest('while the host serves a mounted VM: ls, cat, stat, volume ls, volume diff, store stats and a 10 MiB put all work', async (t) => {
  const vm = `live${process.pid}`;
  const { dir, s, mp, host, agent } = await servedMount(t, vm, ['--metrics', '127.0.0.1:0']);
  try {
    // the guest writes; the operator reads it at once (the host answers, committed or not)
    fs.mkdirSync(path.join(mp, 'etc'));
    fs.writeFileSync(path.join(mp, 'etc', 'motd'), 'written in the guest\n');
    fs.symlinkSync('motd', path.join(mp, 'etc', 'link'));
    t.deepEqual(prism(s, ['ls', 'vol:/etc']).out.trim().split('\n'), ['link', 'motd']);
    t.regex(prism(s, ['ls', '-l', 'vol:/etc']).out, /link -> motd/);
    t.is(prism(s, ['cat', 'vol:/etc/motd']).out, 'written in the guest\n');
    t.is(JSON.parse(prism(s, ['stat', 'vol:/etc/motd', '--json']).out).size, 21);
    oneLineError(t, prism(s, ['cat', 'vol:/etc/none']), 'ENOENT', 2);
    const big = bytes(10 << 20, 3);
    const file = path.join(dir, 'big');
    fs.writeFileSync(file, big);
    const put = prism(s, ['put', 'vol:/big.bin', file]);
    t.is(put.code, 0, put.err);
    t.true(fs.readFileSync(path.join(mp, 'big.bin')).equals(big), 'the guest sees the put file at once');
    const back = spawnSync(process.execPath, [prismBin, '--store', s, 'cat', 'vol:/big.bin'], { maxBuffer: 64 << 20 });
    t.true(back.stdout.equals(big), 'cat through the host gives the 10 MiB back');
    t.is(prism(s, ['volume', 'clone', 'vol', 'snap']).code, 0);
    fs.writeFileSync(path.join(mp, 'after-snap'), 'x');
    t.deepEqual(JSON.parse(prism(s, ['volume', 'diff', 'snap', 'vol', '--json']).out), { added: ['/after-snap'], removed: [], changed: [] });
    // writes that go through the host too
    t.is(prism(s, ['volume', 'quota', 'vol', '1G']).code, 0);
    const composed = prism(s, ['volume', 'compose', 'etc-only', '--from', 'vol:/etc:/']);
    t.is(composed.code, 0, composed.err);
    t.deepEqual(prism(s, ['ls', 'etc-only:/']).out.trim().split('\n'), ['link', 'motd']);
    const vols = JSON.parse(prism(s, ['volume', 'ls', '--json']).out) as Array<{ name: string; quota?: number }>;
    t.deepEqual(vols.map((v) => v.name), ['etc-only', 'snap', 'vol']);
    t.is(vols.find((v) => v.name === 'vol')!.quota, 2 ** 30);
    const stats = JSON.parse(prism(s, ['store', 'stats', '--json']).out) as { volumes: number; logicalBytes: number };
    t.is(stats.volumes, 3);
    t.true(stats.logicalBytes >= 2 * (10 << 20), 'both volumes hold the 10 MiB file');
    // the host's own view
    const st = JSON.parse(prism(s, ['host', 'status', '--json']).out) as { pid: number; vms: Array<{ name: string; mounted: string[]; transport: string; calls: number; bytesIn: number; errorsByCode: Record<string, number> }> };
    t.is(st.pid, host.child.pid!);
    const me = st.vms.find((v) => v.name === vm)!;
    t.deepEqual(me.mounted, ['vol']);
    t.regex(me.transport, /^shared memory/);
    t.true(me.calls > 0 && me.bytesIn >= 21, `calls ${me.calls}, bytes in ${me.bytesIn}`);
    t.regex(prism(s, ['host', 'status']).out, new RegExp(`^${vm}\\s+vol\\s+vol\\s+vol\\s+shared memory`, 'm'), 'volumes, mounted, lease, transport');
    const info = JSON.parse(prism(s, ['volume', 'info', 'vol', '--json']).out) as { mountedBy: string[]; servedTo: string[] };
    t.deepEqual(info.mountedBy, [vm]);
    t.deepEqual(info.servedTo, [vm]);
    // Prometheus metrics, scraped
    const url = /^metrics on (http:\S+)$/m.exec(host.out())![1]!;
    await new Promise((r) => setTimeout(r, 1500)); // a periodic commit has happened
    const text = await (await fetch(url)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    t.true(value(new RegExp(`^prism_vm_requests_total\\{vm="${vm}",procedure="WRITE"\\} (\\d+)`, 'm')) > 0, 'WRITEs counted');
    t.true(value(new RegExp(`^prism_vm_request_duration_seconds_count\\{vm="${vm}",procedure="CREATE[^"]*"\\} (\\d+)`, 'm')) > 0, 'create latencies');
    t.true(value(new RegExp(`^prism_vm_data_bytes_total\\{vm="${vm}",direction="in"\\} (\\d+)`, 'm')) >= 21, 'bytes written');
    t.is(value(new RegExp(`^prism_vm_connected\\{vm="${vm}",transport="shared memory[^"]*"\\} (\\d+)`, 'm')), 1);
    t.true(value(/^prism_store_logical_bytes (\d+)/m) >= 2 * (10 << 20));
    t.true(value(/^prism_store_dedup_ratio ([\d.]+)/m) >= 1.9, 'two volumes share the 10 MiB');
    t.true(value(/^prism_store_commit_duration_seconds_count (\d+)/m) >= 1, 'commits timed');
    const answers = (result: string) => value(new RegExp(`^prism_vm_metadata_answers_total\\{vm="${vm}",result="${result}"\\} (\\d+)`, 'm'));
    t.true(answers('hit') + answers('miss') > 0, `the agent's table answered or missed: ${answers('hit')} hits, ${answers('miss')} misses`);
    t.is((await fetch(url.replace('/metrics', '/other'))).status, 404);
  } finally {
    await agent.umount();
    t.is(await host.stop(), 0);
  }
});

fuseTest('while the host serves a mounted VM: export, fsck, scan, import, gc, snapshot and rollback work too', async (t) => {
  const vm = `rd${process.pid}`;
  const { dir, s, mp, host, agent } = await servedMount(t, vm);
  try {
    const contents = ['alpha\n', 'beta\n', 'gamma\n'];
    fs.mkdirSync(path.join(mp, 'sub'));
    for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(mp, i % 2 ? 'sub' : '', `f${i}`), contents[i % 3]!);
    // export, as the volume is now (the guest's writes reached the host: its agent sends them on close)
    const out = path.join(dir, 'out');
    const exported = prism(s, ['volume', 'export', 'vol', out, '--json']);
    t.is(exported.code, 0, exported.err);
    t.is(JSON.parse(exported.out).files, 12);
    t.is(fs.readFileSync(path.join(out, 'sub', 'f5'), 'utf8'), 'gamma\n');
    const tar = path.join(dir, 'vol.tar');
    t.is(prism(s, ['volume', 'export', 'vol', tar]).code, 0);
    t.true(spawnSync('tar', ['-tf', tar], { encoding: 'utf8' }).stdout.split('\n').includes('sub/f5'));
    // fsck checks what the host committed; repairing needs the store to itself
    const checked = prism(s, ['fsck', '--json']);
    t.is(checked.code, 0, checked.err);
    t.true((JSON.parse(checked.out) as { ok: boolean }).ok);
    oneLineError(t, prism(s, ['fsck', '--repair']), 'EBUSY', 16);
    // scan: 12 files, 3 contents; the flagged one reported in the volume's own name
    const list = path.join(dir, 'bad.sha256');
    fs.writeFileSync(list, `${createHash('sha256').update('beta\n').digest('hex')}  beta\n`);
    const scanned = prism(s, ['scan', 'vol', '--hash-list', list, '--json']);
    t.is(scanned.code, 1, scanned.err);
    const report = JSON.parse(scanned.out) as { files: number; uniqueContents: number; flagged: Array<{ holders: Array<{ volume: string; path: string }> }> };
    t.like(report, { files: 12, uniqueContents: 3 });
    t.deepEqual(report.flagged[0]!.holders.map((h) => `${h.volume}:${h.path}`).sort(), ['vol:/f4', 'vol:/f10', 'vol:/sub/f1', 'vol:/sub/f7'].sort());
    // import through the host: into a new volume; all or nothing; never into the mounted one
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(src, `big${i}`), bytes(256 << 10, i));
    const imported = prism(s, ['volume', 'import', 'imported', src, '--json']);
    t.is(imported.code, 0, imported.err);
    t.is(JSON.parse(imported.out).files, 8);
    t.is(prism(s, ['ls', 'imported:/']).out.trim().split('\n').length, 8);
    oneLineError(t, prism(s, ['volume', 'import', 'vol', src]), 'EBUSY', 16);
    t.is(prism(s, ['volume', 'create', 'tiny', '--quota', '1M']).code, 0);
    t.is(prism(s, ['put', 'tiny:/keep', '-'], 'kept\n').code, 0);
    oneLineError(t, prism(s, ['volume', 'import', 'tiny', src]), 'EDQUOT', 122);
    t.deepEqual(prism(s, ['ls', 'tiny:/']).out.trim().split('\n'), ['keep'], 'the failed import changed nothing');
    // snapshot and rollback
    t.is(prism(s, ['volume', 'snapshot', 'imported', 'imported-1']).code, 0);
    t.is(prism(s, ['put', 'imported:/big0', '-'], 'changed').code, 0);
    oneLineError(t, prism(s, ['put', 'imported-1:/big0', '-'], 'no'), 'EROFS', 30);
    t.is(prism(s, ['volume', 'rollback', 'imported', 'imported-1']).code, 0);
    t.true(spawnSync(process.execPath, [prismBin, '--store', s, 'cat', 'imported:/big0']).stdout.equals(bytes(256 << 10, 0)), 'rolled back');
    t.is(prism(s, ['volume', 'snapshot', 'vol', 'vol-1']).code, 0);
    oneLineError(t, prism(s, ['volume', 'rollback', 'vol', 'vol-1']), 'EBUSY', 16);
    // gc through the host: waits for no one, but not while a reader beside it reads segment files
    const reader = (await AdminConnection.open(s))!;
    await reader.call('read-begin', [[]]);
    oneLineError(t, prism(s, ['gc']), 'EBUSY', 16);
    reader.close();
    await new Promise((r) => setTimeout(r, 200));
    t.is(prism(s, ['volume', 'rm', 'imported']).code, 0);
    t.is(prism(s, ['volume', 'rm', 'imported-1']).code, 0);
    const collected = prism(s, ['gc', '--json']);
    t.is(collected.code, 0, collected.err);
    t.true((JSON.parse(collected.out) as { bytesReclaimed: number }).bytesReclaimed >= 2 << 20, collected.out);
    // the guest never noticed, and nothing hidden is left
    fs.writeFileSync(path.join(mp, 'after'), 'still here\n');
    t.is(fs.readFileSync(path.join(mp, 'sub', 'f5'), 'utf8'), 'gamma\n');
    t.deepEqual((JSON.parse(prism(s, ['volume', 'ls', '--json']).out) as Array<{ name: string }>).map((v) => v.name), ['tiny', 'vol', 'vol-1']);
  } finally {
    await agent.umount();
    t.is(await host.stop(), 0);
  }
  const after = prism(s, ['fsck', '--json']);
  t.is(after.code, 0, after.err);
  t.is(prism(s, ['cat', 'vol:/after']).out, 'still here\n');
});

fuseTest('a VM added to a running host is served at once, and one removed goes with its files', async (t) => {
  const vm = `base${process.pid}`, added = `added${process.pid}`;
  const { dir, s, host, agent } = await servedMount(t, vm);
  const mp2 = path.join(dir, 'mnt2');
  fs.mkdirSync(mp2);
  try {
    t.is(prism(s, ['volume', 'create', 'second']).code, 0);
    oneLineError(t, prism(s, ['host', 'vm', 'add', `${added}=nope`]), 'ENOENT', 2);
    oneLineError(t, prism(s, ['host', 'vm', 'add', `${vm}=second`]), 'EEXIST', 17);
    const r = prism(s, ['host', 'vm', 'add', `${added}=second,vol`]);
    t.is(r.code, 0, r.err);
    t.regex(r.out, new RegExp(`^vm ${added}: volumes second,vol, shared memory /dev/shm/prism-${added}`, 'm'));
    const mounted = await mountAgent(s, ['--shm', `/dev/shm/prism-${added}`, '--volume', 'second'], mp2);
    try {
      fs.writeFileSync(path.join(mp2, 'hello'), 'from the added VM\n');
      t.is(prism(s, ['cat', 'second:/hello']).out, 'from the added VM\n');
      const st = JSON.parse(prism(s, ['host', 'status', '--json']).out) as { vms: Array<{ name: string; mounted: string[]; lease: string[] }> };
      t.deepEqual(st.vms.map((v) => v.name), [vm, added]);
      t.deepEqual(st.vms.find((v) => v.name === added)!.mounted, ['second']);
      t.deepEqual(st.vms.find((v) => v.name === vm)!.lease, [], 'vol is shared now: the first VM holds it alone no longer');
      oneLineError(t, prism(s, ['host', 'vm', 'rm', added]), 'EBUSY', 16);
    } finally {
      await mounted.umount();
    }
    await new Promise((r) => setTimeout(r, 300)); // its agent's liveness word says it left
    const removed = prism(s, ['host', 'vm', 'rm', added]);
    t.is(removed.code, 0, removed.err);
    t.false(fs.existsSync(`/dev/shm/prism-${added}`), 'its region is gone');
    t.false(fs.existsSync(`/dev/shm/prism-${added}-meta`), 'its metadata table is gone');
    oneLineError(t, prism(s, ['host', 'vm', 'rm', added]), 'ENOENT', 2);
    const st = JSON.parse(prism(s, ['host', 'status', '--json']).out) as { vms: Array<{ name: string }> };
    t.deepEqual(st.vms.map((v) => v.name), [vm]);
    t.is(prism(s, ['volume', 'rm', 'second']).code, 0, 'no VM may attach it any more');
  } finally {
    await agent.umount();
    t.is(await host.stop(), 0);
  }
});

fuseTest('a guest kernel that keeps file sizes itself (writeback cache, no FUSE_NOTIFY_PRUNE): its volume is shared with a new VM only by --force', async (t) => {
  const vm = `old${process.pid}`, other = `new${process.pid}`;
  const dir = tmpDir(t);
  const s = path.join(dir, 'store'), mp = path.join(dir, 'mnt');
  fs.mkdirSync(mp);
  t.is(prism(s, ['volume', 'create', 'vol']).code, 0);
  const host = await startHost(s, ['--vm', `${vm}=vol`]);
  // as on Debian 12's 6.1 in a VM: the writeback cache is still on for a volume of this VM alone
  const agent = await mountAgent(s, ['--shm', `/dev/shm/prism-${vm}`, '--volume', 'vol'], mp, { PRISM_KERNEL_RELEASE: '6.1.0-28-cloud-amd64' });
  try {
    t.true((await agentStats(agent)).writebackCache, 'writeback cache on');
    fs.writeFileSync(path.join(mp, 'f'), 'x');
    await new Promise((r) => setTimeout(r, 300)); // its notifier has said so in the region
    const refused = prism(s, ['host', 'vm', 'add', `${other}=vol`]);
    oneLineError(t, refused, 'EBUSY', 16);
    t.regex(refused.err, new RegExp(`VM ${vm} has volume vol mounted with a writeback cache`));
    t.is(prism(s, ['host', 'vm', 'add', `${other}2=vol`, '--force']).code, 0, 'forced');
  } finally {
    await agent.umount();
    t.is(await host.stop(), 0);
  }
});

test('a command waits for another that holds the store (--wait), then says how long it waited', async (t) => {
  const s = path.join(tmpDir(t), 'store');
  t.is(prism(s, ['volume', 'create', 'v']).code, 0);
  // another command holding the store: its lock file with a live process's pid
  const holder = spawn('sleep', ['30']);
  t.teardown(() => { holder.kill(); });
  fs.writeFileSync(path.join(s, 'LOCK'), `${holder.pid}\n`);
  const t0 = Date.now();
  const busy = prism(s, ['--wait', '1', 'volume', 'quota', 'v', '1M']);
  t.true(Date.now() - t0 >= 1000, 'it waited');
  oneLineError(t, busy, 'EBUSY', 16);
  t.regex(busy.err, /waited 1 s/);
  // released while it waits: it goes on
  const waiting = spawnAsync(process.execPath, [prismBin, '--store', s, '--wait', '10', 'volume', 'quota', 'v', '1M']);
  await new Promise((r) => setTimeout(r, 700));
  holder.kill();
  fs.rmSync(path.join(s, 'LOCK'));
  t.is(await waiting, 0);
  const vols = JSON.parse(prism(s, ['volume', 'ls', '--json']).out) as Array<{ quota?: number }>;
  t.is(vols[0]!.quota, 1 << 20);
});

function spawnAsync(cmd: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => { spawn(cmd, args, { stdio: 'ignore' }).once('exit', (code) => resolve(code)); });
}

test('every command has a one-line description and an example in --help; bash completion knows them all', async (t) => {
  const { program, leaves } = await import('../../src/cli/main.js');
  const all = leaves(program());
  t.true(all.length > 20);
  for (const [c, path] of all) {
    t.true(c.description().length > 10 && !c.description().includes('\n'), `${path}: one-line description`);
    const h = spawnSync(process.execPath, [prismBin, ...path.split(' '), '--help'], { encoding: 'utf8' });
    t.is(h.status, 0, path);
    t.regex(h.stdout, /\nExample:\n {2}\S/, `${path}: an example`);
  }
  const script = prism(null, ['completion', 'bash']).out;
  const file = path.join(tmpDir(t), 'prism.bash');
  fs.writeFileSync(file, script);
  const complete = (...words: string[]) => spawnSync('bash', ['-c', `source '${file}'; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _prism; echo "\${COMPREPLY[*]}"`], { encoding: 'utf8' }).stdout.trim();
  t.is(complete('prism', 'vol'), 'volume');
  t.is(complete('prism', 'volume', 'c'), 'create clone compose');
  t.is(complete('prism', '--store', 'x', 'host', 's'), 'serve status');
  t.is(complete('prism', 'volume', 'create', 'web', '--quota-'), '--quota-inodes');
  oneLineError(t, prism(null, ['completion', 'fish']), 'EINVAL', 22);
});

test('volume info, and ls -l with sizes and names a person reads', (t) => {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  t.is(prism(s, ['volume', 'create', 'base', '--quota', '1G']).code, 0);
  fs.writeFileSync(path.join(dir, 'f'), Buffer.alloc(3 << 20, 1));
  t.is(prism(s, ['put', 'base:/data.bin', path.join(dir, 'f')]).code, 0);
  t.is(prism(s, ['volume', 'clone', 'base', 'web']).code, 0);
  const info = JSON.parse(prism(s, ['volume', 'info', 'web', '--json']).out) as { origin: string; parent: string; quota: number; logicalBytes: number; uniqueBytes: number; mountedBy: string[] };
  t.like(info, { origin: 'clone', parent: 'base', logicalBytes: 3 << 20, uniqueBytes: 0, mountedBy: [] });
  const human = prism(s, ['volume', 'info', 'web']).out;
  t.regex(human, /^origin:\s+clone of base$/m);
  t.regex(human, /^used:\s+3\.00 MiB of data/m);
  t.regex(human, /^mounted by:\s+no host is serving the store$/m);
  oneLineError(t, prism(s, ['volume', 'info', 'nope']), 'ENOENT', 2);
  const me = spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim();
  t.regex(prism(s, ['ls', '-l', 'web:/']).out, new RegExp(`^-rw-r--r--\\s+1\\s+${me}\\s+\\S+\\s+3\\.00 MiB\\s.*data\\.bin$`, 'm'));
});
