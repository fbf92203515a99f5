// `--pci auto` finds the ivshmem device as a QEMU guest shows it in sysfs (vendor 0x1af4, device
// 0x1110, memory in resource2). A fake sysfs tree stands in for the guest's, with resource2 a Prism
// region made by the host code.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { barHolding, ivshmemBars } from '../../src/guest-agent/pci.js';
import { openMetaTable } from '../../src/metadata-share/file.js';
import { nativeAvailable } from '../../src/native/ivshmem.js';
import { openRegion } from '../../src/vrpc/shm-region.js';
import { tmpDir } from '../helpers/tmp.js';

function device(root: string, slot: string, vendor: string, dev: string, bar?: string): void {
  const d = path.join(root, slot);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'vendor'), `${vendor}\n`);
  fs.writeFileSync(path.join(d, 'device'), `${dev}\n`);
  if (bar) fs.symlinkSync(bar, path.join(d, 'resource2'));
}

const native = nativeAvailable();
(native.ok ? test : test.skip)('ivshmem devices are found by vendor and device id, in bus order, and their BAR maps as a region', (t) => {
  const dir = tmpDir(t);
  const root = path.join(dir, 'devices');
  const region = path.join(dir, 'region');
  openRegion(region, true).close();
  device(root, '0000:00:05.0', '0x1af4', '0x1110', region);
  device(root, '0000:00:03.0', '0x1af4', '0x1110', path.join(dir, 'other')); // resource2 dangling: skipped
  device(root, '0000:00:02.0', '0x8086', '0x100e'); // a NIC
  device(root, '0000:00:04.0', '0x1af4', '0x1000'); // virtio-net, same vendor
  const bars = ivshmemBars(root);
  t.deepEqual(bars, [path.join(root, '0000:00:05.0', 'resource2')]);
  const r = openRegion(bars[0]!, false);
  t.true(r.region.generation >= 1);
  r.close();
  t.deepEqual(ivshmemBars(path.join(dir, 'none')), []);
});

(native.ok ? test : test.skip)('with the metadata table as a second device, the region and the table are told apart by their headers', (t) => {
  const dir = tmpDir(t);
  const root = path.join(dir, 'devices');
  const region = path.join(dir, 'region');
  const meta = path.join(dir, 'meta');
  openRegion(region, true).close();
  openMetaTable(meta, 1 << 20).close();
  device(root, '0000:00:04.0', '0x1af4', '0x1110', meta); // the table comes first in bus order
  device(root, '0000:00:05.0', '0x1af4', '0x1110', region);
  const bars = ivshmemBars(root);
  t.is(barHolding('region', bars), path.join(root, '0000:00:05.0', 'resource2'));
  t.is(barHolding('meta', bars), path.join(root, '0000:00:04.0', 'resource2'));
  t.is(barHolding('meta', [bars[1]!]), undefined, 'no table: the agent asks the host for everything');
});
if (!native.ok) console.error(`pci.test: skipped: ${native.reason}`);
