// Crash consistency of the whole path (issue 11): a real program writes and fsyncs through a real
// agent's mount while the host is killed -9 at random moments and restarted. At each kill, before the
// host comes back, the store on disk must hold, for every block, one whole version the program wrote
// (never torn), at least as new as the last fsync that returned for its file, and fsck must be clean.
// Two workloads: whole 64 KiB blocks, and 4 KiB pages over stored blocks (what COMMITs put in the
// intent log, replayed when the store is opened after the kill).
// npm test runs a few kill points; `npm run test:crash` runs PRISM_CRASH_POINTS of them (>= 100).
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fsck } from '../../src/store/fsck.js';
import { Store } from '../../src/store/store.js';
import { fuseSkipReason } from '../helpers/agent.js';
import { FILES, generationOf, shapeOf } from '../helpers/fsync-workload.js';
import { mountedVolume, type TransportName } from '../helpers/mounted-volume.js';

const reason = fuseSkipReason();
const t = reason ? test.skip : test.serial;
if (reason) console.error(`host-crash-fsync.test: skipped: ${reason}`);

/** 1 if the store's intent log holds a file (pages some COMMIT logged and no checkpoint stored yet). */
function logFiles(store: string): number {
  try { return fs.readdirSync(path.join(store, 'log')).some((f) => fs.statSync(path.join(store, 'log', f)).size > 0) ? 1 : 0; } catch { return 0; }
}

const workload = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/fsync-workload.js');
const POINTS = Number(process.env.PRISM_CRASH_POINTS ?? 12);
const TRANSPORTS = (process.env.PRISM_CRASH_TRANSPORTS ?? 'shm,tcp').split(',') as TransportName[];

/** What the program has said so far. */
class Journal {
  constructor(private readonly units: number) {}
  lines: string[] = [];
  private partial = '';
  feed(d: string): void {
    const parts = (this.partial + d).split('\n');
    this.partial = parts.pop()!;
    this.lines.push(...parts);
  }

  /** Per file and block: the newest generation covered by an fsync that returned. */
  durable(): number[][] {
    const need = Array.from({ length: FILES }, () => new Array<number>(this.units).fill(0));
    const written = Array.from({ length: FILES }, () => new Array<number>(this.units).fill(0));
    for (const l of this.lines) {
      const p = l.split(' ');
      if (p[0] === 'W') written[Number(p[1])]![Number(p[2])] = Number(p[3]);
      else if (p[0] === 's') need[Number(p[1])] = [...written[Number(p[1])]!];
    }
    return need;
  }

  /** Every generation the program began to write, per file and block. */
  issued(): Set<string> {
    return new Set(this.lines.filter((l) => l.startsWith('W ')).map((l) => l.slice(2)));
  }
}

// npm test runs the page workload over shared memory only; test:crash runs both everywhere.
const RUNS = TRANSPORTS.flatMap((transport) => [
  { transport, pages: false },
  ...(transport === 'shm' || process.env.PRISM_CRASH_POINTS ? [{ transport, pages: true }] : []),
]);

for (const { transport, pages } of RUNS) {
  const { unit, units } = shapeOf(pages);
  const what = pages ? '4 KiB pages over stored blocks' : 'whole 64 KiB blocks';
  t(`${transport}: kill -9 of the host during a write/fsync workload of ${what}: fsynced data intact, nothing torn, fsck clean (${POINTS} kill points)`, async (tt) => {
    tt.timeout(Math.max(120_000, POINTS * 15_000));
    const m = await mountedVolume(tt, transport, { unixSocket: true, agentArgs: ['--timeout', '120'] });
    const j = new Journal(units);
    const child = spawn(process.execPath, [workload, m.mp, ...(pages ? ['pages'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => j.feed(d));
    let exited = false;
    child.once('exit', () => { exited = true; });
    tt.teardown(() => { child.kill('SIGKILL'); });
    while (!j.lines.includes('ready')) {
      if (exited) throw new Error(`the workload stopped: ${err}\nagent: ${m.agent.stderr().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    let checkedBlocks = 0, newerThanFsync = 0, logged = 0;
    const found: string[] = [];
    for (let point = 0; point < POINTS; point++) {
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 1000));
      const gone = new Promise((r) => m.host.child.once('exit', r));
      m.host.child.kill('SIGKILL');
      await gone;
      const need = j.durable(); // only lines read by now count: fewer, never wrong
      logged += logFiles(m.store);
      const store = Store.open(m.store); // replays the intent log
      try {
        const v = store.volume('vol');
        for (let f = 0; f < FILES; f++) {
          const ino = v.resolve(`/f${f}`);
          for (let b = 0; b < units; b++) {
            const data = Buffer.from(v.read(ino, b * unit, unit).data);
            const g = generationOf(f, b, data, unit);
            checkedBlocks++;
            if (g === null) { tt.fail(`point ${point}: f${f} block ${b} is torn or foreign`); continue; }
            if (g < need[f]![b]!) tt.fail(`point ${point}: f${f} block ${b} holds generation ${g}, but ${need[f]![b]} was fsynced`);
            if (g > need[f]![b]!) newerThanFsync++;
            found.push(`${f} ${b} ${g}`);
          }
        }
        const report = fsck(store, { verifyData: true });
        tt.deepEqual(report.problems, [], `point ${point}: fsck found problems`);
      } finally {
        store.close();
      }
      if (exited) throw new Error(`the workload stopped: ${err}\nagent: ${m.agent.stderr().slice(-3000)}`);
      await m.restartHost();
    }
    // Every version found was one the program wrote (checked at the end, once all lines are in).
    await new Promise((r) => setTimeout(r, 500));
    const issued = j.issued();
    const foreign = found.filter((x) => !issued.has(x));
    tt.deepEqual(foreign, [], 'versions the program never wrote');
    const fsyncs = j.lines.filter((l) => l.startsWith('s ')).length;
    tt.true(fsyncs > FILES + POINTS / 2, `the program went on fsyncing through the kills (${fsyncs})`);
    if (pages) tt.true(logged > 0, 'the kills found pages in the intent log to replay');
    tt.log(`${transport}, ${what}: ${POINTS} kill points (${logged} with a log to replay), ${checkedBlocks} units checked (${newerThanFsync} newer than their last fsync), ${issued.size} writes, ${fsyncs} fsyncs`);
  });
}
