// The POSIX conformance checks against a Volume directly: each operation is the store call the host
// makes for it (volume-fs.ts), compared with the local file system. Checks whose answer is the
// kernel's (permission checks, following symlinks) run only on the mounts.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store/store.js';
import { outcome } from './posix-fs.js';
import { registerChecks, type Backend } from './macro.js';
import { VolumeFs, type Caller } from './volume-fs.js';

const ROOT: Caller = { uid: 0, gid: 0 };
const NOBODY: Caller = { uid: 65534, gid: 65534 };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prism-conformance-'));
const store = Store.open(path.join(dir, 'store'));
const vol = store.createVolume('vol');
test.after.always(() => {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

let serial = 0;
const backend: Backend = {
  name: 'Volume',
  kernel: false,
  run: async (check) => {
    const name = `check-${serial++}`;
    new VolumeFs(vol, vol.rootIno, ROOT).mkdir(name, 0o755);
    const ino = vol.lookup(vol.rootIno, name).ino;
    check.setup?.(new VolumeFs(vol, ino, ROOT));
    return outcome(() => check.run(new VolumeFs(vol, ino, check.as === 'nobody' ? NOBODY : ROOT)));
  },
};

registerChecks(backend);
