// The agent's cache notifier thread: follows the change log in the VM's metadata table and tells the
// kernel to forget the entries and attributes other VMs (or the host) changed, then acknowledges in
// the VRPC region, where the host waits for it before it answers the change (docs/metadata-share.md).
// Its own thread, so it never waits behind a FUSE request, nor a FUSE request behind it.
// When the host has fenced this VM (it acknowledged too late), or log records were written over
// before they were applied, it makes the kernel forget what it may hold before acknowledging again.
import fs from 'node:fs';
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { futexWait } from '../native/futex.js';
import { map, unmap } from '../native/memory.js';
import { Region } from '../ring/index.js';
import { attachMetaTable } from '../metadata-share/file.js';
import { LOG_HEAD_OFFSET } from '../metadata-share/table.js';
import { log } from '../log.js';
import { AgentCounters } from './counters.js';
import { PRUNE_MAX, encodeIncEpoch, encodeInvalEntry, encodeInvalInode, encodePrune, kernelRelease, kernelTakesPrune } from './fuse/protocol.js';
import { nodeIdOf, type KernelCacheKeys } from './node-table.js';

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
  /** Int32 [stop, drop]: stop is set (and notified) by the agent when unmounting; drop by the I/O thread when it answered a DropRequest. */
  control: SharedArrayBuffer;
  /** To the I/O thread, which knows what the kernel may cache (DropRequest, answered with a DropReply). */
  port: MessagePort;
  /**
   * The kernel's writeback cache is on: it keeps its own size, mtime and ctime of every file it holds,
   * so a node another VM changed is also pruned (dropped unless in use) to be looked up afresh.
   */
  writebackCache: boolean;
}

/** Asked of the I/O thread: what the kernel may cache, to make it forget all of it. */
export interface DropRequest { drop: number }
export interface DropReply extends KernelCacheKeys { drop: number }
/**
 * From the I/O thread: names its kernel must forget (a posted create that failed: docs/agent.md).
 * Written here because the I/O thread must not block on a directory lock held for a request it serves.
 */
export interface ForgetRequest { forget: Array<[dir: bigint, name: Uint8Array]>; seq: number }
/** Answered to a ForgetRequest once the kernel was told. */
export interface ForgetReply { forgotten: number }

/** Forget what the I/O thread asks to; a DropReply is handed back. */
function fromIoThread(m: DropReply | ForgetRequest): DropReply | undefined {
  if (!('forget' in m)) return m;
  for (const [dir, name] of m.forget) {
    notify(encodeInvalEntry(dir, name));
    notify(encodeInvalInode(dir, true)); // its listing and attributes: the host's, again
  }
  d.port.postMessage({ forgotten: m.seq } satisfies ForgetReply);
  return undefined;
}

function takeForgets(): void {
  for (let m = receiveMessageOnPort(d.port); m; m = receiveMessageOnPort(d.port)) fromIoThread(m.message as DropReply | ForgetRequest);
}

const d = workerData as NotifierData;
const counters = new AgentCounters(d.counters);
const control = new Int32Array(d.control);
const meta = attachMetaTable(d.metaFile);
const regionBuffer = map(d.regionFile, {});
const region = Region.attach(regionBuffer);

/** Tell the kernel; a node or name it no longer caches is not an error. False if the kernel does not know the message. */
function notify(b: Buffer): boolean {
  try {
    fs.writeSync(d.fuseFd, b);
    counters.add('invalidations');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EINVAL') return false;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') log.debug({ err: (e as Error).message }, 'cache invalidation refused');
  }
  return true;
}

const isDotDot = (name: Uint8Array): boolean => name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;

/** Whether the kernel takes FUSE_NOTIFY_INC_EPOCH (one message drops every name); learnt at the first try. */
let epochs = true;
/** Whether to prune changed nodes: with the writeback cache, until the kernel refuses it once. */
let prunes = d.writebackCache;
/** The kernel keeps its own sizes and cannot be told to drop them: the host must keep other VMs off the volume. */
const keepsSizes = d.writebackCache && !kernelTakesPrune(kernelRelease());
let drops = 0;

/**
 * Make the kernel forget everything it may hold from this mount: every name (one epoch, or each name
 * the I/O thread handed out on kernels without epochs) and every node's attributes and pages. The I/O
 * thread lists them; this thread writes the notifications (an invalidation of pages may wait for a
 * read that the I/O thread must answer). False if the agent is stopping meanwhile.
 */
