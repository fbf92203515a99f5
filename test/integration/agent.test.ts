// The agent as users meet it: a host process, an agent process, a real FUSE mount, over shared memory
// and over TCP. Programs run on the mount and on the local file system in the same run, and must give
// the same results (POSIX operations one by one: test/conformance/).
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentStats, fuseSkipReason, run } from '../helpers/agent.js';
import { mountedVolume, type TransportName } from '../helpers/mounted-volume.js';
import { missingProgramsReason } from '../helpers/programs.js';
import { tmpDir } from '../helpers/tmp.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');
const stripeWriter = path.resolve(here, '../fixtures/stripe-writer.js');
const cProject = path.join(repo, 'test/fixtures/c-project');

const reason = fuseSkipReason() ?? missingProgramsReason(['git', 'tar', 'sqlite3', 'make', 'cc', 'rsync', 'python3', 'diff']);
const t = reason ? test.skip : test.serial;
if (reason) console.error(`agent.test: skipped: ${reason}`);

function localDir(tt: ExecutionContext): string {
  const d = tmpDir(tt, 'prism-local-');
  fs.chmodSync(d, 0o755);
  return d;
}

for (const transport of ['shm', 'tcp'] as TransportName[]) {
  t(`${transport}: concurrent writers to one file, SEEK_DATA/SEEK_HOLE, fallocate, copy_file_range`, async (tt) => {
    const m = await mountedVolume(tt, transport);
    const file = path.join(m.mp, 'shared');
    fs.writeFileSync(file, Buffer.alloc(0));
    const writers = 4;
    await Promise.all(Array.from({ length: writers }, (_, i) => new Promise<void>((resolve, reject) => {
      const c = spawn(process.execPath, [stripeWriter, file, String(i), String(writers)], { stdio: 'ignore' });
      c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer ${i} exited ${code}`))));
    })));
    const data = fs.readFileSync(file);
    tt.is(data.length, 255 * 65536 + 4096 + (255 % writers) * 512);
    for (let s = 0; s < 256; s++) {
      const w = s % writers;
      const len = 4096 + w * 512;
      tt.true(data.subarray(s * 65536, s * 65536 + len).every((b) => b === 0x41 + w), `stripe ${s}`);
      const gapEnd = Math.min(data.length, (s + 1) * 65536);
      tt.true(data.subarray(s * 65536 + len, gapEnd).every((b) => b === 0), `gap after stripe ${s}`);
    }

    const py = (code: string) => run('python3', ['-c', code, m.mp]).trim();
    // A file with data at 0 and at 10 MiB, a hole between: offsets at the store's 64 KiB granularity.
    const seek = py(`import os,sys
p=os.path.join(sys.argv[1],'sparse'); fd=os.open(p,os.O_CREAT|os.O_RDWR)
os.pwrite(fd,b'a'*100,0); os.pwrite(fd,b'b'*100,10<<20)
r=[os.lseek(fd,0,os.SEEK_DATA),os.lseek(fd,0,os.SEEK_HOLE),os.lseek(fd,1<<20,os.SEEK_DATA),os.lseek(fd,(10<<20)+50,os.SEEK_HOLE)]
try: os.lseek(fd,(10<<20)+100,os.SEEK_DATA)
except OSError as e: r.append(e.errno)
print(r)`);
    // Holes as the host stores them; with the writeback cache (on by default where the kernel can prune)
    // the kernel answers from its own size: all data, the only hole at the end.
    const wb = (await agentStats(m.agent)).writebackCache;
    tt.is(seek, wb ? `[0, ${(10 << 20) + 100}, ${1 << 20}, ${(10 << 20) + 100}, 6]` : `[0, 65536, ${10 << 20}, ${(10 << 20) + 100}, 6]`); // ENXIO at the end

    const falloc = py(`import os,sys
p=os.path.join(sys.argv[1],'falloc'); fd=os.open(p,os.O_CREAT|os.O_RDWR)
os.pwrite(fd,b'x'*300000,0)
os.posix_fallocate(fd,0,1<<20)
size=os.fstat(fd).st_size
import ctypes; libc=ctypes.CDLL(None,use_errno=True)
r=libc.fallocate(fd,3,ctypes.c_long(65536),ctypes.c_long(131072))
d=os.pread(fd,300000,0)
print([size,r,d[:65536]==b'x'*65536,d[65536:196608]==bytes(131072),d[196608:]==b'x'*(300000-196608),os.fstat(fd).st_size])`);
    tt.is(falloc, `[${1 << 20}, 0, True, True, True, ${1 << 20}]`);

    const copy = py(`import os,sys
src=os.path.join(sys.argv[1],'src'); dst=os.path.join(sys.argv[1],'dst')
data=os.urandom(3*65536+1234)
open(src,'wb').write(data)
a=os.open(src,os.O_RDONLY); b=os.open(dst,os.O_CREAT|os.O_WRONLY)
n=0
while n<len(data): n+=os.copy_file_range(a,b,len(data)-n,n,n)
os.close(b)
print([n,open(dst,'rb').read()==data])`);
    tt.is(copy, `[${3 * 65536 + 1234}, True]`);
  });

  t(`${transport}: git, tar, cp -a, sqlite3, make and rsync give the same results as on the local file system`, async (tt) => {
    const m = await mountedVolume(tt, transport);
    const local = localDir(tt);
    const results = [m.mp, local].map((root) => programs(root));
    for (const k of Object.keys(results[1]!)) tt.deepEqual(results[0]![k], results[1]![k], k);
    tt.regex(results[0]!.sqlite, /^ok\n1000\|500500\n/);
    tt.regex(results[0]!.make, /hello, prism \(2\)/);
    tt.is(results[0]!.rsyncAgain, '');
    // The trees on the mount and locally are the same, byte for byte.
    run('diff', ['-r', '--no-dereference', path.join(m.mp, 'extracted'), path.join(local, 'extracted')]);
  });
}

/** Run the programs in `root`; what they print, with the root's own path taken out. */
function programs(root: string): Record<string, string> {
  const r: Record<string, string> = {};
  const at = (...p: string[]) => path.join(root, ...p);
  const clean = (s: string) => s.split(root).join('ROOT');
  // tar: a real tree (some of node_modules), extracted then archived again.
  const tarball = at('modules.tar');
  run('tar', ['-C', path.join(repo, 'node_modules'), '-cf', tarball, 'commander', 'cbor-x', 'lmdb', 'pino']);
  fs.mkdirSync(at('extracted'));
  run('tar', ['-C', at('extracted'), '-xf', tarball]);
  r.tarList = run('tar', ['-C', at('extracted'), '--sort=name', '-cvvf', at('again.tar'), '.']).split('\n').filter((l) => !l.endsWith(' ./')).sort().join('\n');
  r.du = run('du', ['-s', '--apparent-size', '-b', at('extracted')]).split('\t')[0]!;
  // cp -a then diff -r, and metadata compared through stat.
  run('cp', ['-a', at('extracted'), at('copy')]);
  r.diff = run('diff', ['-r', '--no-dereference', at('extracted'), at('copy')]);
  r.stat = run('sh', ['-c', `cd ${at('copy')} && find . -mindepth 1 -print0 | sort -z | xargs -0 stat -c '%n %a %s %Y %h %F'`]);
  // git: identical commits give identical hashes.
  const git = (...a: string[]) => run('git', ['-C', at('repo'), ...a], {
    env: { ...process.env, GIT_AUTHOR_NAME: 'P', GIT_AUTHOR_EMAIL: 'p@x', GIT_COMMITTER_NAME: 'P', GIT_COMMITTER_EMAIL: 'p@x', GIT_AUTHOR_DATE: '2020-01-01T00:00:00Z', GIT_COMMITTER_DATE: '2020-01-01T00:00:00Z' },
  });
  run('cp', ['-a', at('extracted', 'commander'), at('repo')]);
  git('init', '-q', '-b', 'main');
  git('add', '.');
  git('commit', '-qm', 'first');
  git('checkout', '-qb', 'side');
  fs.appendFileSync(at('repo', 'package.json'), '\n');
  fs.unlinkSync(at('repo', 'LICENSE'));
  r.gitStatus = git('status', '--porcelain');
  git('commit', '-qam', 'second');
  git('checkout', '-q', 'main');
  r.gitHead = git('rev-parse', 'HEAD', 'side');
  r.gitFsck = git('fsck', '--strict');
  r.gitLicense = String(fs.existsSync(at('repo', 'LICENSE')));
  // sqlite3: transactions, a rollback, an integrity check.
  r.sqlite = run('sqlite3', [at('db.sqlite')], { input: `
    PRAGMA journal_mode=DELETE;
    CREATE TABLE t(n INTEGER PRIMARY KEY, s TEXT);
    BEGIN; WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n<1000) INSERT INTO t SELECT n, hex(randomblob(100)) FROM c; COMMIT;
    BEGIN; DELETE FROM t; ROLLBACK;
    PRAGMA integrity_check;
    SELECT count(*), sum(n) FROM t;
  ` }).replace(/^delete\n/, '');
  // make: a build, then an up-to-date check, then a rebuild after a change.
  run('cp', ['-a', cProject, at('c')]);
  r.make = run('make', ['-C', at('c'), '--no-print-directory']) + run(at('c', 'hello'), []);
  r.makeQuestion = String(spawnSync('make', ['-C', at('c'), '-q']).status);
  // rsync -a: a second run finds nothing to do (sizes and times were kept).
  run('rsync', ['-a', `${at('extracted')}/`, at('synced')]);
  r.rsyncAgain = run('rsync', ['-ai', `${at('extracted')}/`, at('synced')]);
  r.rsyncDiff = run('diff', ['-r', '--no-dereference', at('extracted'), at('synced')]);
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, clean(v)]));
}
