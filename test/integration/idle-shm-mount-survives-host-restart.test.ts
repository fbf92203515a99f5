// Issue 11 item 8: an idle shared-memory mount (no request in flight) survives a clean stop and a
// kill -9 of the host: the agent's first request after the restart must see the new generation
// before it trusts the ring words, reconnect and be answered, not read stale counters and EIO forever.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fuseSkipReason } from '../helpers/agent.js';
import { mountedVolume } from '../helpers/mounted-volume.js';

const reason = fuseSkipReason();
if (reason) console.error(`idle-shm-mount-survives-host-restart.test: skipped: ${reason}`);

/** A shell command on the mount, in a child (the mount is served by another process), bounded in time. */
function sh(script: string): { code: number | null; out: string; err: string } {
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

(reason ? test.skip : test.serial)('an idle shm mount survives a clean host stop and a kill -9 of the host', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const f = path.join(m.mp, 'kept');
  fs.writeFileSync(f, 'durable');
  const fd = fs.openSync(f, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    await new Promise((r) => setTimeout(r, 300)); // idle: nothing in flight when the host goes
    if (how === 'SIGTERM') {
      t.is(await m.host.stop(), 0);
    } else {
      const gone = new Promise((r) => m.host.child.once('exit', r));
      m.host.child.kill('SIGKILL');
      await gone;
    }
    await m.restartHost();
    await new Promise((r) => setTimeout(r, 300)); // still idle after the restart
    const dir = path.join(m.mp, `after-${how}`);
    const r = sh(`mkdir ${dir} && echo new > ${dir}/f && cat ${dir}/f && cat ${f}`);
    t.is(r.code, 0, `after ${how}: ${r.err}\nagent: ${m.agent.stderr().slice(-1500)}`);
    t.is(r.out, 'new\ndurable', `after ${how}`);
    // And it keeps working (not one lucky request): a few more round trips.
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(dir, `g${i}`), String(i));
    t.is(fs.readdirSync(dir).length, 21);
  }
});
