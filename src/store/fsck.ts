// fsck: check a store's committed state end to end, and optionally repair what can be repaired.
//
// Phases, in order (each reports progress under its name):
//   nodes      every node reachable from a volume layer root; reference counts (a node's count is the
//              number of parents pointing at it, a volume layer counting as a parent); leaked nodes.
//   blocks     block reference counts (the number of reachable leaves holding the hash, a leaf counted
//              once however many volumes share it); leaked and missing blocks.
//   data       every block is read from its segment (magic, length, crc) and its SHA-256 recomputed.
//   namespace  per volume: directory entries, link counts, parent pointers, file byte counts, leaked
//              inodes, usage counters.
//   segments   per-segment live byte statistics and the store's block totals.
//
// Problem kinds (repairable unless marked):
//   node-missing*  node-refs  node-leaked  node-refs-stray  node-id-ahead
//   block-missing*  block-refs  block-leaked  block-corrupt*
//   dirent-dangling (the entry is removed)  dirent-type  dir-links*  nlink  parent  file-bytes
//   inode-type (a mode that is no file type: made an empty regular file)
//   inode-leaked (freed)  keys-stray (removed)  orphan-missing  usage  volume-unreadable*
//   segment-stats  block-totals
//
// Repairs go through the store's in-memory structures (node store, block index, the trees) and are
// committed together; the segment statistics, which have no in-memory form, are rewritten after that.
// When nodes or blocks are missing, reference counts cannot be trusted, so repairs that depend on them
// are not made (the problems are still reported).
import { isPrismError } from '../errors.js';
import { sha256, type BlockRec, type SegmentStat } from './blocks.js';
import { S_IFMT, S_IFREG, isFileType, isDir, isReg } from '../posix/mode.js';
import {
  Kind, direntKey, inodeKey, inodeRange, inoOf, keyKind, keyLocal, kindRange, layerOf, localOf, type Dirent, type InodeRec, type TreeValue,
} from './layout.js';
import { PrismError } from '../errors.js';
import { HEADER_SIZE } from './segments.js';
import type { Store } from './store.js';
import type { Volume } from './volume.js';

export interface FsckProblem { kind: string; detail: string; repaired: boolean }

export interface FsckReport {
  /** True when no problem is left unrepaired. */
  ok: boolean;
  problems: FsckProblem[];
  checked: { volumes: number; nodes: number; blocks: number; inodes: number };
}

export interface FsckOptions {
  repair?: boolean;
  /** Read every block and recompute its hash (default true). */
  verifyData?: boolean;
  onProgress?: (done: number, total: number, phase: string) => void;
}

const PROGRESS_EVERY = 4096;

