// `prism put`: a file written all or nothing. The content goes into an inode without a name (made
// under a temporary name, pinned, unlinked: an orphan, which the store frees when the writer lets go
// or, after a crash, when it is opened again) and is linked over the path at the end, in one step:
// readers see the old file or the new one, never a part of either, and a put that fails leaves the
// old file as it was.
import crypto from 'node:crypto';
import { PrismError, isPrismError } from '../errors.js';
import { S_IFMT, S_IFREG } from '../posix/mode.js';
import type { Volume } from './volume.js';

export class PutFile {
  private done = false;

  private constructor(readonly v: Volume, readonly dir: number, readonly name: Buffer, readonly ino: number, private readonly owner: string | undefined) {}

  /**
   * Start a put of `path`. A file already there lends the new one its mode and owner (as an editor
   * saving over it); a new file is 0644, owned by uid/gid. `owner` pins the content (a VM name or
   * an admin connection); the default is this process.
   */
  static begin(v: Volume, path: string, uid: number, gid: number, owner?: string): PutFile {
    const parts = path.split('/').filter(Boolean);
    if (parts.length === 0) throw new PrismError('EISDIR', 'cannot put onto the root directory');
    const dir = v.resolve('/' + parts.slice(0, -1).join('/'));
    const name = Buffer.from(parts[parts.length - 1]!);
    let mode = 0o644;
    try {
      const old = v.lookup(dir, name);
      if ((old.mode & S_IFMT) !== S_IFREG) throw new PrismError('EINVAL', `${path} is not a regular file`);
      mode = old.mode & 0o7777;
      uid = old.uid;
      gid = old.gid;
    } catch (e) {
      if (!isPrismError(e, 'ENOENT')) throw e;
    }
    const tmp = tempName();
    const a = v.create(dir, tmp, mode, uid, gid, true);
    v.open(a.ino, owner);
    v.unlink(dir, tmp);
    return new PutFile(v, dir, name, a.ino, owner);
  }

  write(offset: number, data: Buffer): void {
    if (this.done) throw new PrismError('EBADF', 'the put is over');
    if (data.length > 0) this.v.write(this.ino, offset, data);
  }

  /** The content takes the path (replacing what was there); returns the directory and the new inode. */
  finish(): { dir: number; name: Buffer; ino: number } {
    if (this.done) throw new PrismError('EBADF', 'the put is over');
    const tmp = tempName();
    this.v.link(this.ino, this.dir, tmp);
    try {
      this.v.rename(this.dir, tmp, this.dir, this.name);
    } catch (e) {
      this.v.unlink(this.dir, tmp);
      throw e;
    }
    this.done = true;
    this.v.close(this.ino, this.owner);
    return { dir: this.dir, name: this.name, ino: this.ino };
  }

  /** Give up: the content goes, the path keeps what it had. */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.v.close(this.ino, this.owner);
  }
}

function tempName(): Buffer {
  return Buffer.from(`.prism-put-${crypto.randomBytes(6).toString('hex')}`);
}
