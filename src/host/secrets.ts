// Secrets kept next to the store: the host key that makes handles unforgeable (and stable across
// restarts), and one TCP token per VM. Files are created 0600 on first use.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fromNodeError } from '../errors.js';

function readOrCreate(file: string, make: () => Buffer): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromNodeError(e, `cannot read ${file}`);
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const v = make();
  try {
    fs.writeFileSync(file, v, { mode: 0o600, flag: 'wx' });
    return v;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return fs.readFileSync(file); // another process won
    throw fromNodeError(e, `cannot write ${file}`);
  }
}

export function hostSecret(storeDir: string): Buffer {
  return readOrCreate(path.join(storeDir, 'host.key'), () => crypto.randomBytes(32));
}

export function tokenFile(storeDir: string, vm: string): string {
  return path.join(storeDir, 'vms', `${vm}.token`);
}

export function vmToken(storeDir: string, vm: string): string {
  return readOrCreate(tokenFile(storeDir, vm), () => Buffer.from(`${crypto.randomBytes(24).toString('base64url')}\n`)).toString().trim();
}

export function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a), y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}
