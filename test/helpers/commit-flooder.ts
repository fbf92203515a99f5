// Child process for the commit-flood test: one VM over TCP sends small WRITEs each followed by a
// COMMIT, `concurrency` loops at once, until killed or `ms` pass; prints "started", then "commits N".
import { Proc } from '../../src/protocol/procs.js';
import { connectTcp } from '../../src/vrpc/client.js';

async function main(): Promise<void> {
  const [address, vm, token, volume, ms, concurrency] = process.argv.slice(2);
  const c = await connectTcp(address, vm, token);
  const [root] = await c.call(Proc.ATTACH, [volume]) as [Buffer];
  const files = await Promise.all(Array.from({ length: Number(concurrency) }, async (_, i) =>
    (await c.call(Proc.CREATE, [root, Buffer.from(`flood${i}`), 0o644, 0, 0, false]))[0] as Buffer));
  const until = Date.now() + Number(ms);
  let commits = 0;
  process.stdout.write('started\n');
  await Promise.all(files.map(async (fh, i) => {
    for (let n = 0; Date.now() < until; n++) {
      await c.call(Proc.WRITE, [fh, (n % 64) * 4096, Buffer.alloc(4096, i + n), 0]);
      await c.call(Proc.COMMIT, [fh]);
      commits++;
    }
  }));
  process.stdout.write(`commits ${commits}\n`);
  c.close();
}

void main();
