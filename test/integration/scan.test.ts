// `prism scan`: each distinct content scanned once for all the volumes that hold it (100 clones of an
// image are one scan), and every holder of a flagged content reported.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { prismBin } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

function prism(store: string, args: string[], input?: string | Buffer) {
  const r = spawnSync(process.execPath, [prismBin, '--store', store, ...args], { encoding: 'utf8', input, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

interface Report { volumes: number; files: number; uniqueContents: number; flagged: Array<{ why: string; holders: Array<{ volume: string; path: string }> }> }

function setup(t: import('ava').ExecutionContext): { s: string; dir: string; big: Buffer } {
  const dir = tmpDir(t);
  const s = path.join(dir, 'store');
  const big = crypto.randomBytes(1 << 20);
  t.is(prism(s, ['volume', 'create', 'base']).code, 0);
  t.is(prism(s, ['put', 'base:/hello.txt', '-'], 'hello\n').code, 0);
  t.is(prism(s, ['put', 'base:/bad.bin', '-'], 'xx MALWARE xx\n').code, 0);
  fs.writeFileSync(path.join(dir, 'big'), big);
  t.is(prism(s, ['put', 'base:/big.bin', path.join(dir, 'big')]).code, 0);
  for (let i = 1; i <= 5; i++) t.is(prism(s, ['volume', 'clone', 'base', `clone${i}`]).code, 0);
  t.is(prism(s, ['put', 'clone3:/extra.txt', '-'], 'MALWARE again\n').code, 0);
  return { s, dir, big };
}

test('each distinct content is scanned once; every holder of a flagged one is reported', (t) => {
  const { s, dir } = setup(t);
  const log = path.join(dir, 'scans.log');
  const r = prism(s, ['scan', '--json', '--exec', `echo scanned >> '${log}'; ! grep -q MALWARE`]);
  t.is(r.code, 1, `flagged: exit 1 (${r.err})`);
  const rep = JSON.parse(r.out) as Report;
  t.is(rep.volumes, 6);
  t.is(rep.files, 6 * 3 + 1);
  t.is(rep.uniqueContents, 4, 'hello, bad, big, extra');
  t.is(fs.readFileSync(log, 'utf8').trim().split('\n').length, 4, 'the scanner ran once per distinct content');
  const holders = rep.flagged.map((f) => f.holders.map((h) => `${h.volume}:${h.path}`).sort());
  t.deepEqual(holders.sort((a, b) => a.length - b.length), [
    ['clone3:/extra.txt'],
    ['base:/bad.bin', 'clone1:/bad.bin', 'clone2:/bad.bin', 'clone3:/bad.bin', 'clone4:/bad.bin', 'clone5:/bad.bin'],
  ]);
  // the human summary says how much was saved
  const human = prism(s, ['scan', 'clone1', 'clone2', '--exec', '! grep -q MALWARE']);
  t.is(human.code, 1);
  t.regex(human.out, /6 files .* in 2 volumes hold 3 distinct contents .*scanned 3 times instead of 6/);
  t.regex(human.out, /FLAGGED \(flagged by --exec, 14 B\): clone1:\/bad\.bin clone2:\/bad\.bin/);
});

test('a content in a temporary file ({}), a hash list, a clean run, and a scanner that fails', (t) => {
  const { s, dir, big } = setup(t);
  const byFile = prism(s, ['scan', 'base', '--json', '--exec', 'if grep -q MALWARE {}; then exit 1; fi']);
  t.is(byFile.code, 1, byFile.err);
  t.deepEqual((JSON.parse(byFile.out) as Report).flagged.map((f) => f.holders[0]!.path), ['/bad.bin']);
  const list = path.join(dir, 'bad-hashes');
  fs.writeFileSync(list, `# known bad\n${crypto.createHash('sha256').update(big).digest('hex')}  big.bin\n`);
  const byHash = prism(s, ['scan', '--json', '--hash-list', list]);
  t.is(byHash.code, 1, byHash.err);
  const f = (JSON.parse(byHash.out) as Report).flagged;
  t.is(f.length, 1);
  t.is(f[0]!.why, 'SHA-256 listed');
  t.is(f[0]!.holders.length, 6);
  const clean = prism(s, ['scan', '--exec', 'cat >/dev/null']);
  t.is(clean.code, 0, clean.err);
  t.regex(clean.out, /nothing flagged/);
  const broken = prism(s, ['scan', 'base', '--exec', 'echo oops >&2; exit 3']);
  t.is(broken.code, 5, 'EIO');
  t.regex(broken.out, /ERROR \(the scanner exited with 3: oops\)/);
  t.regex(broken.err, /^prism: EIO: 3 contents could not be scanned\n$/);
  const nothing = prism(s, ['scan']);
  t.is(nothing.code, 22);
});
