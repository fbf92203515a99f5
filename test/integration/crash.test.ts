// Crash safety: a real child process is killed with SIGKILL at random moments while it writes,
// clones and composes. Everything it acknowledged as committed must survive, clones must be exact
// point-in-time copies, no volume may be half-made, and fsck must find nothing wrong.
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Store } from '../../src/store/store.js';
import { fsck } from '../../src/store/fsck.js';
import { content, expected } from '../helpers/crash-writer.js';
import { tmpDir } from '../helpers/tmp.js';

const writer = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/crash-writer.js');

function runAndKill(dir: string, ms: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writer, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let last = -1, out = '', err = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const l of lines) if (l.startsWith('ack ')) last = Number(l.slice(4));
      // The kill lands `ms` into the work, however long the process took to start (a loaded machine).
      timer ??= setTimeout(() => child.kill('SIGKILL'), ms);
    });
    child.stderr.on('data', (d) => { err += d; });
    let timer: NodeJS.Timeout | undefined;
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`writer exited with ${code}: ${err}`));
      else resolve(last);
    });
  });
}

test('kill -9 at random moments loses nothing committed and leaves a clean store', async (t) => {
  const dir = path.join(tmpDir(t), 'store');
  let acked = -1;
  for (let round = 0; round < 8; round++) {
    const last = await runAndKill(dir, 300 + Math.floor(Math.random() * 900));
    if (last >= 0) acked = last;
    const store = Store.open(dir);
    try {
      const v = store.volume('main');
      const files = new Set(v.readdir(v.rootIno).map((e) => e.name.toString()));
      for (let i = 0; i <= acked; i++) {
        t.true(files.has(`f${i}`), `round ${round}: f${i} was acknowledged but is missing`);
        const ino = v.resolve(`/f${i}`);
        const got = v.read(ino, 0, 1 << 20).data;
        const ok = i < acked ? got.equals(expected(i, true)) : got.equals(expected(i, true)) || got.equals(expected(i, false));
        if (!ok) t.fail(`round ${round}: f${i} content differs`);
      }
      // Every clone is complete and frozen at its moment: c<j> holds exactly f0..fj.
      for (const name of store.volumeNames()) {
        if (!name.startsWith('c')) continue;
        const j = Number(name.slice(1));
        const c = store.volume(name);
        const names = c.readdir(c.rootIno).map((e) => e.name.toString()).sort();
        t.deepEqual(names, Array.from({ length: j + 1 }, (_, k) => `f${k}`).sort(), `round ${round}: clone ${name} is not point-in-time`);
      }
      for (const name of store.volumeNames()) {
        if (!name.startsWith('k')) continue;
        const k = store.volume(name);
        t.true(k.read(k.resolve('/x/f'), 0, 1 << 20).data.equals(content(Number(name.slice(1)))), `compose ${name} is complete and frozen`);
      }
      const report = fsck(store, { verifyData: true });
      t.deepEqual(report.problems, [], `round ${round}: fsck found problems`);
    } finally {
      store.close();
    }
  }
  t.true(acked >= 3, `the writer made progress (${acked} commits acknowledged)`);
});
