// Preloaded into the guest agent (NODE_OPTIONS=--require) by steps.sh, only to diagnose and work
// around a failure this scenario found: the agent writes READ replies to /dev/fuse straight from the
// shared-memory ring (src/guest-agent/fuse/session.ts reply(): writevSync(fd, [header, body]) with
// body a view of the ring). In a QEMU guest the ring is a PCI BAR mapping (VM_IO|VM_PFNMAP): the
// kernel's /dev/fuse write pins the user pages (get_user_pages), which fails there, so writev gives
// EFAULT and the kernel ends the READ with EIO (the agent swallows the write error).
//   PRISM_SHIM_WRITEV=log   log failing writevs to stderr (the agent's --log file), change nothing
//   PRISM_SHIM_WRITEV=copy  copy every buffer first (what a fix in the agent would do for BAR rings)
'use strict';
const fs = require('fs');
const mode = process.env.PRISM_SHIM_WRITEV;
const writev = fs.writevSync;
fs.writevSync = function (fd, buffers, position) {
  if (mode === 'copy') return writev.call(fs, fd, buffers.map((b) => Buffer.from(b)), position);
  try {
    return writev.call(fs, fd, buffers, position);
  } catch (e) {
    process.stderr.write(`fuse-writev-shim: writev(fd ${fd}, ${buffers.map((b) => b.length).join(' + ')} bytes) failed: ${e.code} (${e.message})\n`);
    throw e;
  }
};
