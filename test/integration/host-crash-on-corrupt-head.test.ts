// Issue 11 item 1: a guest that keeps writing bad values into its ring words (also right after each
// reset, and while its requests are in flight) must never take the host down; another VM on the
// same host keeps being answered throughout.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Proc } from '../../src/protocol/procs.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { shmPath } from '../../src/vrpc/shm-region.js';
import { connectShm } from '../../src/vrpc/shm-channel.js';
import { prism, startHost } from '../helpers/host.js';
import { tmpDir } from '../helpers/tmp.js';

const hostileJs = fileURLToPath(new URL('../helpers/hostile-guest.js', import.meta.url));
const native = nativeAvailable();
const skip = !fs.existsSync('/dev/shm') ? '/dev/shm does not exist' : !native.ok ? native.reason : undefined;
if (skip) console.error(`host-crash-on-corrupt-head.test: skipped: ${skip}`);
const shmTest = skip ? test.skip : test.serial;

/** Run the hostile guest; resolves with its report. */
function hostile(region: string, mode: string, seconds: number, seed: number): Promise<{ writes: number; resets: number }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [hostileJs, region, mode, String(seconds), String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { writes: number; resets: number }) : reject(new Error(`hostile guest exited ${code}: ${err}`))));
  });
}

for (const mode of ['head', 'mixed'] as const) {
  shmTest(`a guest corrupting its ring words (${mode}) for seconds: the host stays up and another VM is served throughout`, async (t) => {
    const store = path.join(tmpDir(t), 'store');
    for (const v of ['vol1', 'vol2']) t.is(prism(store, ['volume', 'create', v]).code, 0);
    const dir = fs.mkdtempSync('/dev/shm/prism-test-');
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const host = await startHost(store, ['--shm-dir', dir, '--meta-size', '1', '--vm', 'bad=vol1', '--vm', 'good=vol2']);
    t.teardown(() => { host.child.kill('SIGKILL'); });
    let exited: string | undefined;
    host.child.once('exit', (code, sig) => { exited = `code ${code} signal ${sig}`; });

    const good = await connectShm(shmPath('good', dir), 'good', { timeoutMs: 3000 });
    const attack = hostile(shmPath('bad', dir), mode, 6, 7);
    let answered = 0, worstMs = 0, failures = 0;
    const stop = Date.now() + 6000;
    while (Date.now() < stop && exited === undefined) {
      const t0 = performance.now();
      try {
        t.deepEqual(await good.call(Proc.NULL), []);
        answered++;
        worstMs = Math.max(worstMs, performance.now() - t0);
      } catch {
        failures++;
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    const report = await attack;
    t.log(`hostile: ${report.writes} corrupting writes, ${report.resets} resets seen; good VM: ${answered} NULLs, worst ${worstMs.toFixed(1)} ms`);
    if (exited !== undefined) { good.close(); t.fail(`the host died (${exited}): ${host.stderr().slice(-2000)}`); return; }
    t.is(failures, 0, 'every NULL of the other VM was answered');
    t.true(answered > 100, `the other VM was served throughout (${answered} answers)`);
    t.true(report.resets > 0, 'the host noticed the corruption and reset the region');
    good.close();

    // Once the attack stops, the region recovers (the host notices rings left broken within about a
    // second, plus the reset backoff): a fresh client of the hostile VM is served again.
    let again;
    for (let tries = 0; !again; tries++) {
      try {
        again = await connectShm(shmPath('bad', dir), 'bad', { timeoutMs: 3000, handshakeMs: 3000 });
      } catch (e) {
        if (tries >= 10) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const [root] = await again.call(Proc.ATTACH, ['vol1']) as [Buffer];
    t.true(root.length > 0);
    again.close();
    t.is(await host.stop(), 0);
    t.regex(host.stderr(), /rings reset/, 'the resets were logged');
  });
}
