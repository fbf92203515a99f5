// A directory's whole listing for the kernel, "." and ".." included, assembled from pages of READDIR
// (names, inode numbers and types) or READDIRPLUS (each entry also looked up: handle and attributes).
import type { Stubs } from '../protocol/stubs.js';
import type { FuseDirEntry } from './fuse/fs.js';
import { ROOT_ID, type NodeTable } from './node-table.js';
import type { SharedMetadata } from './shared-metadata.js';

const DOTDOT = Buffer.from('..');
const START = Buffer.alloc(0);
/** Entries asked for per call. */
const READDIR_PAGE = 1024;
const DT_DIR = 4;

export async function listDirectory(rpc: Stubs, nodes: NodeTable, shared: SharedMetadata | undefined, id: bigint, plus: boolean): Promise<FuseDirEntry[]> {
  const fh = nodes.fh(id);
  // ".." needs its inode number: from the table, or asked for alongside the first page.
  const known = id === ROOT_ID ? nodes.rootIno : shared?.parentIno(id);
  const parent = known !== undefined ? Promise.resolve(known) : rpc.lookup(fh, DOTDOT).then(([, attr]) => attr.ino);
  const out: FuseDirEntry[] = [];
  let cookie: Buffer = START;
  for (;;) {
    let last: Buffer | undefined;
    let eof: boolean;
    if (plus) {
      const [page, end] = await rpc.readdirplus(fh, cookie, READDIR_PAGE);
      for (const e of page) {
        const entry = nodes.entry(e.fh, e.attr, id, e.name, false);
        out.push({ name: e.name.toString('latin1'), ino: entry.attr.ino, type: (entry.attr.mode >> 12) & 15, entry });
      }
      last = page[page.length - 1]?.name;
      eof = end;
    } else {
      const [page, end] = await rpc.readdir(fh, cookie, READDIR_PAGE);
      for (const e of page) out.push({ name: e.name.toString('latin1'), ino: BigInt(e.ino), type: e.type });
      last = page[page.length - 1]?.name;
      eof = end;
    }
    if (eof || !last) break;
    cookie = last;
  }
  out.unshift({ name: '.', ino: BigInt(nodes.inoOf(id)), type: DT_DIR }, { name: '..', ino: BigInt(await parent), type: DT_DIR });
  return out;
}
