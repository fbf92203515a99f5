// Child process for the host crash-consistency test: a program on a Prism mount writing whole 64 KiB
// blocks of a few files at random and fsyncing them now and then. Before each write it prints
// "W f b g" (about to write generation g of block b of file f), after each fsync "s f" (every write
// to f printed before this line is durable). Runs until killed.
import fs from 'node:fs';
import path from 'node:path';

export const FILES = 4;
export const BLOCKS = 16;
export const BLOCK = 65536;
const STAMP = 4096;

/** Block b of file f at generation g: a 4 KiB stamp naming all three, 16 times. */
export function blockOf(f: number, b: number, g: number): Buffer {
  const stamp = Buffer.alloc(STAMP, g % 251);
  stamp.write(`f=${f} b=${b} g=${g}\n`);
  const out = Buffer.allocUnsafe(BLOCK);
  for (let o = 0; o < BLOCK; o += STAMP) stamp.copy(out, o);
  return out;
}

/** The generation a block holds if it is whole (not torn), else null. */
export function generationOf(f: number, b: number, data: Buffer): number | null {
  if (data.length !== BLOCK) return null;
  const m = /^f=(\d+) b=(\d+) g=(\d+)\n/.exec(data.subarray(0, 64).toString('latin1'));
  if (!m || Number(m[1]) !== f || Number(m[2]) !== b) return null;
  const g = Number(m[3]);
  return data.equals(blockOf(f, b, g)) ? g : null;
}

const say = (s: string) => fs.writeSync(1, `${s}\n`);

function main(): void {
  const dir = process.argv[2]!;
  let g = Number(process.argv[3] ?? 0);
  const fds: number[] = [];
  for (let f = 0; f < FILES; f++) {
    const fd = fs.openSync(path.join(dir, `f${f}`), 'w+');
    for (let b = 0; b < BLOCKS; b++) {
      g++;
      say(`W ${f} ${b} ${g}`);
      fs.writeSync(fd, blockOf(f, b, g), 0, BLOCK, b * BLOCK);
    }
    fs.fsyncSync(fd);
    say(`s ${f}`);
    fds.push(fd);
  }
  say('ready');
  for (;;) {
    const f = Math.floor(Math.random() * FILES);
    const b = Math.floor(Math.random() * BLOCKS);
    g++;
    say(`W ${f} ${b} ${g}`);
    fs.writeSync(fds[f]!, blockOf(f, b, g), 0, BLOCK, b * BLOCK);
    if (Math.random() < 0.2) {
      const s = Math.floor(Math.random() * FILES);
      fs.fsyncSync(fds[s]!);
      say(`s ${s}`);
    }
  }
}

if (process.argv[2]) main();
