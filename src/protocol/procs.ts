// The VRPC procedures: every NFSv3 procedure (same numbers as RFC 1813) plus what a POSIX mount
// needs beyond it. Arguments and results are positional CBOR arrays, documented in docs/protocol.md.

export const PROTOCOL_VERSION = 2;

export const enum Proc {
  NULL = 0,
  GETATTR = 1,
  SETATTR = 2,
  LOOKUP = 3,
  ACCESS = 4,
  READLINK = 5,
  READ = 6,
  WRITE = 7,
  CREATE = 8,
  MKDIR = 9,
  SYMLINK = 10,
  MKNOD = 11,
  REMOVE = 12,
  RMDIR = 13,
  RENAME = 14,
  LINK = 15,
  READDIR = 16,
  READDIRPLUS = 17,
  FSSTAT = 18,
  FSINFO = 19,
  PATHCONF = 20,
  COMMIT = 21,
  // Beyond NFSv3
  ATTACH = 64, // volume name -> root handle (the MOUNT protocol's job in NFS)
  GETXATTR = 65,
  SETXATTR = 66,
  LISTXATTR = 67,
  REMOVEXATTR = 68,
  OPEN = 69, // pins an inode so an unlinked open file lives until CLOSE
  CLOSE = 70,
  FALLOCATE = 71,
  SEEK = 72, // SEEK_DATA / SEEK_HOLE
  COPY_RANGE = 73, // served by sharing blocks, no data copied
}

export const PROC_NAMES: Record<number, string> = {
  0: 'NULL', 1: 'GETATTR', 2: 'SETATTR', 3: 'LOOKUP', 4: 'ACCESS', 5: 'READLINK', 6: 'READ', 7: 'WRITE',
  8: 'CREATE', 9: 'MKDIR', 10: 'SYMLINK', 11: 'MKNOD', 12: 'REMOVE', 13: 'RMDIR', 14: 'RENAME', 15: 'LINK',
  16: 'READDIR', 17: 'READDIRPLUS', 18: 'FSSTAT', 19: 'FSINFO', 20: 'PATHCONF', 21: 'COMMIT',
  64: 'ATTACH', 65: 'GETXATTR', 66: 'SETXATTR', 67: 'LISTXATTR', 68: 'REMOVEXATTR', 69: 'OPEN', 70: 'CLOSE',
  71: 'FALLOCATE', 72: 'SEEK', 73: 'COPY_RANGE',
};

/** Largest READ/WRITE payload a peer may ask for. */
export const MAX_IO = 1 << 20;
/** Largest encoded message either side accepts. */
export const MAX_MESSAGE = MAX_IO + 64 * 1024;
export const MAX_HANDLE = 64;
