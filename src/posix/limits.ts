// Limits on what a file may hold: the store enforces them, the host validates requests against them
// before the store sees one, the agent may rely on them (docs/store-limits.md).

/** Largest file size (1 PiB): the store's block indexes stay exact in a double. */
export const MAX_FILE_SIZE = 2 ** 50;
/** Longest name of a directory entry, in bytes (NAME_MAX). */
export const MAX_NAME = 255;
/** Longest symlink target, in bytes. */
export const MAX_SYMLINK = 4095;
/** Largest extended attribute value, in bytes (XATTR_SIZE_MAX on Linux). */
export const MAX_XATTR_VALUE = 64 * 1024;
