// The ivshmem-doorbell device in a QEMU guest (docs/doorbell.md): the agent rings the host by writing
// its Doorbell register (BAR 0), and sleeps until the host's interrupt arrives. QEMU's doorbell device
// interrupts only through MSI-X, which user space gets from VFIO: the device is bound to vfio-pci
// (the guest needs an IOMMU: `prism qemu-args` gives the VM an emulated one) and its vector 0 signals
// an eventfd. Registers, from QEMU's ivshmem spec: 8 IVPosition (our peer id: >0 once QEMU got it
// from the host's server), 12 Doorbell ((peer << 16) | vector).
import fs from 'node:fs';
import path from 'node:path';
import { PrismError } from '../errors.js';
import { doorbellAddon } from '../native/doorbell.js';
import { map, unmap } from '../native/memory.js';
import { HOST_PEER } from '../vrpc/ivshmem-server.js';
import type { PeerDoorbell } from '../vrpc/ivshmem-peer.js';

const IV_POSITION = 2;
const DOORBELL = 3;
const VFIO_DRIVER = '/sys/bus/pci/drivers/vfio-pci';
/** VFIO's region indexes (linux/vfio.h): BAR 0 and PCI config space. */
const BAR0 = 0;
const CONFIG = 7;
const PCI_COMMAND = 4;
const PCI_COMMAND_MASTER = 0x4;

/** Whether the ivshmem device at `device` (its sysfs directory) has a doorbell: its MSI-X BAR 1. */
export function hasDoorbell(device: string): boolean {
  try {
    const bar1 = fs.readFileSync(path.join(device, 'resource'), 'utf8').split('\n')[1]!.trim().split(/\s+/);
    return BigInt(bar1[1]!) > BigInt(bar1[0]!);
  } catch {
    return false;
  }
}

/** Open the doorbell of the ivshmem device at `device`. */
export function openPciDoorbell(device: string): PeerDoorbell {
  const a = doorbellAddon.need();
  if (!hasDoorbell(device)) throw new PrismError('ENODEV', `${device}: an ivshmem-plain device, without a doorbell`);
  const slot = path.basename(fs.realpathSync(device));
  bindVfio(device, slot);
  const group = path.basename(fs.realpathSync(path.join(device, 'iommu_group')));
  const v = a.vfioOpen(`/dev/vfio/${group}`, slot);
  let bar: ArrayBuffer | undefined;
  let efd = -1;
  const release = () => {
    if (bar) unmap(bar);
    if (efd >= 0) a.close(efd);
    for (const fd of [v.device, v.group, v.container]) a.close(fd);
  };
  try {
    const r0 = v.regions[BAR0]!;
    if (!r0.mmap || r0.size < 16) throw new PrismError('ENODEV', `${device}: BAR 0 cannot be mapped through VFIO`);
    bar = map(v.device, { offset: r0.offset, size: r0.size });
    const regs = new Int32Array(bar, 0, 4);
    const id = Atomics.load(regs, IV_POSITION);
    if (id <= HOST_PEER) throw new PrismError('ENODEV', `${device}: not connected to the host's ivshmem server (IVPosition ${id})`);
    // MSI-X messages are memory writes by the device: without bus mastering they are dropped.
    const cfg = v.regions[CONFIG]!.offset;
    const cmd = Buffer.alloc(2);
    fs.readSync(v.device, cmd, 0, 2, cfg + PCI_COMMAND);
    cmd.writeUInt16LE(cmd.readUInt16LE() | PCI_COMMAND_MASTER);
    fs.writeSync(v.device, cmd, 0, 2, cfg + PCI_COMMAND);
    efd = a.eventfd();
    a.vfioMsix(v.device, 0, efd);
    return {
      kind: 'doorbell (pci)',
      connectedNow: false,
      ring() {
        Atomics.store(regs, DOORBELL, (HOST_PEER << 16) | 0);
      },
      wait(ms) {
        // MSI-X is an edge: nothing to acknowledge, rings while we ran are counted in the eventfd.
        return a.waitReadable(efd, ms) && a.drain(efd) > 0;
      },
      close: release,
    };
  } catch (e) {
    release();
    throw e;
  }
}

/**
 * Bind the device to vfio-pci if it is not (root; the vfio-pci module must be loaded). Only this
 * device (driver_override), not every ivshmem device: the metadata table's stays as it is.
 */
function bindVfio(device: string, slot: string): void {
  const driver = path.join(device, 'driver');
  if (fs.existsSync(driver) && path.basename(fs.realpathSync(driver)) === 'vfio-pci') return;
  if (!fs.existsSync(VFIO_DRIVER)) throw new PrismError('ENODEV', 'the vfio-pci driver is not loaded (modprobe vfio-pci; the VM needs an IOMMU)');
  if (!fs.existsSync(path.join(device, 'iommu_group'))) throw new PrismError('ENODEV', `${device}: no IOMMU group (start the VM with -machine q35 -device intel-iommu)`);
  if (fs.existsSync(driver)) fs.writeFileSync(path.join(driver, 'unbind'), slot);
  fs.writeFileSync(path.join(device, 'driver_override'), 'vfio-pci');
  fs.writeFileSync('/sys/bus/pci/drivers_probe', slot);
  if (!fs.existsSync(driver) || path.basename(fs.realpathSync(driver)) !== 'vfio-pci') throw new PrismError('ENODEV', `${device}: vfio-pci did not take the device`);
}
