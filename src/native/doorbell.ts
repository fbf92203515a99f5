// The doorbell addon (native/doorbell -> prism_doorbell.node): eventfds, a Unix socket that passes
// descriptors (QEMU's ivshmem server protocol), a timed wait on a descriptor and a watch of one on the
// event loop. vrpc/ivshmem-server.ts (host) and guest-agent/pci-doorbell.ts (guest) use it.
import { addonLoader, type AddonStatus } from './loader.js';

export interface DoorbellAddon {
  eventfd(): number;
  /** Add 1 to an eventfd's counter. */
  signal(fd: number): void;
  /** An eventfd's counter, reset to 0 (0 when nothing came). */
  drain(fd: number): number;
  /** A non-blocking Unix stream socket listening at `path`. */
  listen(path: string): number;
  /** A connection, or -1 when none waits. */
  accept(fd: number): number;
  /** A non-blocking Unix stream socket connected to `path`. */
  connect(path: string): number;
  /** One 8-byte little-endian message, with a descriptor when passFd >= 0. */
  send(fd: number, value: bigint, passFd: number): void;
  /** The next message and its descriptor (-1: none), null when none waits; throws EPIPE at the end. */
  receive(fd: number): [bigint, number] | null;
  /** Whether `fd` is readable within timeoutMs (negative: no limit). */
  waitReadable(fd: number, timeoutMs: number): boolean;
  /** Call back on the event loop while `fd` is readable; returns stop(). Does not keep the loop alive. */
  watch(fd: number, callback: () => void): () => void;
  /** A PCI device through VFIO (`group` is /dev/vfio/N): its descriptors and its regions by VFIO index (0-5 BARs, 7 config space). */
  vfioOpen(group: string, bdf: string): VfioDevice;
  /** The device's MSI-X `vector` signals `eventfd`. */
  vfioMsix(device: number, vector: number, eventfd: number): void;
  close(fd: number): void;
}

export interface VfioDevice {
  container: number;
  group: number;
  device: number;
  regions: Array<{ offset: number; size: number; mmap: boolean }>;
}

export const doorbellAddon = addonLoader<DoorbellAddon>('prism_doorbell', 'PRISM_DOORBELL_ADDON', 'the ivshmem doorbell');

/** Whether doorbells can be used here, and if not, why (guests are then polled). */
export function doorbellAvailable(): AddonStatus {
  return doorbellAddon.status();
}
