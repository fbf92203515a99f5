// Property-based: random sequences of POSIX operations, clones and composes run against the store and
// against real directory trees on disk (the model); results, errors and final trees must agree, and
// every volume must match its own model (isolation).
import test from 'ava';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Store } from '../../src/store/store.js';
import { isPrismError, PrismError } from '../../src/errors.js';
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG } from '../../src/posix/mode.js';
import type { Volume } from '../../src/store/volume.js';
import { tmpDir } from '../helpers/tmp.js';

const NAMES = ['a', 'b', 'c'];
const pathArb = fc.array(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 }).map((p) => '/' + p.join('/'));

type Op =
  | { op: 'mkdir' | 'unlink' | 'rmdir'; p: string }
  | { op: 'put'; p: string; size: number; seed: number }
  | { op: 'write'; p: string; off: number; size: number; seed: number }
  | { op: 'truncate'; p: string; size: number }
  | { op: 'rename' | 'link'; p: string; q: string }
  | { op: 'symlink'; p: string; target: string }
  | { op: 'clone' | 'compose' | 'reopen' | 'switch'; pick: number; p: string };

const sizeArb = fc.oneof(fc.nat(3000), fc.constantFrom(65535, 65536, 65537, 200_000));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('mkdir', 'unlink', 'rmdir') as fc.Arbitrary<'mkdir'>, p: pathArb }),
  fc.record({ op: fc.constant('put' as const), p: pathArb, size: sizeArb, seed: fc.nat(255) }),
  fc.record({ op: fc.constant('write' as const), p: pathArb, off: sizeArb, size: sizeArb, seed: fc.nat(255) }),
  fc.record({ op: fc.constant('truncate' as const), p: pathArb, size: sizeArb }),
  fc.record({ op: fc.constantFrom('rename', 'link') as fc.Arbitrary<'rename'>, p: pathArb, q: pathArb }),
  fc.record({ op: fc.constant('symlink' as const), p: pathArb, target: fc.constantFrom('a', '../b', '/x/y') }),
  fc.record({ op: fc.constantFrom('clone', 'compose', 'reopen', 'switch') as fc.Arbitrary<'clone'>, pick: fc.nat(7), p: pathArb }),
);

