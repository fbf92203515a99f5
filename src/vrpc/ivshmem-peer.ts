// A client's side of a VM's ivshmem doorbell (docs/doorbell.md). In a QEMU guest it is the
// `ivshmem-doorbell` device (guest-agent/pci-doorbell.ts); an agent on the host's own kernel connects
// to the VM's ivshmem server as QEMU does (connectIvshmem) and rings and waits with the eventfds it
// gets. Either way the client rings the host when the host's sleeping flag says SLEEP_DOORBELL, and
// sleeps until the host rings it (an InterruptLine for ring/wait.ts).
import { PrismError } from '../errors.js';
import { doorbellAddon } from '../native/doorbell.js';
import type { InterruptLine } from '../ring/index.js';
import { HOST_PEER } from './ivshmem-server.js';

export interface PeerDoorbell extends InterruptLine {
  /** What `prism agent stats` says the agent waits with. */
  readonly kind: 'doorbell (pci)' | 'doorbell (eventfd)';
  /**
   * Whether opening it connected to this host's server (an agent on the host's kernel). A guest's
   * device was connected by QEMU when the VM started, perhaps to a host that since restarted: the
   * region's `host.doorbell` word says whether this host serves it.
   */
  readonly connectedNow: boolean;
  /** Ring the host (peer 0, vector 0). */
  ring(): void;
  close(): void;
}

/** Connect to a VM's ivshmem server as a peer (as QEMU does) and take its eventfds: the host's and ours. */
export function connectIvshmem(socketPath: string, timeoutMs = 2000): PeerDoorbell {
  const a = doorbellAddon.need();
  const socket = a.connect(socketPath);
  const fds: number[] = [];
  let host = -1;
  let own = -1;
  try {
    const deadline = performance.now() + timeoutMs;
    const next = (): [bigint, number] => {
      for (;;) {
        const m = a.receive(socket);
        if (m) {
          if (m[1] >= 0) fds.push(m[1]);
          return m;
        }
        const left = deadline - performance.now();
        if (left <= 0 || !a.waitReadable(socket, left)) throw new PrismError('ETIMEDOUT', `${socketPath}: the ivshmem server did not answer`);
      }
    };
    const [version] = next();
    if (version !== 0n) throw new PrismError('EIO', `${socketPath}: ivshmem protocol ${version}, expected 0`);
    const [id] = next();
    const [shm, shmFd] = next();
    if (shm !== -1n || shmFd < 0) throw new PrismError('EIO', `${socketPath}: no shared memory from the ivshmem server`);
    while (own < 0) {
      const [peer, fd] = next();
      if (fd < 0) continue; // a peer gone: not the host
      if (peer === BigInt(HOST_PEER) && host < 0) host = fd;
      else if (peer === id) own = fd;
    }
    if (host < 0) throw new PrismError('EIO', `${socketPath}: the ivshmem server gave no host peer`);
    for (const fd of fds) if (fd !== host && fd !== own) a.close(fd);
  } catch (e) {
    for (const fd of fds) a.close(fd);
    a.close(socket);
    throw e;
  }
  return {
    kind: 'doorbell (eventfd)',
    connectedNow: true,
    ring() { a.signal(host); },
    wait(ms) { return a.waitReadable(own, ms) && a.drain(own) > 0; },
    close() { a.close(host); a.close(own); a.close(socket); },
  };
}
