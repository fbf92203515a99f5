// The writeback cache is chosen before INIT from the kernel's release: only kernels that take
// FUSE_NOTIFY_PRUNE (Linux 6.18) get it by default (docs/agent.md, "Writeback cache").
import test from 'ava';
import { kernelTakesPrune } from '../../src/guest-agent/fuse/protocol.js';

test('kernel releases that take FUSE_NOTIFY_PRUNE', (t) => {
  for (const r of ['6.18.0', '6.18.44-fc-v1045', '6.19.1-arch1', '7.0.0']) t.true(kernelTakesPrune(r), r);
  for (const r of ['6.1.0-21-cloud-amd64', '6.17.9', '5.19.0', '4.18.0-553.el8', '', 'garbage']) t.false(kernelTakesPrune(r), r);
});
