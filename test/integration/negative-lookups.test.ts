// Negative lookups answered by the agent from a complete directory in the metadata table: a create
// costs one RPC (CREATE, no LOOKUP miss before it) and a lookup of a missing name none (issue 13).
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { agentStats, fuseSkipReason } from '../helpers/agent.js';
import { prism } from '../helpers/host.js';
import { mountedVolume } from '../helpers/mounted-volume.js';

const skip = fuseSkipReason();
const maybe = skip ? test.skip : test;
if (skip) test('negative lookups (skipped)', (t) => { t.log(skip); t.pass(); });

const N = 50;

maybe('creating files in a directory sends no LOOKUP per file; missing names are answered locally', async (t) => {
  const m = await mountedVolume(t, 'shm');
  const dir = path.join(m.mp, 'd');
  fs.mkdirSync(dir); // a new directory is shared complete at once: not even its first miss asks the host
  const before = (await agentStats(m.agent)).counters;
  for (let i = 0; i < N; i++) fs.closeSync(fs.openSync(path.join(dir, `f${i}`), 'wx'));
  for (let i = 0; i < N; i++) t.false(fs.existsSync(path.join(dir, `none${i}`)));
  const after = (await agentStats(m.agent)).counters;
  const sent = (p: string) => (after.rpcsByProc[p] ?? 0) - (before.rpcsByProc[p] ?? 0);
  t.is(sent('CREATE'), N);
  t.is(sent('LOOKUP'), 0, 'no LOOKUP RPC for a name the complete directory lacks');
  t.true(after.lookupsLocal - before.lookupsLocal >= 2 * N);
  t.true(fs.existsSync(path.join(dir, 'f0')));
  t.is(fs.readdirSync(dir).length, N);
  // A name the host adds (`prism put` through the running host) is in the table before put returns:
  // the complete directory never answers it absent.
  const src = path.join(m.dir, 'src.txt');
  fs.writeFileSync(src, 'from the host\n');
  t.is(prism(m.store, ['put', 'vol:/d/from-host', src]).code, 0);
  t.is(fs.readFileSync(path.join(dir, 'from-host'), 'utf8'), 'from the host\n');
});
