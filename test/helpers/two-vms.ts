// Two VMs, a and b, on one volume, each with its own agent over shared memory and a metadata table,
// served by one real host process: what coherence tests need. Torn down when the test ends.
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { agentStats, mountAgent, type Agent } from './agent.js';
import { prism, startHost } from './host.js';
import { tmpDir } from './tmp.js';

/** Kernel entry and attribute timeouts of 30 s: a fresh answer after another VM's change can only come from an invalidation. */
export const LONG_CACHE = ['--attr-timeout', '30', '--entry-timeout', '30'];

export interface TwoVms { store: string; a: Agent; b: Agent }

/** Each agent mounted with `args[vm]` (e.g. LONG_CACHE, or ['--no-meta']); resolves once both notifiers listen. */
export async function twoVms(tt: ExecutionContext, args: Record<'a' | 'b', string[]>): Promise<TwoVms> {
  const dir = tmpDir(tt);
  const store = path.join(dir, 'store');
  const shm = fs.mkdtempSync('/dev/shm/prism-test-two-');
  tt.teardown(() => fs.rmSync(shm, { recursive: true, force: true }));
  if (prism(store, ['volume', 'create', 'vol']).code !== 0) throw new Error('volume create failed');
  // Coherence is tested, not the deadline: a loaded machine must not get an agent fenced.
  const host = await startHost(store, ['--shm-dir', shm, '--meta-ack-ms', '2000', '--vm', 'a=vol', '--vm', 'b=vol']);
  tt.teardown(async () => { await host.stop(); });
  const agents = {} as Record<'a' | 'b', Agent>;
  for (const vm of ['a', 'b'] as const) {
    const mp = path.join(dir, vm);
    fs.mkdirSync(mp);
    agents[vm] = await mountAgent(store, ['--shm', `${shm}/prism-${vm}`, '--volume', 'vol', ...args[vm]], mp);
    tt.teardown(() => agents[vm].umount());
    await agentStats(agents[vm]); // answers once its notifier listens
  }
  return { store, ...agents };
}
