// Directory listings kept in the kernel (FOPEN_CACHE_DIR): with a metadata table an unchanged
// directory is fetched from the host once however often it is listed, and a listing still shows every
// change at once: the agent's own (the kernel drops its listing itself) and another VM's on the same
// volume (the change log's invalidations). The kernels cache for 30 s here, so a fresh listing after
// another VM's change can only come from an invalidation. Without a table nothing is kept.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { agentStats, fuseSkipReason, type Agent } from '../helpers/agent.js';
import { mountedVolume } from '../helpers/mounted-volume.js';
import { LONG_CACHE, twoVms } from '../helpers/two-vms.js';

const skip = fuseSkipReason();
const t = skip ? test.skip : test.serial;
if (skip) console.error(`listing-cache.test: skipped: ${skip}`);

const long = LONG_CACHE;


/** READDIR and READDIRPLUS calls the agent has sent the host so far. */
async function fetches(a: Agent): Promise<number> {
  const by = (await agentStats(a)).counters.rpcsByProc;
  return (by.READDIR ?? 0) + (by.READDIRPLUS ?? 0);
}

const list = (dir: string): string[] => fs.readdirSync(dir).sort();

/**
 * Lists a directory through one descriptor opened once, rewound each time, with raw getdents64 (no
 * fdopendir, which would fstat it): no open and no stat refreshes the directory's attributes, so only
 * an invalidation of its pages can make the kernel fetch the listing again.
 */
