// Mounting a FUSE file system through the FUSE addon (native/fuse -> prism_fuse.node): mount(2),
// umount2(2) and a readiness watch of /dev/fuse on the event loop. Loading never throws: ask available().
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { PrismError, fromNodeError, type PosixCode } from '../errors.js';
import { addonLoader, type AddonStatus } from './loader.js';

interface FuseAddon {
  mount(mountpoint: string, fsname: string, options: string, nonblock: boolean): number;
  watch(fd: number, cb: () => void): () => void;
  close(fd: number): void;
  mountUser(helper: string, mountpoint: string, options: string): number;
  umount(mountpoint: string, lazy: boolean): void;
  coarseNow(): [number, number];
}

const fuse = addonLoader<FuseAddon>('prism_fuse', 'PRISM_FUSE_ADDON', 'FUSE');

/**
 * The kernel's coarse wall clock, CLOCK_REALTIME_COARSE: what it stamps inode times with (Linux
 * `current_time`, for file systems without fine-grained timestamps, FUSE among them). Undefined
 * without the addon.
 */
export function coarseNow(): [number, number] | undefined {
  return fuse.load()?.coarseNow();
}

/** Whether the addon can be used here, and if not, why. Never throws. */
export function available(): AddonStatus {
  return fuse.status();
}

/**
 * Open /dev/fuse (non-blocking) and mount it on `mountpoint`; returns the fd. Root calls mount(2)
 * (type fuse.prism); anyone else goes through the setuid fusermount3 (type fuse.prism too, with
 * allow_other only if /etc/fuse.conf has user_allow_other).
 */
export function mount(mountpoint: string, fsname: string, options = ''): number {
  if (process.getuid?.() === 0) return fuse.need().mount(mountpoint, fsname, options, true);
  const opts = [`fsname=${fsname}`, 'subtype=prism', 'default_permissions', 'max_read=1048576'];
  if (userAllowOther()) opts.push('allow_other');
  if (options) opts.push(options);
  try {
    return fuse.need().mountUser(fusermount(), mountpoint, opts.join(','));
  } catch (e) {
    throw new PrismError('EPERM', `${(e as Error).message}: is ${mountpoint} yours, and /dev/fuse usable by you?`);
  }
}

const HELPERS = ['/usr/bin/fusermount3', '/bin/fusermount3'];

function fusermount(): string {
  const found = HELPERS.find((h) => fs.existsSync(h));
  if (!found) throw new PrismError('EPERM', 'mounting as a user needs fusermount3 (package fuse3)');
  return found;
}

function userAllowOther(): boolean {
  try {
    return /^\s*user_allow_other\s*$/m.test(fs.readFileSync('/etc/fuse.conf', 'utf8'));
  } catch {
    return false;
  }
}

/** Call `cb` on the event loop whenever the fd is readable; returns a function that stops watching. */
export function watch(fd: number, cb: () => void): () => void {
  return fuse.need().watch(fd, cb);
}

/** Unmount: umount2(2) as root, `fusermount3 -u` otherwise. Throws a PrismError (EBUSY, EINVAL, ENOENT, EIO). */
export function umount(mountpoint: string, lazy = false): void {
  if (process.getuid?.() === 0) {
    try { fuse.need().umount(mountpoint, lazy); } catch (e) { throw fromNodeError(e); } // the addon's errno
    return;
  }
  const r = spawnSync(fusermount(), ['-u', ...(lazy ? ['-z'] : []), mountpoint], { encoding: 'utf8' });
  if (r.status === 0) return;
  const why = (r.stderr || r.error?.message || '').trim();
  // fusermount3 says why in words only: the codes umount2(2) would have given.
  const code: PosixCode = /busy/i.test(why) ? 'EBUSY' : /not found|not mounted|invalid/i.test(why) ? 'EINVAL' : /no such/i.test(why) ? 'ENOENT' : 'EIO';
  throw new PrismError(code, `umount: ${why}`);
}

/** Close an fd that mount() returned. */
export function close(fd: number): void {
  fuse.need().close(fd);
}

/** Whether something is mounted on `dir` (an absolute path, as /proc/self/mounts writes it). */
export function isMounted(dir: string): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}
