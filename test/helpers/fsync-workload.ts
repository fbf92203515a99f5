// Child process for the host crash-consistency test: a program on a Prism mount writing units of a
// few files at random and fsyncing them now and then. Units are whole 64 KiB blocks, or, in page mode
// (a second argument "pages"), 4 KiB pages of 64 blocks per file: small overwrites that COMMITs put in
// the store's intent log. Before each write it prints "W f b g" (about to write generation g of unit
// b of file f), after each fsync "s f" (every write to f printed before this line is durable). Runs
// until killed.
import fs from 'node:fs';
import path from 'node:path';

export const FILES = 4;
export const STAMP = 4096;

/** Unit size and units per file of a mode. */
export function shapeOf(pages: boolean): { unit: number; units: number } {
  return pages ? { unit: STAMP, units: 64 * 16 } : { unit: 65536, units: 16 };
}

/** Unit b of file f at generation g: a 4 KiB stamp naming all three, repeated to the unit's size. */
export function unitOf(f: number, b: number, g: number, unit: number): Buffer {
  const stamp = Buffer.alloc(STAMP, g % 251);
  stamp.write(`f=${f} b=${b} g=${g}\n`);
  const out = Buffer.allocUnsafe(unit);
  for (let o = 0; o < unit; o += STAMP) stamp.copy(out, o);
  return out;
}

/** The generation a unit holds if it is whole (not torn), else null. */
export function generationOf(f: number, b: number, data: Buffer, unit: number): number | null {
  if (data.length !== unit) return null;
  const m = /^f=(\d+) b=(\d+) g=(\d+)\n/.exec(data.subarray(0, 64).toString('latin1'));
  if (!m || Number(m[1]) !== f || Number(m[2]) !== b) return null;
  const g = Number(m[3]);
  return data.equals(unitOf(f, b, g, unit)) ? g : null;
}

const say = (s: string) => fs.writeSync(1, `${s}\n`);

function main(): void {
  const dir = process.argv[2]!;
  const { unit, units } = shapeOf(process.argv[3] === 'pages');
  // Pages: fsync less often, so that a COMMIT finds enough blocks to log.
  const fsyncEvery = process.argv[3] === 'pages' ? 0.03 : 0.2;
  let g = 0;
  const fds: number[] = [];
  for (let f = 0; f < FILES; f++) {
    const fd = fs.openSync(path.join(dir, `f${f}`), 'w+');
    for (let b = 0; b < units; b++) {
      g++;
      say(`W ${f} ${b} ${g}`);
      fs.writeSync(fd, unitOf(f, b, g, unit), 0, unit, b * unit);
    }
    fs.fsyncSync(fd);
    say(`s ${f}`);
    fds.push(fd);
  }
  say('ready');
  for (;;) {
    const f = Math.floor(Math.random() * FILES);
    const b = Math.floor(Math.random() * units);
    g++;
    say(`W ${f} ${b} ${g}`);
    fs.writeSync(fds[f]!, unitOf(f, b, g, unit), 0, unit, b * unit);
    if (Math.random() < fsyncEvery) {
      const s = Math.floor(Math.random() * FILES);
      fs.fsyncSync(fds[s]!);
      say(`s ${s}`);
    }
  }
}

if (process.argv[2]) main();
