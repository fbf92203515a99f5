// VRPC's public surface: one client API over either channel.
import { connectTcp, VrpcClient, type ClientOptions } from './client.js';
import { connectShm, type ShmChannelOptions } from './shm-channel.js';

export type ConnectOptions =
  | ({ shm: string; vm: string } & ShmChannelOptions & ClientOptions)
  | ({ tcp: string; token: string; vm: string } & ClientOptions);

/** Connect to the host over a shared-memory region ({ shm: path }) or TCP ({ tcp: "host:port", token }). */
export function connect(opts: ConnectOptions): Promise<VrpcClient> {
  if ('shm' in opts) return connectShm(opts.shm, opts.vm, opts);
  return connectTcp(opts.tcp, opts.vm, opts.token, opts);
}

export { VrpcClient } from './client.js';
export { SyncShmClient } from './shm-sync-client.js';
export { shmPath, REGION_SIZE } from './shm-region.js';
export type { Channel } from './channel.js';
