// The agent's cache notifier thread: follows the change log in the VM's metadata table and tells the
// kernel to forget the entries and attributes other VMs (or the host) changed, then acknowledges in
// the VRPC region, where the host waits for it before it answers the change (docs/metadata-share.md).
// Its own thread, so it never waits behind a FUSE request, nor a FUSE request behind it.
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Region, futexWait, futexWake, map, META_APPLIED_OFFSET, unmap } from '../ring/index.js';
import { attachMetaTable } from '../metadata-share/file.js';
import { LOG_HEAD_OFFSET } from '../metadata-share/table.js';
import { log } from '../log.js';
import { AgentCounters } from './counters.js';
import { encodeInvalEntry, encodeInvalInode } from './fuse/protocol.js';
import { nodeIdOf } from './vrpc-fs.js';

export interface NotifierData {
  metaFile: string;
  regionFile: string;
  /** The mount's /dev/fuse descriptor (descriptors are the process's, shared by its threads). */
  fuseFd: number;
  volumeId: number;
  rootIno: number;
  /** How long the kernel may cache an answer: the host waits at most this long for an acknowledgement. */
  leaseMs: number;
  /** futex: the host shares our kernel and wakes us; poll: a VM guest, so look every millisecond. */
  wait: 'futex' | 'poll';
  counters: SharedArrayBuffer;
  /** Int32 [stop]: set (and notified) by the agent when unmounting. */
  control: SharedArrayBuffer;
}

const d = workerData as NotifierData;
const counters = new AgentCounters(d.counters);
const control = new Int32Array(d.control);
const meta = attachMetaTable(d.metaFile);
const regionBuffer = map(d.regionFile, {});
const region = Region.attach(regionBuffer);

/** Tell the kernel; a node or name it no longer caches is not an error. */
function notify(b: Buffer): void {
  try {
    fs.writeSync(d.fuseFd, b);
    counters.add('invalidations');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') log.debug({ err: (e as Error).message }, 'cache invalidation refused');
  }
}

function acknowledge(applied: number): void {
  region.setMetaLease(d.leaseMs); // again each time: a restarted host has cleared it
  region.setMetaApplied(applied);
  // A host on our kernel sleeps on this word; across a VM boundary (a PCI BAR) nothing can be woken.
  if (d.wait === 'futex') futexWake(regionBuffer, META_APPLIED_OFFSET, 1);
}

/** Sleep until the host appends to the log (a futex on one machine) or a poll interval passes (in a VM). */
function sleep(head: number): void {
  if (d.wait === 'futex') futexWait(meta.buffer, LOG_HEAD_OFFSET, head | 0, 200);
  else Atomics.wait(control, 0, 0, 1);
}

// Changes made before this mount are nothing the kernel has cached: start at the head.
let applied = meta.table.logHead;
acknowledge(applied);
parentPort!.postMessage({ ready: true });
while (Atomics.load(control, 0) === 0) {
  const head = meta.table.logHead;
  for (; applied !== head; applied = (applied + 1) >>> 0) {
    const c = meta.table.readLog(applied);
    if (c === 'lost') { counters.add('logRecordsLost'); continue; }
    if (c.volume !== d.volumeId) continue;
    if (c.kind === 'entry') notify(encodeInvalEntry(nodeIdOf(c.dir, d.rootIno), c.name));
    else notify(encodeInvalInode(nodeIdOf(c.ino, d.rootIno), c.kind === 'data'));
  }
  acknowledge(applied);
  sleep(head);
}
region.setMetaLease(0); // unmounted: nothing to wait for
meta.close();
unmap(regionBuffer);
