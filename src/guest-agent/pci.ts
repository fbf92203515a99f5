// Finding the host's shared memory in a QEMU guest: ivshmem-plain devices (PCI 1af4:1110) whose BAR 2
// (sysfs `resource2`, mappable by root) holds a Prism region, or the VM's metadata table.
import fs from 'node:fs';
import path from 'node:path';
import { log } from '../log.js';
import { attachMetaTable } from '../metadata-share/file.js';
import { openRegion } from '../vrpc/shm-region.js';

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

/** The first of `bars` that holds a VRPC region or a metadata table (told apart by their headers). */
export function barHolding(what: 'region' | 'meta', bars: string[]): string | undefined {
  for (const bar of bars) {
    try {
      if (what === 'region') openRegion(bar, false).close();
      else attachMetaTable(bar).close();
      return bar;
    } catch (e) {
      log.debug({ bar, err: (e as Error).message }, `no ${what} here`);
    }
  }
  return undefined;
}
