// Finding the VRPC region in a QEMU guest: an ivshmem-plain device (PCI 1af4:1110) whose BAR 2
// (sysfs `resource2`, mappable by root) holds a Prism region.
import fs from 'node:fs';
import path from 'node:path';

const IVSHMEM_VENDOR = '0x1af4';
const IVSHMEM_DEVICE = '0x1110';

/** Every ivshmem device's BAR 2 file, in bus order. */
export function ivshmemBars(root = '/sys/bus/pci/devices'): string[] {
  let devices: string[];
  try {
    devices = fs.readdirSync(root).sort();
  } catch {
    return [];
  }
  const read = (d: string, f: string) => { try { return fs.readFileSync(path.join(root, d, f), 'utf8').trim(); } catch { return ''; } };
  return devices
    .filter((d) => read(d, 'vendor') === IVSHMEM_VENDOR && read(d, 'device') === IVSHMEM_DEVICE)
    .map((d) => path.join(root, d, 'resource2'))
    .filter((f) => fs.existsSync(f));
}
