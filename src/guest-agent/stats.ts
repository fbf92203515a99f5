// `prism agent stats MOUNTPOINT`: each running agent answers on a Unix socket named after its
// mountpoint with one JSON line of its counters, then closes.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PrismError } from '../errors.js';
import type { CounterSnapshot } from './counters.js';

export interface AgentStats {
  mountpoint: string;
  volume: string;
  /** The metadata table the agent reads, or null when every LOOKUP and GETATTR is an RPC. */
  metaTable: string | null;
  /** How the agent reaches the host: 'tcp', or 'shared memory, ' and how it waits for replies (futex, polling, doorbell (pci), doorbell (eventfd)). */
  transport: string;
  /** Whether the kernel's writeback cache is on (`--writeback-cache`, or chosen by 'auto'). */
  writebackCache: boolean;
  counters: CounterSnapshot;
}

/** Root's agents under /run/prism, others' in their runtime directory. */
export function statsSocket(mountpoint: string): string {
  const dir = process.getuid?.() === 0 ? '/run/prism' : path.join(process.env.XDG_RUNTIME_DIR ?? os.tmpdir(), `prism-${process.getuid?.() ?? 0}`);
  const id = crypto.createHash('sha256').update(path.resolve(mountpoint)).digest('hex').slice(0, 16);
  return path.join(dir, `agent-${id}.sock`);
}

/** Answer stats requests until the returned function is called. */
export function serveStats(mountpoint: string, stats: () => AgentStats): () => void {
  const file = statsSocket(mountpoint);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.rmSync(file, { force: true });
  const srv = net.createServer((s) => s.end(`${JSON.stringify(stats())}\n`));
  srv.listen(file);
  srv.unref();
  return () => { srv.close(); fs.rmSync(file, { force: true }); };
}

export function queryStats(mountpoint: string): Promise<AgentStats> {
  const file = statsSocket(mountpoint);
  return new Promise((resolve, reject) => {
    let text = '';
    const s = net.connect(file);
    s.setEncoding('utf8');
    s.on('data', (d: string) => { text += d; });
    s.once('error', () => reject(new PrismError('ENOENT', `no agent serves ${path.resolve(mountpoint)}`)));
    s.once('end', () => {
      try { resolve(JSON.parse(text) as AgentStats); } catch { reject(new PrismError('EIO', 'the agent sent malformed stats')); }
    });
  });
}
