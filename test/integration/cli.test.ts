// The `prism` command as a user runs it: a real process, a real store directory, exit codes and output.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../helpers/tmp.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/prism.js');

function prism(store: string, args: string[], input?: string) {
  const r = spawnSync(process.execPath, [bin, '--store', store, ...args], { encoding: 'utf8', input });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('volumes: create, put, cat, clone, compose, diff, ls, stat, rm', (t) => {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  t.is(prism(s, ['volume', 'create', 'web']).code, 0);
  const file = path.join(dir, 'index.html');
  fs.writeFileSync(file, '<h1>hello</h1>\n');
  t.is(prism(s, ['put', 'web:/index.html', file]).code, 0);
  t.is(prism(s, ['put', 'web:/notes.txt', '-'], 'from stdin\n').code, 0);
  t.is(prism(s, ['cat', 'web:/index.html']).out, '<h1>hello</h1>\n');
  t.is(prism(s, ['cat', 'web:/notes.txt']).out, 'from stdin\n');
  t.is(prism(s, ['volume', 'clone', 'web', 'web2']).code, 0);
  t.is(prism(s, ['put', 'web2:/index.html', '-'], 'changed\n').code, 0);
  t.is(prism(s, ['cat', 'web:/index.html']).out, '<h1>hello</h1>\n', 'the source is unaffected');
  const diff = JSON.parse(prism(s, ['volume', 'diff', 'web', 'web2', '--json']).out);
  t.deepEqual(diff, { added: [], removed: [], changed: ['/index.html'] });
  t.is(prism(s, ['volume', 'compose', 'mix', '--from', 'web:/index.html:/a/old.html', '--from', 'web2:/index.html:/new.html']).code, 0);
  t.deepEqual(prism(s, ['ls', 'mix:/']).out.trim().split('\n'), ['a', 'new.html']);
  t.is(prism(s, ['cat', 'mix:/a/old.html']).out, '<h1>hello</h1>\n');
  const st = JSON.parse(prism(s, ['stat', 'web:/index.html', '--json']).out);
  t.is(st.size, 15);
  t.is(st.mode, '0100644');
  const vols = JSON.parse(prism(s, ['volume', 'ls', '--json']).out) as Array<{ name: string; parent?: string; files: number }>;
  t.deepEqual(vols.map((v) => v.name), ['mix', 'web', 'web2']);
  t.is(vols.find((v) => v.name === 'web2')!.parent, 'web');
  t.is(prism(s, ['volume', 'rm', 'web']).code, 0);
  t.is(prism(s, ['cat', 'web2:/notes.txt']).out, 'from stdin\n', 'a clone outlives its source');
  const stats = JSON.parse(prism(s, ['store', 'stats', '--json']).out);
  t.is(stats.volumes, 2);
  t.true(stats.physicalBytes > 0 && stats.physicalBytes <= stats.logicalBytes);
});

test('bad input: one line on stderr and the errno as exit status', (t) => {
  const s = path.join(tmpDir(t), 'store');
  t.is(prism(s, ['volume', 'create', 'ok']).code, 0);
  const cases: Array<[string[], number, RegExp]> = [
    [['volume', 'create', 'Bad!'], 22, /EINVAL/],
    [['volume', 'create', 'ok'], 17, /EEXIST/],
    [['volume', 'clone', 'missing', 'x'], 2, /ENOENT.*missing/],
    [['cat', 'ok:/nope'], 2, /ENOENT/],
    [['ls', 'nocolon'], 22, /EINVAL/],
    [['volume', 'import', 'ok', '/definitely/not/here'], 2, /ENOENT/],
    [['volume', 'compose', 'c', '--from', 'ok:/nope'], 2, /ENOENT/],
  ];
  for (const [args, code, re] of cases) {
    const r = prism(s, args);
    t.is(r.code, code, `prism ${args.join(' ')}: ${r.err}`);
    t.regex(r.err, re);
    t.is(r.err.trim().split('\n').length, 1, `one line for prism ${args.join(' ')}`);
  }
  t.is(prism(s, ['volume', 'create', 'q', '--quota', '100K']).code, 0);
  const big = path.join(path.dirname(s), 'big');
  fs.writeFileSync(big, Buffer.alloc(300_000, 1));
  const r = prism(s, ['put', 'q:/big', big]);
  t.is(r.code, 122);
  t.regex(r.err, /EDQUOT/);
  const vols = JSON.parse(prism(s, ['volume', 'ls', '--json']).out) as Array<{ name: string }>;
  t.deepEqual(vols.map((v) => v.name), ['ok', 'q'], 'failed commands created nothing');
});

test('qemu-args: the region behind its doorbell (or plain), and the metadata table as a read-only second device', (t) => {
  const s = tmpDir(t);
  const both = prism(s, ['qemu-args', 'web']);
  t.is(both.code, 0);
  t.regex(both.out, /-machine q35 -device intel-iommu -chardev socket,path=\/dev\/shm\/prism-web\.ivshmem,id=prism-web -device ivshmem-doorbell,chardev=prism-web,vectors=1 /);
  t.is(both.out.match(/-device ivshmem-plain/g)?.length, 1, 'the table');
  t.regex(both.out, /size=64M,share=on,readonly=on,mem-path=\/dev\/shm\/prism-web-meta,/);
  const plain = prism(s, ['qemu-args', 'web', '--plain']);
  t.is(plain.out.match(/-device ivshmem-plain/g)?.length, 2);
  t.regex(plain.out, /mem-path=\/dev\/shm\/prism-web,/);
  t.notRegex(plain.out, /doorbell/);
  const one = prism(s, ['qemu-args', 'web', '--no-meta', '--plain']);
  t.is(one.out.match(/-device ivshmem-plain/g)?.length, 1);
  t.notRegex(one.out, /readonly/);
  const bad = prism(s, ['qemu-args', 'web', '--meta-size', '3']);
  t.is(bad.code, 22);
  t.regex(bad.err, /power of two/);
});
