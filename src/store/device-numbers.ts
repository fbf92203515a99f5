// Linux device numbers (dev_t) as exact doubles: tar headers and the export's mknod carry the major
// and minor numbers apart, the store keeps one rdev.

/** Linux dev_t from major and minor (glibc's gnu_dev_makedev), as an exact double. */
export function makedev(major: number, minor: number): number {
  const lo = ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0;
  const hi = (((minor >>> 20) & 0xfff) | (major & 0xfffff000)) >>> 0;
  return hi * 2 ** 32 + lo;
}
/** The major number of a dev_t. */
export function devMajor(dev: number): number {
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  return (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0;
}
/** The minor number of a dev_t. */
export function devMinor(dev: number): number {
  const lo = dev % 2 ** 32, hi = Math.floor(dev / 2 ** 32);
  return ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
}
