// Issue 11 item 9: region and metadata table files are the host's own. A file another user planted
// where a region goes (0666, theirs), a symbolic link, or a file of ours with a mode we never use is
// refused with a message naming it; a leftover of an earlier run of this host is taken over. A file
// truncated or replaced while the host serves it stops that VM's service, not the host.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Proc } from '../../src/protocol/procs.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { prism, prismBin, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const native = nativeAvailable();
const asRoot = process.getuid?.() === 0;
const skip = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist' : !native.ok ? native.reason : undefined;
const rootSkip = skip ?? (asRoot ? undefined : 'giving a file to another user (chown) needs root');
if (rootSkip) console.error(`region-file-squatting.test: some tests skipped: ${rootSkip}`);
const shmTest = skip ? test.skip : test.serial;
const rootTest = rootSkip ? test.skip : test.serial;
const NOBODY = 65534;

function setup(t: import('ava').ExecutionContext): { store: string; dir: string } {
  const store = path.join(tmpDir(t), 'store');
  for (const v of ['vol1', 'vol2']) t.is(prism(store, ['volume', 'create', v]).code, 0);
  // A world-writable sticky directory, as /dev/shm is, where another user can plant files.
  const dir = fs.mkdtempSync('/dev/shm/prism-test-');
  fs.chmodSync(dir, 0o1777);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { store, dir };
}

/** `prism host serve`, expected to refuse at once (bounded: a host that accepts would serve forever). */
function serve(store: string, dir: string): { code: number | null; err: string } {
  const r = spawnSync(process.execPath, [prismBin, '--store', store, 'host', 'serve', '--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol1'], { encoding: 'utf8', timeout: 15_000 });
  return { code: r.status, err: r.stderr };
}

rootTest('a region file pre-created by another user (mode 0666) is refused, not adopted', (t) => {
  const { store, dir } = setup(t);
  for (const file of [shmPath('vm1', dir), `${shmPath('vm1', dir)}-meta`]) {
    // Planted the way a local user would: created by that user (setuid child), world-writable.
    const made = spawnSync('sh', ['-c', `umask 0; : > ${file}; chmod 0666 ${file}`], { uid: NOBODY, gid: NOBODY });
    t.is(made.status, 0, String(made.stderr));
    const r = serve(store, dir);
    t.is(r.code, 13, r.err); // EACCES
    t.regex(r.err, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} belongs to uid ${NOBODY}`));
    const st = fs.statSync(file);
    t.is(st.size, 0, 'the planted file was not grown');
    t.is(st.uid, NOBODY, 'nor taken over');
    fs.rmSync(file);
  }
});

shmTest('a symbolic link planted where a region goes is refused; its target is not created nor grown', (t) => {
  const { store, dir } = setup(t);
  const target = path.join(tmpDir(t), 'victim');
  for (const file of [shmPath('vm1', dir), `${shmPath('vm1', dir)}-meta`]) {
    fs.symlinkSync(target, file);
    const r = serve(store, dir);
    t.is(r.code, 40, r.err); // ELOOP
    t.regex(r.err, /is a symbolic link/);
    t.false(fs.existsSync(target), 'the link was not followed');
    fs.writeFileSync(target, 'precious');
    t.is(serve(store, dir).code, 40);
    t.is(fs.readFileSync(target, 'utf8'), 'precious', 'an existing target is untouched');
    fs.rmSync(target);
    fs.rmSync(file);
  }
});

shmTest('a file of ours with a mode the host never uses is refused; a leftover of an earlier run is taken over', async (t) => {
  const { store, dir } = setup(t);
  const file = shmPath('vm1', dir);
  fs.writeFileSync(file, '', { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  const r = serve(store, dir);
  t.not(r.code, 0);
  t.regex(r.err, /has mode 0644, not 0600/);
  fs.rmSync(file);
  // A host that ran and was killed leaves its files: the next one takes them over.
  const first = await startHost(store, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol1']);
  first.child.kill('SIGKILL');
  await new Promise((res) => first.child.once('exit', res));
  t.is((fs.statSync(file).mode & 0o7777), 0o600);
  const second = await startHost(store, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol1']);
  const c = await connectShm(file, 'vm1', { handshakeMs: 5000 });
  t.deepEqual(await c.call(Proc.NULL), []);
  c.close();
  t.is(await second.stop(), 0);
});

for (const what of ['truncated', 'replaced'] as const) {
  shmTest(`a region file ${what} while the host serves it: that VM stops being served, the host and the other VM go on`, async (t) => {
    const { store, dir } = setup(t);
    const host = await startHost(store, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'vm1=vol1', '--vm', 'vm2=vol2']);
    t.teardown(() => { host.child.kill('SIGKILL'); });
    let died: string | undefined;
    host.child.once('exit', (code, sig) => { died = `code ${code} signal ${sig}`; });
    const c1 = await connectShm(shmPath('vm1', dir), 'vm1', { timeoutMs: 2000 });
    const c2 = await connectShm(shmPath('vm2', dir), 'vm2', { timeoutMs: 2000 });
    t.deepEqual(await c1.call(Proc.NULL), []);
    const file = shmPath('vm1', dir);
    if (what === 'truncated') {
      fs.truncateSync(file, 0); // as the host's user (or root) could
    } else {
      const other = `${file}.other`;
      fs.writeFileSync(other, Buffer.alloc(16 << 20), { mode: 0o600 });
      fs.renameSync(other, file);
    }
    // The host keeps answering the other VM meanwhile, and notices within its heartbeat (1 s).
    const until = Date.now() + 3000;
    let answered = 0;
    while (Date.now() < until && !died) {
      t.deepEqual(await c2.call(Proc.NULL), []);
      answered++;
      await new Promise((r) => setTimeout(r, 20));
    }
    t.is(died, undefined, `the host died: ${host.stderr().slice(-1500)}`);
    t.true(answered > 10);
    t.regex(host.stderr(), new RegExp(`"problem":"[^"]*${what}[^"]*","msg":"stopped serving this VM over shared memory`));
    await t.throwsAsync(c1.call(Proc.NULL), { message: /EIO/ }, 'the VM whose file went is no longer served');
    c1.close();
    c2.close();
    t.is(await host.stop(), 0);
  });
}