function data(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function split(p: string): [string, string] {
  const i = p.lastIndexOf('/');
  return [p.slice(0, i) || '/', p.slice(i + 1)];
}

function applyModel(root: string, o: Op): void {
  const at = (p: string) => path.join(root, p);
  switch (o.op) {
    case 'mkdir': return fs.mkdirSync(at(o.p), 0o755);
    case 'unlink': return fs.unlinkSync(at(o.p));
    case 'rmdir': return fs.rmdirSync(at(o.p));
    case 'put': { if (fs.lstatSync(at(o.p), { throwIfNoEntry: false })?.isSymbolicLink()) return; return fs.writeFileSync(at(o.p), data(o.size, o.seed)); }
    case 'write': {
      if (fs.lstatSync(at(o.p), { throwIfNoEntry: false })?.isSymbolicLink()) return;
      const fd = fs.openSync(at(o.p), 'r+');
      try { fs.writeSync(fd, data(o.size, o.seed), 0, o.size, o.off); } finally { fs.closeSync(fd); }
      return;
    }
    case 'truncate': { if (fs.lstatSync(at(o.p)).isSymbolicLink()) return; return fs.truncateSync(at(o.p), o.size); }
    case 'rename': return fs.renameSync(at(o.p), at(o.q));
    case 'link': return fs.linkSync(at(o.p), at(o.q));
    case 'symlink': return fs.symlinkSync(o.target, at(o.p));
    default: return;
  }
}

function applyStore(v: Volume, o: Op, modelRoot: string): void {
  // As the kernel does: the parent path must resolve to a directory before anything else happens.
  const parent = (p: string) => {
    const [d, n] = split(p);
    const ino = v.resolve(d);
    if ((v.getattr(ino).mode & S_IFMT) !== S_IFDIR) throw new PrismError('ENOTDIR', d);
    return [ino, n] as const;
  };
  const isLink = (p: string) => fs.lstatSync(path.join(modelRoot, p), { throwIfNoEntry: false })?.isSymbolicLink();
  switch (o.op) {
    case 'mkdir': { const [d, n] = parent(o.p); v.mkdir(d, n, 0o755, 0, 0); return; }
    case 'unlink': { const [d, n] = parent(o.p); v.unlink(d, n); return; }
    case 'rmdir': { const [d, n] = parent(o.p); v.rmdir(d, n); return; }
    case 'put': {
      if (isLink(o.p)) return;
      const [d, n] = parent(o.p);
      const a = v.create(d, n, 0o644, 0, 0, false);
      v.setattr(a.ino, { size: 0 });
      v.write(a.ino, 0, data(o.size, o.seed));
      return;
    }
    case 'write': { if (isLink(o.p)) return; v.write(v.resolve(o.p), o.off, data(o.size, o.seed)); return; }
    case 'truncate': { const ino = v.resolve(o.p); if (isLink(o.p)) return; v.setattr(ino, { size: o.size }); return; }
    case 'rename': { const [d1, n1] = parent(o.p); const [d2, n2] = parent(o.q); v.rename(d1, n1, d2, n2); return; }
    case 'link': { const ino = v.resolve(o.p); const [d, n] = parent(o.q); v.link(ino, d, n); return; }
    case 'symlink': { const [d, n] = parent(o.p); v.symlink(d, n, o.target, 0, 0); return; }
    default: return;
  }
}

function throughSymlink(root: string, p: string): boolean {
  const parts = p.split('/').filter(Boolean);
  for (let i = 1; i < parts.length; i++) {
    let st: fs.Stats | undefined;
    try { st = fs.lstatSync(path.join(root, ...parts.slice(0, i))); } catch { return false; }
    if (st.isSymbolicLink()) return true;
  }
  return false;
}

function errCode(fn: () => void): string | null {
  try { fn(); return null; } catch (e) {
    if (isPrismError(e)) return e.code;
    const c = (e as NodeJS.ErrnoException).code;
    if (c) return c;
    throw e;
  }
}

// Where Linux and POSIX allow either answer.
const SAME: Record<string, string> = { EEXIST: 'ENOTEMPTY' };
const norm = (c: string | null) => (c && SAME[c]) || c;

function compareTree(v: Volume, dir: string, ino: number, composed: boolean, where: string): void {
  const names = fs.readdirSync(dir).sort();
  const entries = v.readdir(ino);
  const got = entries.map((e) => e.name.toString()).sort();
  if (JSON.stringify(names) !== JSON.stringify(got)) throw new Error(`${where}: entries ${JSON.stringify(got)} != model ${JSON.stringify(names)}`);
  const dst = fs.lstatSync(dir);
  if (v.getattr(ino).nlink !== dst.nlink) throw new Error(`${where}: dir nlink ${v.getattr(ino).nlink} != ${dst.nlink}`);
  for (const e of entries) {
    const p = path.join(dir, e.name.toString());
    const st = fs.lstatSync(p);
    const a = v.getattr(e.ino);
    const w = `${where}/${e.name.toString()}`;
    if ((a.mode & S_IFMT) !== (st.mode & S_IFMT)) throw new Error(`${w}: type differs`);
    if ((a.mode & S_IFMT) === S_IFDIR) { compareTree(v, p, e.ino, composed, w); continue; }
    if ((a.mode & S_IFMT) === S_IFLNK) {
      if (v.readlink(e.ino).toString() !== fs.readlinkSync(p)) throw new Error(`${w}: symlink target differs`);
      continue;
    }
    if ((a.mode & S_IFMT) === S_IFREG) {
      if (a.size !== st.size) throw new Error(`${w}: size ${a.size} != ${st.size}`);
      if (!v.read(e.ino, 0, a.size).data.equals(fs.readFileSync(p))) throw new Error(`${w}: content differs`);
      if (!composed && a.nlink !== st.nlink) throw new Error(`${w}: nlink ${a.nlink} != ${st.nlink}`);
    }
  }
}

test('random operations, clones and composes agree with real directory trees', (t) => {
  const base = tmpDir(t);
  let run = 0;
  fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
    const dir = path.join(base, `run${run++}`);
    const storeDir = path.join(dir, 'store');
    const models = path.join(dir, 'model');
    fs.mkdirSync(path.join(models, 'v0'), { recursive: true });
    let store = Store.open(storeDir);
    try {
      store.createVolume('v0');
      const vols = ['v0'];
      const composed = new Set<string>();
      let cur = 'v0';
      for (const o of ops) {
        if (o.op === 'switch') { cur = vols[o.pick % vols.length]; continue; }
        if (o.op === 'reopen') { store.close(); store = Store.open(storeDir); continue; }
        if (o.op === 'clone' || o.op === 'compose') {
          if (vols.length >= 4) continue;
          const name = `v${vols.length}`;
          if (o.op === 'clone') {
            store.clone(cur, name);
            execFileSync('cp', ['-a', path.join(models, cur), path.join(models, name)]);
            if (composed.has(cur)) composed.add(name);
          } else {
            const src = path.join(models, cur, o.p);
            if (throughSymlink(path.join(models, cur), o.p)) continue;
            const mc = errCode(() => fs.lstatSync(src));
            const sc = errCode(() => store.compose(name, [{ volume: cur, path: o.p, dest: '/sub' }]));
            if (mc !== sc) throw new Error(`compose ${o.p}: store ${sc}, model ${mc}`);
            if (sc) continue;
            fs.mkdirSync(path.join(models, name));
            execFileSync('cp', ['-a', src, path.join(models, name, 'sub')]);
            composed.add(name);
          }
          vols.push(name);
          cur = name;
          continue;
        }
        const v = store.volume(cur);
        const root = path.join(models, cur);
        // Following symlinks inside a path is the kernel's job, not the store's: skip such paths.
        if (throughSymlink(root, o.p) || ('q' in o && throughSymlink(root, o.q))) continue;
        const mc = errCode(() => applyModel(root, o));
        const sc = errCode(() => applyStore(v, o, root));
        if (norm(mc) !== norm(sc)) throw new Error(`${JSON.stringify(o)} on ${cur}: store ${sc}, model ${mc}`);
      }
      store.close();
      store = Store.open(storeDir);
      for (const name of vols) compareTree(store.volume(name), path.join(models, name), store.volume(name).rootIno, composed.has(name), name);
    } finally {
      store.abandon();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }), { numRuns: 400, includeErrorInReport: true });
  t.pass();
});
