// The POSIX conformance checks on a Prism mount over shared memory as mounted by default (LOOKUP and
// GETATTR answered from the metadata table; the writeback cache on where the kernel can prune), compared
// with the local file system.
import test from 'ava';
import { agentStats, fuseSkipReason } from '../helpers/agent.js';
import { registerChecks } from './macro.js';
import { mountBackend } from './mount-backend.js';

const backend = mountBackend('FUSE over shm', 'shm');
const skip = fuseSkipReason();
registerChecks(backend, skip);

// The checks above are only about the table if the agent used it.
(skip ? test.skip : test)('FUSE over shm: the metadata table answered lookups during the checks', async (t) => {
  const m = await backend.mount();
  const local = async () => { const s = await agentStats(m.agent); t.truthy(s.metaTable); return s.counters.lookupsLocal + s.counters.getattrsLocal; };
  // The checks run beside this test: wait for them to make the kernel ask.
  for (let i = 0; i < 100 && (await local()) === 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.true((await local()) > 0);
});