function dropKernelCache(): boolean {
  const seq = ++drops;
  d.port.postMessage({ drop: seq } satisfies DropRequest);
  let reply: DropReply | undefined;
  while (!reply) {
    if (Atomics.load(control, 0) !== 0) return false;
    const m = receiveMessageOnPort(d.port);
    const r = m && fromIoThread(m.message as DropReply | ForgetRequest);
    if (r && r.drop === seq) reply = r;
    else if (!m) Atomics.wait(control, 1, Atomics.load(control, 1), 100);
  }
  if (epochs) {
    epochs = notify(encodeIncEpoch());
    if (!epochs) log.info('the kernel has no FUSE_NOTIFY_INC_EPOCH (Linux < 6.16): names are invalidated one by one');
  }
  if (!epochs) for (const [parent, name] of reply.names) notify(encodeInvalEntry(parent, name));
  for (const node of reply.nodes) notify(encodeInvalInode(node, true));
  counters.add('cacheDrops');
  log.info({ nodes: reply.nodes.length, names: epochs ? 'epoch' : reply.names.length }, 'kernel cache dropped');
  return true;
}

/** The last fence of the table this agent recovered from (docs/metadata-share.md, "Fencing"). */
let fenceAck = 0;

function acknowledge(applied: number): void {
  region.setMetaLease(d.leaseMs); // again each time: a restarted host has cleared it
  // Applied before the fence's acknowledgement (the host reads them the other way round): a host that
  // sees the acknowledgement also sees the records applied with it, and does not fence us again.
  region.setMetaApplied(applied);
  region.setMetaFenceAck(fenceAck, d.wait === 'poll', keepsSizes);
  // A host on our kernel sleeps on this word; across a VM boundary (a PCI BAR) nothing can be woken.
  if (d.wait === 'futex') region.wakeMetaApplied();
}

/** Sleep until the host appends to the log (a futex on one machine) or a poll interval passes (in a VM). */
function sleep(head: number): void {
  if (d.wait === 'futex') futexWait(meta.buffer, LOG_HEAD_OFFSET, head | 0, 200);
  else Atomics.wait(control, 0, 0, 1);
}

// Changes made before this mount are nothing the kernel has cached: start at the head, and a fence
// left from before (a previous agent of this VM) is recovered from already.
let applied = meta.table.logHead;
if (meta.table.fenced) fenceAck = meta.table.fence;
acknowledge(applied);
parentPort!.postMessage({ ready: true });
while (Atomics.load(control, 0) === 0) {
  // The fence before the head: every record the host appended before fencing is then below `head`.
  const fence = meta.table.fence;
  const head = meta.table.logHead;
  let lost = 0;
  if (((head - applied) >>> 0) > meta.table.logRecords) { // far behind (stopped a long time): skip what is gone
    lost = ((head - applied) >>> 0) - meta.table.logRecords;
    applied = (head - meta.table.logRecords) >>> 0;
  }
  // Directories whose names changed: their listings (the kernel keeps them in the directory's pages,
  // FOPEN_CACHE_DIR) are dropped once per batch, whatever the number of names.
  const listings = new Set<bigint>();
  // Nodes whose attributes or data other VMs changed, pruned once per batch (writeback cache only).
  const prune = new Set<bigint>();
  for (; applied !== head; applied = (applied + 1) >>> 0) {
    const c = meta.table.readLog(applied);
    if (c === 'lost') { lost++; continue; }
    if (c.volume !== d.volumeId) continue;
    if (c.kind === 'entry') {
      const dir = nodeIdOf(c.dir, d.rootIno);
      if (!isDotDot(c.name)) notify(encodeInvalEntry(dir, c.name)); // the kernel keeps no dentry named ".."
      listings.add(dir);
    } else {
      const node = nodeIdOf(c.ino, d.rootIno);
      notify(encodeInvalInode(node, c.kind === 'data'));
      if (prunes) prune.add(node);
    }
  }
  for (const dir of listings) notify(encodeInvalInode(dir, true));
  if (prune.size > 0) {
    const ids = [...prune];
    for (let i = 0; prunes && i < ids.length; i += PRUNE_MAX) prunes = notify(encodePrune(ids.slice(i, i + PRUNE_MAX)));
    if (!prunes) log.warn('the kernel has no FUSE_NOTIFY_PRUNE (Linux < 6.18): with --writeback-cache, files other VMs change keep their old size here');
    else counters.add('prunes', ids.length);
  }
  // A change we never saw may be cached: forget everything before saying we are up to date.
  if (lost > 0) {
    counters.add('logRecordsLost', lost);
    if (!dropKernelCache()) break;
  }
  // Fenced: every record up to the fence is applied (or everything dropped): the kernel holds nothing stale.
  if ((fence & 1) === 1 && fence !== fenceAck) {
    fenceAck = fence;
    counters.add('fencesRecovered');
  }
  acknowledge(applied);
  takeForgets();
  sleep(head);
}
region.setMetaLease(0); // unmounted: nothing to wait for
meta.close();
unmap(regionBuffer);
