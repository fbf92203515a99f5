// The metadata table across real processes, through the ivshmem addon's mappings: a host process
// rewrites entries in a loop while this process reads them through a read-only mapping; no read may
// ever see a mix of two writes. A process that writes into a read-only mapping dies.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MetaTable, SLOT_SIZE } from '../../src/metadata-share/table.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { map, unmap } from '../../src/native/memory.js';

const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'meta-child.js');
const n = nativeAvailable();
const t = n.ok && fs.existsSync('/dev/shm') ? test.serial : test.skip;
if (!n.ok) console.error(`metadata-share shared.test: skipped: ${n.reason}`);

function tableFile(tt: { teardown(fn: () => void): void }): string {
  const file = `/dev/shm/prism-test-meta-${process.pid}-${Math.random().toString(36).slice(2)}`;
  tt.teardown(() => fs.rmSync(file, { force: true }));
  const buf = map(file, { size: MetaTable.geometry(1 << 20).slotsAt + 1024 * SLOT_SIZE, create: true });
  MetaTable.create(buf);
  unmap(buf);
  return file;
}

t('a reader in another process than the writer never sees a torn entry', async (tt) => {
  const file = tableFile(tt);
  const w = spawn(process.execPath, [child, 'writer', file, '1500'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  w.stdout.on('data', (d) => { out += d; });
  await new Promise<void>((r) => { const check = () => (out.includes('ready') ? r() : setTimeout(check, 5)); check(); });
  const table = MetaTable.attach(map(file, { readonly: true }));
  const names = Array.from({ length: 64 }, (_, k) => Buffer.from(`entry-${k}`));
  let hits = 0, torn = 0, rounds = 0;
  const exited = new Promise<number | null>((r) => w.once('exit', r));
  let done = false;
  void exited.then(() => { done = true; });
  while (!done) {
    for (let k = 0; k < 64; k++) {
      const a = table.getAttr(1, k);
      if (a) { hits++; if (a.some((x) => x !== a[0])) torn++; }
      const e = table.getEntry(1, 0, names[k]!);
      if (e) { hits++; if (e.fh.some((b) => b !== (e.ino & 255))) torn++; }
    }
    rounds++;
    if (rounds % 50 === 0) await new Promise((r) => setImmediate(r));
  }
  tt.is(await exited, 0);
  const writerRounds = Number(out.trim().split('\n').pop());
  tt.true(writerRounds > 10, `the writer made ${writerRounds} rounds`);
  tt.true(hits > 1000, `${hits} hits`);
  tt.is(torn, 0, `${torn} torn reads of ${hits}`);
});

t('writing into the read-only mapping kills the writer (SIGSEGV), the table is unchanged', async (tt) => {
  const file = tableFile(tt);
  const before = fs.readFileSync(file);
  const c = spawn(process.execPath, [child, 'scribble', file], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  c.stdout.on('data', (d) => { out += d; });
  const [code, signal] = await new Promise<[number | null, string | null]>((r) => c.once('exit', (cd, sg) => r([cd, sg])));
  tt.true(out.includes('mapped'));
  tt.false(out.includes('wrote'));
  tt.true(signal === 'SIGSEGV' || code === 139, `exit ${code} ${signal}`);
  tt.true(fs.readFileSync(file).equals(before));
});