export function fsck(store: Store, opts: FsckOptions = {}): FsckReport {
  const repair = opts.repair ?? false;
  if (repair && store.readOnly) throw new PrismError('EROFS', 'fsck --repair needs the store to itself (stop the host first)');
  const verifyData = opts.verifyData ?? true;
  const progress = opts.onProgress ?? (() => {});
  store.commit();

  const problems: FsckProblem[] = [];
  const checked = { volumes: 0, nodes: 0, blocks: 0, inodes: 0 };
  const report = (kind: string, detail: string, repaired: boolean) => { problems.push({ kind, detail, repaired }); };
  let changed = false;

  // ---- 1. nodes ---------------------------------------------------------------------------------
  const ns = store.nodeStore;
  const roots = store.layerRoots();
  const expectedRefs = new Map<number, number>();
  for (const [r, holders] of roots) expectedRefs.set(r, holders);
  const visited = new Set<number>();
  const missingNodes = new Set<number>();
  const blockRefs = new Map<string, number>();
  const nodesTotal = store.nodesDb.getCount();
  const stack = [...roots.keys()];
  while (stack.length) {
    const id = stack.pop()!;
    if (visited.has(id)) continue;
    visited.add(id);
    let n;
    try {
      n = ns.get(id);
    } catch (e) {
      if (!isPrismError(e, 'EIO')) throw e;
      missingNodes.add(id);
      report('node-missing', `metadata node ${id} is referenced but missing (everything below it is lost)`, false);
      continue;
    }
    checked.nodes++;
    if (checked.nodes % PROGRESS_EVERY === 0) progress(checked.nodes, nodesTotal, 'nodes');
    if (n.l === 1) {
      for (const v of n.v) {
        if (!Buffer.isBuffer(v)) continue;
        const k = v.toString('latin1');
        blockRefs.set(k, (blockRefs.get(k) ?? 0) + 1);
      }
    } else {
      for (const c of n.c) {
        expectedRefs.set(c, (expectedRefs.get(c) ?? 0) + 1);
        stack.push(c);
      }
    }
  }
  // With nodes missing, counts below them are unknown: report, but do not "repair" from partial counts.
  const countsTrusted = missingNodes.size === 0;
  const fixCounts = repair && countsTrusted;
  for (const [id, want] of expectedRefs) {
    if (missingNodes.has(id)) continue;
    const have = ns.refs(id);
    if (have !== want) {
      if (fixCounts) ns.setRefs(id, want);
      report('node-refs', `node ${id} has reference count ${have}, but ${want} parents point at it`, fixCounts);
      changed ||= fixCounts;
    }
  }
  const leakedNodes = new Set<number>();
  let maxNode = 0;
  for (const id of store.nodesDb.getKeys()) {
    if (id > maxNode) maxNode = id;
    if (visited.has(id)) continue;
    leakedNodes.add(id);
    if (fixCounts) ns.free(id);
    report('node-leaked', `node ${id} is stored but no volume reaches it`, fixCounts);
    changed ||= fixCounts;
  }
  for (const id of store.refsDb.getKeys()) {
    if (visited.has(id) || leakedNodes.has(id)) continue;
    if (repair) ns.setRefs(id, 1); // a count of 1 is stored as no entry
    report('node-refs-stray', `a reference count is stored for node ${id}, which does not exist`, repair);
    changed ||= repair;
  }
  if (maxNode >= ns.nextId) {
    const was = ns.nextId;
    if (repair) ns.nextId = maxNode + 1;
    report('node-id-ahead', `node ${maxNode} exists but the next node id is ${was}`, repair);
    changed ||= repair;
  }
  progress(checked.nodes, nodesTotal, 'nodes');

  // ---- 2. block reference counts -----------------------------------------------------------------
  const blocksTotal = store.blocksDb.getCount();
  let done = 0;
  for (const { key, value } of store.blocksDb.getRange()) {
    const hash = Buffer.from(key);
    const k = hash.toString('latin1');
    const want = blockRefs.get(k) ?? 0;
    blockRefs.delete(k);
    checked.blocks++;
    if (want === 0) {
      if (fixCounts) store.blocks.set(hash, { ...value, r: 0 }); // dropped at commit; gc reclaims the bytes
      report('block-leaked', `block ${short(hash)} (count ${value.r}) is referenced by no reachable leaf`, fixCounts);
      changed ||= fixCounts;
    } else if (value.r !== want) {
      if (fixCounts) store.blocks.set(hash, { ...value, r: want });
      report('block-refs', `block ${short(hash)} has reference count ${value.r}, but ${want} leaves hold it`, fixCounts);
      changed ||= fixCounts;
    }
    if (++done % PROGRESS_EVERY === 0) progress(done, blocksTotal, 'blocks');
  }
  const missingBlocks = blockRefs.size;
  for (const k of blockRefs.keys()) {
    report('block-missing', `block ${short(Buffer.from(k, 'latin1'))} is referenced but not in the block index (reads of it fail with EIO)`, false);
  }
  blockRefs.clear();
  progress(done, blocksTotal, 'blocks');

  // ---- 3. block content ----------------------------------------------------------------------------
  const segSizes = new Map<number, number>();
  const segSize = (s: number) => {
    let n = segSizes.get(s);
    if (n === undefined) { n = store.segments.size(s); segSizes.set(s, n); }
    return n;
  };
  done = 0;
  for (const { key, value } of store.blocksDb.getRange()) {
    const hash = Buffer.from(key);
    if (value.o < HEADER_SIZE || value.o + value.n > segSize(value.s)) {
      report('block-corrupt', `block ${short(hash)} lies beyond the end of segment ${value.s} (offset ${value.o}, ${value.n} bytes)`, false);
    } else if (verifyData) {
      try {
        const data = store.segments.read(value, value.n, hash);
        if (!sha256(data).equals(hash)) {
          report('block-corrupt', `block ${short(hash)} content does not match its hash (segment ${value.s} offset ${value.o})`, false);
        }
      } catch (e) {
        if (!isPrismError(e)) throw e;
        report('block-corrupt', e.message, false);
      }
    }
    if (++done % PROGRESS_EVERY === 0) progress(done, blocksTotal, 'data');
  }
  progress(done, blocksTotal, 'data');

  // ---- 4. namespace --------------------------------------------------------------------------------
  // Tree changes copy shared leaves, which retains every block in them: unsafe with blocks missing.
  const fixTrees = repair && countsTrusted && missingBlocks === 0;
  const names = store.allVolumeNames();
  names.forEach((name, i) => {
    progress(i, names.length, 'namespace');
    checked.volumes++;
    const v = store.volume(name);
    try {
      const r = checkVolume(store, v, fixTrees, report);
      checked.inodes += r.inodes;
      changed ||= r.changed;
    } catch (e) {
      if (!isPrismError(e)) throw e;
      report('volume-unreadable', `volume ${name}: ${e.message}`, false);
    }
  });
  progress(names.length, names.length, 'namespace');

  if (changed) store.commit();

  // ---- 5. segment statistics and block totals -----------------------------------------------------
  const want = new Map<number, SegmentStat>();
  let physical = 0, count = 0;
  for (const { value } of store.blocksDb.getRange()) {
    const st = want.get(value.s) ?? { live: 0, blocks: 0 };
    st.live += value.n + HEADER_SIZE;
    st.blocks += 1;
    want.set(value.s, st);
    physical += value.n;
    count++;
  }
  const have = new Map<number, SegmentStat>();
  for (const { key, value } of store.segStatsDb.getRange()) have.set(key, value);
  const segs = [...new Set([...want.keys(), ...have.keys()])].sort((a, b) => a - b);
  const rewrite: Array<[number, SegmentStat | undefined]> = [];
  segs.forEach((s) => {
    const w = want.get(s), h = have.get(s);
    if ((w?.live ?? 0) !== (h?.live ?? 0) || (w?.blocks ?? 0) !== (h?.blocks ?? 0)) {
      rewrite.push([s, w]);
      report('segment-stats', `segment ${s} is recorded with ${h?.live ?? 0} live bytes in ${h?.blocks ?? 0} blocks, `
        + `but holds ${w?.live ?? 0} in ${w?.blocks ?? 0}`, repair);
    }
  });
  progress(segs.length, segs.length, 'segments');
  if (repair && rewrite.length) {
    store.segStatsDb.transactionSync(() => {
      for (const [s, w] of rewrite) {
        if (w) store.segStatsDb.put(s, w);
        else store.segStatsDb.remove(s);
      }
    });
  }
  if (store.blocks.physical !== physical || store.blocks.count !== count) {
    report('block-totals', `the store records ${store.blocks.count} blocks of ${store.blocks.physical} bytes, `
      + `but the index holds ${count} of ${physical}`, repair);
    if (repair) {
      store.blocks.physical = physical;
      store.blocks.count = count;
      store.commit(); // writes the totals
    }
  }

  return { ok: problems.every((p) => p.repaired), problems, checked };
}

