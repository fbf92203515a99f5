// Hazard (issue 11, item 7): fsync said yes to lost data. An unstable WRITE is acknowledged, the host
// is killed -9 before it commits, a new host starts, and the agent's fsync (a COMMIT) succeeds on the
// new host, which never saw the write. With the write verifier the agent notices the new host
// instance and sends what it kept again before fsync returns.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fuseSkipReason } from '../helpers/agent.js';
import { prism, prismBin } from '../helpers/host.js';
import { mountedVolume, type TransportName } from '../helpers/mounted-volume.js';

const reason = fuseSkipReason();
const t = reason ? test.skip : test.serial;
if (reason) console.error(`fsync-after-host-restart.test: skipped: ${reason}`);

// The host commits on its own only when told to (COMMIT): what it acknowledged is lost at a kill.
process.env.PRISM_COMMIT_INTERVAL_MS = '600000';

async function kill9(m: Awaited<ReturnType<typeof mountedVolume>>): Promise<void> {
  const gone = new Promise((r) => m.host.child.once('exit', r));
  m.host.child.kill('SIGKILL');
  await gone;
}

const pattern = (tag: number, n: number) => Buffer.alloc(n, tag);

for (const transport of ['shm', 'tcp'] as TransportName[]) {
  t(`${transport}: an unstable write acknowledged before a host kill -9 is durable once a later fsync returns`, async (tt) => {
    const m = await mountedVolume(tt, transport, { unixSocket: true, agentArgs: ['--timeout', '30'] });
    const file = path.join(m.mp, 'f');
    const size = 3 * 65536 + 1234;
    // Durable first: version A.
    let fd = fs.openSync(file, 'w');
    fs.writeSync(fd, pattern(0xaa, size));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    // Version B, acknowledged by the host (close waits for the replies) but not committed.
    fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, pattern(0xbb, 65536 + 100), 0, 65536 + 100, 1000);
    fs.closeSync(fd);
    await kill9(m);
    await m.restartHost();
    // fsync on the new host: must make B durable, or fail.
    fd = fs.openSync(file, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    // Kill again, so that only what is on disk counts, and read the store itself.
    await kill9(m);
    await m.agent.umount();
    const got = spawnSync(process.execPath, [prismBin, '--store', m.store, 'cat', 'vol:/f'], { maxBuffer: 1 << 24 }).stdout;
    const want = pattern(0xaa, size);
    pattern(0xbb, 65536 + 100).copy(want, 1000);
    tt.is(got.length, size);
    tt.true(got.equals(want), 'the store holds what fsync said was durable');
    tt.is(prism(m.store, ['fsck']).code, 0);
  });
}
