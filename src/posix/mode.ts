// File types and mode bits as st_mode holds them (the same numbers on Linux, in the store and on the wire).
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_IXGRP = 0o0010;

/** The file types mknod(2) makes (0 means a regular file, as in mknod(2)). */
export function isNodeType(type: number): boolean {
  return type === 0 || type === S_IFREG || type === S_IFCHR || type === S_IFBLK || type === S_IFIFO || type === S_IFSOCK;
}
/** Whether a mode's type bits name a file type that exists. */
export function isFileType(mode: number): boolean {
  const type = mode & S_IFMT;
  return type !== 0 && (isNodeType(type) || type === S_IFDIR || type === S_IFLNK);
}

export function isDir(mode: number): boolean { return (mode & S_IFMT) === S_IFDIR; }
export function isReg(mode: number): boolean { return (mode & S_IFMT) === S_IFREG; }
export function isLnk(mode: number): boolean { return (mode & S_IFMT) === S_IFLNK; }

/**
 * The mode and group of a node made in a directory: a set-group-ID directory gives its group to what
 * is made in it, and its bit to subdirectories (as ext4). The store makes nodes by it, and the agent
 * predicts a posted create's attributes by it.
 */
export function madeIn(dirMode: number, dirGid: number, mode: number, gid: number): { mode: number; gid: number } {
  if (!(dirMode & S_ISGID)) return { mode, gid };
  return { mode: isDir(mode) ? mode | S_ISGID : mode, gid: dirGid };
}
