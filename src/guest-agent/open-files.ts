// Open files and their pins on the host. An open file is pinned (OPEN) only when this agent is about
// to remove or replace a name, since that is when an open file could lose its last link on the host
// and be freed while still in use. Most files are opened and closed without ever being pinned: no RPC
// for either. The pin is let go (CLOSE) at the file's last release.
import { log } from '../log.js';
import type { Stubs } from '../protocol/stubs.js';
import type { NodeTable } from './node-table.js';

export class OpenFiles {
  /** Opens per node. */
  private readonly opens = new Map<bigint, number>();
  /** Nodes pinned on the host (OPEN sent, CLOSE due at the last release). */
  private readonly pinned = new Set<bigint>();

  constructor(private readonly nodes: NodeTable, private readonly rpc: Stubs) {}

  has(id: bigint): boolean {
    return this.opens.has(id);
  }

  opened(id: bigint): void {
    this.opens.set(id, (this.opens.get(id) ?? 0) + 1);
  }

  /** Before a REMOVE/RMDIR/RENAME: pin every open file not pinned yet (sent first, same channel). */
  pinAll(): void {
    for (const id of this.opens.keys()) {
      const node = this.nodes.get(id);
      if (!node || this.pinned.has(id)) continue;
      this.pinned.add(id);
      this.rpc.open(node.fh).catch((e: Error) => log.warn({ err: e.message }, 'OPEN failed'));
    }
  }

  /** One release of the node: at its last, the pin goes and so does the node if the kernel forgot it. */
  released(id: bigint): void {
    const n = this.opens.get(id) ?? 0;
    if (n > 1) { this.opens.set(id, n - 1); return; }
    this.opens.delete(id);
    const pinned = this.pinned.delete(id);
    const node = this.nodes.get(id);
    if (!node) return;
    if (pinned) {
      this.rpc.close(node.fh).catch((e: Error) => log.warn({ err: e.message }, 'CLOSE failed'));
    }
    this.nodes.closed(id);
  }
}
