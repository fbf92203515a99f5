// A hostile guest in its own process: maps a VM's region the way QEMU's guest sees it and writes
// garbage into the ring control words, as fast as it can, for a given time. Modes:
//   head     unaligned or huge values into the request ring's head (and the response ring's tail)
//   reset    waits for each reset (generation change) and corrupts the fresh rings at once
//   inflight sends valid requests, then corrupts the rings while their replies are on the way
//   mixed    all of the above in turn
// Prints one JSON line at the end: { writes, resets }.
// Usage: node hostile-guest.js REGION_FILE MODE SECONDS [SEED]
import { encodeRequest } from '../../src/protocol/codec.js';
import { Proc } from '../../src/protocol/procs.js';
import { map } from '../../src/native/memory.js';
import { Region } from '../../src/ring/index.js';

type Mode = 'head' | 'reset' | 'inflight' | 'mixed';

function main(): void {
  const [file, modeArg, secondsArg, seedArg] = process.argv.slice(2);
  const mode = modeArg as Mode;
  const until = Date.now() + Number(secondsArg) * 1000;
  let seed = Number(seedArg ?? 1) >>> 0 || 1;
  const rnd = (): number => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed; };
  const buf = map(file, {});
  const region = Region.attach(buf);
  const req = region.location(0, 'request');
  const resp = region.location(0, 'response');
  const reqCtrl = new Int32Array(buf, req.ctrlOffset, 64);
  const respCtrl = new Int32Array(buf, resp.ctrlOffset, 64);
  const words = new Int32Array(buf);
  const GEN = 16;
  let writes = 0, resets = 0, lastGen = Atomics.load(words, GEN);
  const bad = (): number => {
    switch (rnd() % 5) {
      case 0: return (rnd() | 1) | 0; // odd: never 8-aligned
      case 1: return 0x7fff_fff9;
      case 2: return -4;
      case 3: return (Atomics.load(reqCtrl, 16) + 8 * (1 + (rnd() % 4096)) * 1024) | 0; // far past the free space
      default: return (rnd() & ~7) | 0; // aligned garbage
    }
  };
  const corrupt = (): void => {
    Atomics.store(reqCtrl, 0, bad());
    if (rnd() % 4 === 0) Atomics.store(respCtrl, 16, bad());
    writes++;
  };
  const sendValid = (): void => {
    try {
      const tx = region.producer(0, 'request', { wake: false });
      for (let i = 0; i < 8; i++) {
        const proc = i % 2 ? Proc.NULL : Proc.GETATTR;
        tx.write(encodeRequest({ id: rnd(), proc, args: proc === Proc.NULL ? [] : [Buffer.alloc(29, rnd() & 0xff)] }));
      }
    } catch {
      // The rings were already broken (by us): corrupting them again is the point.
    }
  };
  let phase = 0;
  while (Date.now() < until) {
    const gen = Atomics.load(words, GEN);
    if (gen !== lastGen) { resets++; lastGen = gen; }
    const m: Mode = mode === 'mixed' ? (['head', 'reset', 'inflight'] as const)[(phase++ >> 10) % 3] : mode;
    if (m === 'head') {
      corrupt();
    } else if (m === 'reset') {
      // Spin until the host resets, then hit the fresh rings before the host reads them.
      const spinUntil = Date.now() + 50;
      while (Atomics.load(words, GEN) === gen && Date.now() < spinUntil);
      corrupt();
    } else {
      sendValid();
      for (let i = 0; i < 200; i++) Atomics.load(words, GEN); // let the host start on them
      corrupt();
    }
  }
  process.stdout.write(`${JSON.stringify({ writes, resets })}\n`);
}

if (process.argv[2]) main();
