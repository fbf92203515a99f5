// Making special files (FIFOs, character and block devices, unix sockets) with mknod(2), through the
// files addon (native/files -> prism_files.node): Node has no binding for it.
import { addonLoader, type AddonStatus } from './loader.js';

interface FilesAddon {
  mknod(file: string | Buffer, mode: number, dev: number): void;
}

const files = addonLoader<FilesAddon>('prism_files', 'PRISM_FILES_ADDON', 'making FIFOs, device nodes and sockets');

/**
 * mknod(2): `mode` holds the type (S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK) and permission bits (the
 * umask applies); `dev` is the device number as stat reports it (glibc makedev), 0 for others.
 * A socket file made so has no listener, like one whose server exited. Throws an Error with errno and
 * code, as fs does (EEXIST, EPERM for devices without CAP_MKNOD...), or PrismError ENOSYS when the addon is missing.
 */
export function mknod(file: string | Buffer, mode: number, dev = 0): void {
  files.need().mknod(file, mode, dev);
}

/** Whether the files addon loads here, and if not, why. */
export function available(): AddonStatus {
  return files.status();
}