function heldLister(tt: ExecutionContext, dir: string): () => Promise<string[]> {
  const py = [
    'import ctypes, json, os, struct, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)',
    'buf = ctypes.create_string_buffer(1 << 16)',
    'for _ in sys.stdin:',
    '    os.lseek(fd, 0, 0)',
    '    names = []',
    '    while True:',
    '        n = libc.syscall(217, fd, buf, len(buf))',  // getdents64 on x86-64
    '        if n <= 0: break',
    '        o = 0',
    '        while o < n:',
    '            reclen = struct.unpack_from("<H", buf.raw, o + 16)[0]',
    '            name = buf.raw[o + 19:o + reclen].split(b"\\0", 1)[0].decode("latin1")',
    '            if name not in (".", ".."): names.append(name)',
    '            o += reclen',
    '    print(json.dumps(sorted(names)), flush=True)',
  ].join('\n');
  const child = spawn('python3', ['-c', py, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  tt.teardown(() => { child.kill('SIGKILL'); });
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return async () => {
    child.stdin!.write('\n');
    const r = await lines.next();
    if (r.done) throw new Error('the lister exited');
    return JSON.parse(r.value as string) as string[];
  };
}
/**
 * The start of a Python script that reads the directory sys.argv[1] (as `d`) through one descriptor
 * with raw getdents64 calls of 1 KiB: `more()` returns the names of the next call ([] at the end).
 */
const PAGED_READER = [
  'import ctypes, json, os, struct, sys, time',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'd = sys.argv[1]',
  'fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)',
  'buf = ctypes.create_string_buffer(1024)',
  'def more():',
  '    n = libc.syscall(217, fd, buf, len(buf))', // getdents64 on x86-64
  '    out, o = [], 0',
  '    while o < n:',
  '        reclen = struct.unpack_from("<H", buf.raw, o + 16)[0]',
  '        out.append(buf.raw[o + 19:o + reclen].split(b"\\0", 1)[0].decode("latin1"))',
  '        o += reclen',
  '    return out',
];
const names = (n: number, prefix = 'f'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

t('an unchanged directory listed 10 times is fetched once; the agent\'s own changes show at once', async (tt) => {
  const { a } = await twoVms(tt, { a: long, b: long });
  const D = `${a.mp}/d`;
  fs.mkdirSync(D);
  for (const n of names(50)) fs.writeFileSync(`${D}/${n}`, n);
  const expected = names(50).sort();
  const before = await fetches(a);
  for (let i = 0; i < 10; i++) tt.deepEqual(list(D), expected);
  tt.is(await fetches(a) - before, 1, '10 listings, 1 fetch');

  const changes: Array<[string, () => void]> = [
    ['create', () => { fs.writeFileSync(`${D}/new`, 'x'); expected.push('new'); }],
    ['unlink', () => { fs.unlinkSync(`${D}/f1`); expected.splice(expected.indexOf('f1'), 1); }],
    ['rename', () => { fs.renameSync(`${D}/f2`, `${D}/g2`); expected.splice(expected.indexOf('f2'), 1, 'g2'); }],
    ['mkdir', () => { fs.mkdirSync(`${D}/sub`); expected.push('sub'); }],
    ['rename into a subdirectory', () => { fs.renameSync(`${D}/f3`, `${D}/sub/f3`); expected.splice(expected.indexOf('f3'), 1); }],
    ['symlink', () => { fs.symlinkSync('f4', `${D}/l4`); expected.push('l4'); }],
    ['hard link', () => { fs.linkSync(`${D}/f5`, `${D}/h5`); expected.push('h5'); }],
  ];
  for (const [what, change] of changes) {
    change();
    const b0 = await fetches(a);
    for (let i = 0; i < 3; i++) tt.deepEqual(list(D), expected.sort(), what);
    tt.is(await fetches(a) - b0, 1, `${what}: fetched again once`);
  }
  tt.deepEqual(list(`${D}/sub`), ['f3']);
});

t('another VM\'s create, unlink and rename show in a listing at once, while it lists the directory over and over', async (tt) => {
  const { a, b } = await twoVms(tt, { a: long, b: long });
  const A = `${a.mp}/d`, B = `${b.mp}/d`;
  fs.mkdirSync(A);
  const rounds = 30;
  for (const n of names(rounds)) fs.writeFileSync(`${A}/${n}`, n); // one per round: each is unlinked or renamed at most once
  const expected = new Set(names(rounds));
  tt.deepEqual(list(B), [...expected].sort());
  // A second reader lists b's directory without pause meanwhile, so that listings are being fetched
  // and cached while a's changes arrive. It never stats the directory (ls would), which would refresh
  // its attributes and so hide a listing kept too long.
  const lister = spawn('python3', ['-c', 'import os, sys\nwhile True: os.listdir(sys.argv[1])', B], { stdio: 'ignore' });
  tt.teardown(() => { lister.kill('SIGKILL'); });
  const b0 = await fetches(b);
  for (let i = 0; i < rounds; i++) {
    switch (i % 3) {
      case 0: fs.writeFileSync(`${A}/n${i}`, 'x'); expected.add(`n${i}`); break;
      case 1: fs.unlinkSync(`${A}/f${i}`); expected.delete(`f${i}`); break;
      default: fs.renameSync(`${A}/f${i}`, `${A}/r${i}`); expected.delete(`f${i}`); expected.add(`r${i}`);
    }
    // a's call has returned: b's kernel has been told, whatever it was doing.
    for (let k = 0; k < 3; k++) tt.deepEqual(list(B), [...expected].sort(), `after change ${i}`);
  }
  lister.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 100));
  // b's listings are kept between changes: far fewer fetches than listings.
  const quiet = await fetches(b);
  for (let k = 0; k < 10; k++) tt.deepEqual(list(B), [...expected].sort());
  tt.true(await fetches(b) - quiet <= 1, 'an unchanged directory is not fetched again');
  tt.log(`b fetched ${quiet - b0} listings for ${rounds} changes (${rounds * 3} listings here, more by the lister)`);
});

t('a directory listed again and again through one descriptor shows another VM\'s changes at once', async (tt) => {
  // Nothing opens the directory in b, so nothing refreshes its attributes there: only the change
  // log's invalidations can tell b's kernel its listing is gone.
  const { a, b } = await twoVms(tt, { a: long, b: long });
  fs.mkdirSync(`${a.mp}/d`);
  for (const n of names(5)) fs.writeFileSync(`${a.mp}/d/${n}`, n);
  const held = heldLister(tt, `${b.mp}/d`);
  tt.deepEqual(await held(), names(5));
  const b0 = await fetches(b);
  for (let i = 0; i < 5; i++) tt.deepEqual(await held(), names(5));
  tt.is(await fetches(b) - b0, 0, 'kept by the kernel');
  fs.writeFileSync(`${a.mp}/d/new`, 'x');
  tt.deepEqual(await held(), [...names(5), 'new']);
  fs.unlinkSync(`${a.mp}/d/f0`);
  tt.deepEqual(await held(), ['f1', 'f2', 'f3', 'f4', 'new']);
  fs.renameSync(`${a.mp}/d/f1`, `${a.mp}/d/g1`);
  tt.deepEqual(await held(), ['f2', 'f3', 'f4', 'g1', 'new']);
});

t('with --no-meta every listing is fetched (nothing tells the kernel of other VMs\' changes)', async (tt) => {
  const { a, b } = await twoVms(tt, { a: long, b: ['--no-meta'] });
  fs.mkdirSync(`${a.mp}/d`);
  for (const n of names(10)) fs.writeFileSync(`${a.mp}/d/${n}`, n);
  const before = await fetches(b);
  for (let i = 0; i < 5; i++) tt.is(list(`${b.mp}/d`).length, 10);
  tt.is(await fetches(b) - before, 5);
  fs.writeFileSync(`${a.mp}/d/new`, 'x');
  tt.true(list(`${b.mp}/d`).includes('new'));
});

t('a reader that resumes after names came and went, a second later, sees every unchanged name once', async (tt) => {
  // The kernel opens directories without the agent here (no handle to keep a listing by): a READDIR
  // resumes from a position, which must not move as other names come and go. The pause makes the
  // agent fetch the listing again for the rest, as changed since the reader started.
  const m = await mountedVolume(tt, 'shm');
  const D = `${m.mp}/d`;
  fs.mkdirSync(D);
  for (const n of names(300)) fs.writeFileSync(`${D}/${n}`, '');
  const py = [
    ...PAGED_READER,
    'seen = more() + more()',
    'gone = [f"f{i}" for i in range(300) if f"f{i}" not in seen][:40] + [n for n in seen if n.startswith("f")][:40]',
    'for n in gone: os.unlink(os.path.join(d, n))',
    'for i in range(40): open(os.path.join(d, f"new{i}"), "w").close()',
    'time.sleep(1.2)',
    'while True:',
    '    got = more()',
    '    if not got: break',
    '    seen += got',
    'print(json.dumps({"seen": seen, "gone": gone}))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', py, D], { encoding: 'utf8' });
  tt.is(r.status, 0, r.stderr);
  const { seen, gone } = JSON.parse(r.stdout) as { seen: string[]; gone: string[] };
  const counts = new Map<string, number>();
  for (const n of seen) counts.set(n, (counts.get(n) ?? 0) + 1);
  for (const n of names(300)) if (!gone.includes(n)) tt.is(counts.get(n), 1, `${n} seen ${counts.get(n) ?? 0} times`);
  for (const [n, c] of counts) tt.true(c === 1, `${n} seen ${c} times`);
  tt.is(counts.get('.'), 1);
  tt.is(counts.get('..'), 1);
  tt.deepEqual(list(D), [...names(300).filter((n) => !gone.includes(n)), ...names(40, 'new')].sort());
});