type Report = (kind: string, detail: string, repaired: boolean) => void;

/** Check one volume's namespace; returns the number of reachable inodes and whether it changed anything. */
function checkVolume(store: Store, v: Volume, repair: boolean, report: Report): { inodes: number; changed: boolean } {
  const name = v.name;
  const tree = store.tree;
  // Compose (and clones of composed volumes, which share their layers) may hold inodes no path reaches
  // and files whose link count includes links outside the selection.
  const composed = v.rec.origin === 'compose' || v.rec.layers.length > 1;
  let changed = false;
  const tput = (layer: number, key: Buffer, val: TreeValue) => {
    const l = v.rec.layers[layer];
    l.root = tree.put(l.root, key, val);
    store.changed(v);
    changed = true;
  };
  const tdel = (layer: number, key: Buffer) => {
    const l = v.rec.layers[layer];
    l.root = tree.del(l.root, key);
    store.changed(v);
    changed = true;
  };

  const recs = new Map<number, InodeRec | null>();
  const inodeOf = (ino: number): InodeRec | null => {
    let r = recs.get(ino);
    if (r !== undefined) return r;
    try {
      r = v.inode(ino);
    } catch (e) {
      if (!isPrismError(e, 'ESTALE')) throw e;
      r = null;
    }
    recs.set(ino, r);
    return r;
  };

  const root = v.rootIno;
  if (!inodeOf(root)) {
    report('volume-unreadable', `volume ${name}: root directory inode ${root} is missing`, false);
    return { inodes: 0, changed };
  }

  // Walk the namespace from the root, each directory once.
  const links = new Map<number, number>([[root, 0]]); // reachable inode -> entries linking it
  const containers = new Map<number, number[]>(); // directory -> directories holding an entry for it
  const subdirs = new Map<number, number>(); // directory -> entries naming a directory
  const stack = [root];
  const seenDirs = new Set([root]);
  const badType = new Set<number>();
  let meta = 0; // entry names, symlink targets, extended attributes: what the quota charges besides data
  while (stack.length) {
    const dir = stack.pop()!;
    let sub = 0;
    for (const e of v.readdir(dir)) {
      const label = `volume ${name}: entry ${JSON.stringify(e.name.toString())} of directory ${dir}`;
      const key = direntKey(localOf(dir), e.name);
      const child = inodeOf(e.ino);
      if (child || !repair) meta += e.name.length; // a dangling entry is charged until it is removed
      if (!child) {
        if (repair) tdel(layerOf(dir), key);
        report('dirent-dangling', `${label} names inode ${e.ino}, which does not exist`, repair);
        continue;
      }
      if (!isFileType(child.mode)) {
        // A type that does not exist (an older version let MKNOD make them): an empty regular file
        // keeps the name and permissions and loses nothing readable.
        const fixed: InodeRec = { ...child, mode: S_IFREG | (child.mode & 0o7777), size: 0, bytes: child.bytes ?? 0 };
        delete fixed.rdev;
        delete fixed.target;
        if (!badType.has(e.ino)) {
          badType.add(e.ino);
          report('inode-type', `${label}: inode ${e.ino} has mode 0o${child.mode.toString(8)}, which is no file type`, repair);
        }
        if (repair) {
          tput(layerOf(e.ino), inodeKey(localOf(e.ino)), fixed);
          recs.set(e.ino, fixed);
          tput(layerOf(dir), key, [layerOf(e.ino) - layerOf(dir), localOf(e.ino), S_IFREG] satisfies Dirent);
        }
        links.set(e.ino, (links.get(e.ino) ?? 0) + 1);
        continue;
      }
      const type = child.mode & S_IFMT;
      if (type !== e.type) {
        if (repair) tput(layerOf(dir), key, [layerOf(e.ino) - layerOf(dir), localOf(e.ino), type] satisfies Dirent);
        report('dirent-type', `${label} has type 0o${e.type.toString(8)}, but inode ${e.ino} is 0o${type.toString(8)}`, repair);
      }
      links.set(e.ino, (links.get(e.ino) ?? 0) + 1);
      if (isDir(child.mode)) {
        sub++;
        const c = containers.get(e.ino);
        if (c) c.push(dir); else containers.set(e.ino, [dir]);
        if (!seenDirs.has(e.ino)) { seenDirs.add(e.ino); stack.push(e.ino); }
      }
    }
    subdirs.set(dir, sub);
  }

  // Per reachable inode: link counts, parent pointers, byte counts.
  const orphans = new Set(v.rec.orphans);
  let bytes = 0;
  for (const [ino, n] of links) {
    const rec = inodeOf(ino)!;
    const fix: Partial<InodeRec> = {};
    const label = `volume ${name}: inode ${ino}`;
    meta += v.metaBytesOf(ino, rec);
    if (isDir(rec.mode)) {
      const want = 2 + (subdirs.get(ino) ?? 0);
      if (rec.nlink !== want) {
        fix.nlink = want;
        report('nlink', `${label} (directory) has link count ${rec.nlink}, expected ${want}`, repair);
      }
      const holders = ino === root ? [root] : containers.get(ino)!;
      if (ino === root && n > 0 && !composed) {
        report('dir-links', `${label} is the root but ${n} entries link to it`, false);
      } else if (ino !== root && holders.length > 1 && !composed) {
        report('dir-links', `${label} is a directory linked from ${holders.length} entries`, false);
      }
      const p = rec.parent;
      const parent = p ? inoOf(layerOf(ino) + p[0], p[1]) : root;
      if (!holders.includes(parent)) {
        fix.parent = [layerOf(holders[0]) - layerOf(ino), localOf(holders[0])];
        report('parent', `${label} (directory) has parent ${parent}, but is in directory ${holders[0]}`, repair);
      }
    } else if (composed ? rec.nlink < n : rec.nlink !== n) {
      fix.nlink = n;
      report('nlink', `${label} has link count ${rec.nlink}, but ${n} entries link to it`, repair);
    }
    if (isReg(rec.mode)) {
      const actual = fileBytes(store, v, ino);
      if (actual === null) {
        bytes += rec.bytes ?? 0; // a block is missing (reported above)
      } else {
        bytes += actual;
        if ((rec.bytes ?? 0) !== actual) {
          fix.bytes = actual;
          report('file-bytes', `${label} records ${rec.bytes ?? 0} bytes in blocks, but holds ${actual}`, repair);
        }
      }
    }
    if (repair && Object.keys(fix).length) tput(layerOf(ino), inodeKey(localOf(ino)), { ...v.inode(ino), ...fix });
  }

  // Unlinked-but-open files: not reachable, still counted.
  let orphanCount = 0;
  for (const ino of orphans) {
    if (links.has(ino)) continue;
    const rec = inodeOf(ino);
    if (!rec) {
      if (repair) {
        v.rec.orphans.splice(v.rec.orphans.indexOf(ino), 1);
        store.changed(v);
        changed = true;
      }
      report('orphan-missing', `volume ${name}: orphan inode ${ino} does not exist`, repair);
      continue;
    }
    orphanCount++;
    if (isReg(rec.mode)) bytes += rec.bytes ?? 0;
    meta += v.metaBytesOf(ino, rec);
  }

  // Leaked inodes: present in the tree, reached by no path. Only plain volumes (one layer) are exact.
  if (!composed) {
    const withInode = new Set<number>();
    const withKeys = new Set<number>();
    tree.each(v.rec.layers[0].root, Buffer.alloc(0), null, (k) => {
      if (keyKind(k) === Kind.Inode) withInode.add(keyLocal(k));
      else withKeys.add(keyLocal(k));
    });
    for (const local of withInode) {
      const ino = inoOf(0, local);
      if (links.has(ino) || orphans.has(ino)) continue;
      if (repair) { v.freeInode(ino); changed = true; }
      report('inode-leaked', `volume ${name}: inode ${ino} exists but no path reaches it`, repair);
    }
    for (const local of withKeys) {
      if (withInode.has(local)) continue;
      if (repair) {
        const [lo, hi] = inodeRange(local);
        const l = v.rec.layers[0];
        l.root = tree.delRange(l.root, lo, hi);
        store.changed(v);
        changed = true;
      }
      report('keys-stray', `volume ${name}: records of inode ${inoOf(0, local)} exist without the inode`, repair);
    }
  }

  // Usage counters (null until first needed after compose: nothing to compare).
  const u = v.rec.usage;
  const inodes = links.size + orphanCount;
  const differs = u && (u.bytes !== bytes || u.inodes !== inodes || u.meta !== meta);
  if (differs && composed) {
    // Expected: unlinking the visible link of a file whose other links lie outside the selection keeps
    // the inode (and its usage) while no path reaches it. Recount quietly; it is not damage.
    v.rec.usage = { bytes, inodes, meta };
    store.changed(v);
    changed = true;
  } else if (u && differs) {
    report('usage', `volume ${name}: usage is recorded as ${u.bytes} bytes + ${u.meta} of metadata in ${u.inodes} inodes, but is ${bytes} + ${meta} in ${inodes}`, repair);
    if (repair) {
      v.rec.usage = { bytes, inodes, meta };
      store.changed(v);
      changed = true;
    }
  }
  return { inodes: links.size, changed };
}

/** Bytes held in a regular file's blocks, or null if one of its blocks is missing from the index. */
function fileBytes(store: Store, v: Volume, ino: number): number | null {
  const [lo, hi] = kindRange(localOf(ino), Kind.Block);
  let total = 0, missing = false;
  store.tree.each(v.rec.layers[layerOf(ino)].root, lo, hi, (_k, val) => {
    const rec: BlockRec | undefined = store.blocks.get(val as Buffer);
    if (!rec) { missing = true; return false; }
    total += rec.n;
  });
  return missing ? null : total;
}

function short(hash: Buffer): string {
  return hash.toString('hex').slice(0, 16);
}
