// Typed access to the FUSE addon (native/fuse -> build/Release/prism_fuse.node): mount(2),
// umount2(2) and a readiness watch of /dev/fuse on the event loop. Loading never throws: ask available().
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface Addon {
  mount(mountpoint: string, fsname: string, options: string, nonblock: boolean): number;
  watch(fd: number, cb: () => void): () => void;
  close(fd: number): void;
  umount(mountpoint: string, lazy: boolean): void;
}

let addon: Addon | undefined;
let failure: string | undefined;

function addonPath(): string {
  if (process.env.PRISM_FUSE_ADDON) return path.resolve(process.env.PRISM_FUSE_ADDON);
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp')) || fs.existsSync(path.join(dir, 'package.json'))) break;
    dir = path.dirname(dir);
  }
  return path.join(dir, 'build', 'Release', 'prism_fuse.node');
}

function load(): Addon | undefined {
  if (addon || failure) return addon;
  const file = addonPath();
  if (process.platform !== 'linux') failure = `FUSE needs Linux (this is ${process.platform})`;
  else if (!fs.existsSync(file)) failure = `the FUSE addon is not built (${file} is missing; run npm run build:native)`;
  else {
    try {
      addon = createRequire(import.meta.url)(file) as Addon;
    } catch (e) {
      failure = `the FUSE addon failed to load: ${(e as Error).message}`;
    }
  }
  return addon;
}

/** Whether the addon can be used here, and if not, why. Never throws. */
export function available(): { ok: true } | { ok: false; reason: string } {
  try {
    return load() ? { ok: true } : { ok: false, reason: failure ?? 'unknown' };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

function need(): Addon {
  const a = load();
  if (!a) throw new Error(`FUSE is unavailable: ${failure}`);
  return a;
}

/** Open /dev/fuse (non-blocking) and mount it on `mountpoint` (type fuse.prism); returns the fd. Root only. */
export function mount(mountpoint: string, fsname: string, options = ''): number {
  return need().mount(mountpoint, fsname, options, true);
}

/** Call `cb` on the event loop whenever the fd is readable; returns a function that stops watching. */
export function watch(fd: number, cb: () => void): () => void {
  return need().watch(fd, cb);
}

export function umount(mountpoint: string, lazy = false): void {
  need().umount(mountpoint, lazy);
}

/** Close an fd that mount() returned. */
export function close(fd: number): void {
  need().close(fd);
}
