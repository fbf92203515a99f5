// A volume served by a real host process and mounted by a real agent process, over shared memory or
// TCP, torn down when the test ends.
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { mountAgent, type Agent } from './agent.js';
import { prism, startHost, type RunningHost } from './host.js';
import { tmpDir } from './tmp.js';

export type TransportName = 'shm' | 'tcp';
let serial = 0;

export interface MountedVolume {
  store: string; vm: string; host: RunningHost; agent: Agent; mp: string; dir: string; region: string;
  /** Start the host again (after host.stop()) with the same store, VM and addresses. */
  restartHost(): Promise<void>;
  /**
   * Unmount and mount again with the same arguments: a kernel that has forgotten every name, attribute
   * and page of this mount. (Not `echo 2 > /proc/sys/vm/drop_caches`: that drops every mount's, and
   * tests running beside this one count what their kernel kept.)
   */
  remountAgent(): Promise<void>;
}

export interface MountOptions {
  agentArgs?: string[];
  /** Also listen on this Unix socket, and mount through it when the transport is TCP (survives a host restart). */
  unixSocket?: boolean;
  /** A quota for the volume (bytes, as `prism volume create --quota` takes it). */
  quota?: string;
}

/** `t` only holds the teardown: a test's context, or a list a test file empties after its last test. */
export async function mountedVolume(t: Pick<ExecutionContext, 'teardown'>, transport: TransportName, o: MountOptions = {}): Promise<MountedVolume> {
  const dir = tmpDir(t);
  fs.chmodSync(dir, 0o755); // unprivileged users in the tests must reach the mount
  const store = path.join(dir, 'store');
  const vm = `t${process.pid}x${serial++}`;
  const r = prism(store, ['volume', 'create', 'vol', ...(o.quota ? ['--quota', o.quota] : [])]);
  if (r.code !== 0) throw new Error(r.err);
  const sock = path.join(dir, 'host-vrpc.sock');
  const hostArgs = ['--vm', `${vm}=vol`, ...(o.unixSocket ? ['--tcp', `unix:${sock}`] : [])];
  const host = await startHost(store, hostArgs);
  const region = `/dev/shm/prism-${vm}`;
  const mp = path.join(dir, 'mnt');
  fs.mkdirSync(mp);
  const address = o.unixSocket ? `unix:${sock}` : `127.0.0.1:${host.port}`;
  const how = transport === 'shm' ? ['--shm', region] : ['--tcp', address, '--token-file', path.join(store, 'vms', `${vm}.token`)];
  const agentArgs = ['--volume', 'vol', ...how, ...(o.agentArgs ?? [])];
  let agent: Agent;
  try {
    agent = await mountAgent(store, agentArgs, mp);
  } catch (e) {
    await host.stop();
    throw e;
  }
  const m: MountedVolume = {
    store, vm, host, agent, mp, dir, region,
    restartHost: async () => { m.host = await startHost(store, hostArgs); },
    remountAgent: async () => { await m.agent.umount(); m.agent = await mountAgent(store, agentArgs, mp); },
  };
  t.teardown(async () => {
    await m.agent.umount();
    await m.host.stop();
    fs.rmSync(region, { force: true });
    fs.rmSync(`${region}-meta`, { force: true });
    fs.rmSync(`${region}.ivshmem`, { force: true });
  });
  return m;
}
