// One process owns a store at a time: a lock file holding the owner's pid. A lock left by a dead
// process (kill -9) is taken over.
import fs from 'node:fs';
import { PrismError, fromNodeError } from '../errors.js';

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export function acquireLock(file: string): () => void {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o600);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      return () => { try { if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.rmSync(file); } catch { /* gone */ } };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fromNodeError(e, 'cannot lock the store');
      const pid = Number(fs.readFileSync(file, 'utf8').trim());
      if (pid === process.pid) throw new PrismError('EBUSY', 'store is already open in this process');
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) throw new PrismError('EBUSY', `store is in use by process ${pid}`);
      fs.rmSync(file, { force: true });
    }
  }
  throw new PrismError('EBUSY', 'could not lock the store');
}
