// What a full volume must do to writes sent behind, whatever the agent's caching: the error surfaces
// (EDQUOT at a later write, close or fsync), nothing else written is lost, and freeing space lets
// writes in again. Run on a mount of a volume with a 1 MiB quota.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';

export function fullVolumeKeepsWhatFits(tt: ExecutionContext, mp: string): void {
  fs.writeFileSync(path.join(mp, 'small'), 'fits');
  const dd = spawnSync('dd', ['if=/dev/urandom', `of=${path.join(mp, 'big')}`, 'bs=64k', 'count=64'], { encoding: 'utf8' });
  tt.not(dd.status, 0);
  tt.regex(dd.stderr, /Disk quota exceeded/);
  const fsync = spawnSync('python3', ['-c', `import os
fd=os.open(${JSON.stringify(path.join(mp, 'more'))},os.O_CREAT|os.O_WRONLY)
try:
  for i in range(64): os.write(fd,os.urandom(65536))
  os.fsync(fd)
  print('no error')
except OSError as e: print(e.errno)`], { encoding: 'utf8' });
  tt.is(fsync.stdout.trim(), '122');
  tt.is(fs.readFileSync(path.join(mp, 'small'), 'utf8'), 'fits');
  fs.unlinkSync(path.join(mp, 'big'));
  fs.unlinkSync(path.join(mp, 'more'));
  fs.writeFileSync(path.join(mp, 'after'), Buffer.alloc(100_000, 1)); // room again
  tt.is(fs.statSync(path.join(mp, 'after')).size, 100_000);
}