t('a listing resumed after another VM changed its entries gives the kernel their new attributes', async (tt) => {
  // READDIRPLUS pages after the first come from the agent's copy of the listing (for up to a second):
  // a copy made before another VM's chmod must not be served after it, or the kernel keeps the old
  // mode for its 30 s attribute timeout.
  const { a, b } = await twoVms(tt, { a: long, b: long });
  fs.mkdirSync(`${a.mp}/d`);
  for (const n of names(100)) fs.writeFileSync(`${a.mp}/d/${n}`, '', { mode: 0o644 });
  const py = [
    ...PAGED_READER,
    'from concurrent.futures import ThreadPoolExecutor',
    'da, db = d, sys.argv[2]',
    'seen = more()',
    // A lookup in the directory between pages: the kernel asks for the next pages with attributes too.
    'late = [f"f{i}" for i in range(100) if f"f{i}" not in seen]',
    'os.lstat(os.path.join(da, late[-1]))',
    // In parallel: each waits for the other VM's acknowledgement, and all must fit in the agent's second.
    't0 = time.monotonic()',
    'with ThreadPoolExecutor(32) as pool: list(pool.map(lambda n: os.chmod(os.path.join(db, n), 0o600), late))',
    'took = time.monotonic() - t0',
    'while True:',
    '    got = more()',
    '    if not got: break',
    '    seen += got',
    '    os.lstat(os.path.join(da, late[-1]))',
    'print(json.dumps({"took": took, "modes": {n: oct(os.lstat(os.path.join(da, n)).st_mode & 0o777) for n in late}}))',
  ].join('\n');
  const f0 = await fetches(a);
  const r = spawnSync('python3', ['-c', py, `${a.mp}/d`, `${b.mp}/d`], { encoding: 'utf8' });
  tt.is(r.status, 0, r.stderr);
  tt.is(await fetches(a) - f0, 1, 'the pages after the first came from the agent\'s copy');
  const { took, modes } = JSON.parse(r.stdout) as { took: number; modes: Record<string, string> };
  tt.true(took < 1, `the chmods took ${took.toFixed(2)} s: the agent's copy would have expired`);
  const old = Object.entries(modes).filter(([, m]) => m !== '0o600').map(([n]) => n);
  tt.deepEqual(old, [], `${old.length} of ${Object.keys(modes).length} files keep the mode from before the other VM's chmod`);
});
