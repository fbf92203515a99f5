// The guest bench's report: console markers in, medians, ratios, tables and the SVG chart out.
import test from 'ava';
import { barChartSvg } from '../../bench/chart.js';
import { MARKER, parseMarkers, type GuestMarker, type GuestPlan } from '../../bench/guest-plan.js';
import { collect, render, stats } from '../../bench/guest-report.js';

const plan: GuestPlan = {
  targets: [
    { id: 'raw', label: 'raw', mount: { kind: 'blk', serial: 'raw' } },
    { id: 'prism-shm', label: 'shm', mount: { kind: 'prism', args: [] } },
    { id: 'nfs', label: 'nfs', mount: { kind: 'nfs', addr: '10.0.2.2', port: 1, mountPort: 2, export: '/x' } },
  ],
  workloads: ['build', 'untar'], reps: 3, fs: { dirs: 1, filesPerDir: 1, seqMiB: 1, randomWrites: 1 },
};

function result(target: string, workload: 'build' | 'untar', phase: string, rep: number, seconds: number): GuestMarker {
  return { kind: 'result', target, workload, phase, rep, seconds };
}

test('markers are found in a console transcript with CRLF, kernel noise and a cut line', (t) => {
  const line = (m: GuestMarker) => `${MARKER}${JSON.stringify(m)}\r\n`;
  const text = `[    1.2] virtio_net: loaded\r\n${line({ kind: 'info', key: 'guest cpus', value: '2' })}`
    + `\x1b[?25l${line(result('raw', 'build', 'build', 1, 1.5))}${MARKER}{"kind":"result","tar\r\n${line({ kind: 'done' })}`;
  const m = parseMarkers(text);
  t.deepEqual(m.map((x) => x.kind), ['info', 'result', 'done']);
  t.is((m[1] as { seconds: number }).seconds, 1.5);
});

test('stats: median of odd and even counts, min and max', (t) => {
  t.like(stats([3, 1, 2]), { median: 2, min: 1, max: 3 });
  t.like(stats([4, 1, 2, 3]), { median: 2.5, min: 1, max: 4 });
});

test('collect: medians per phase and per workload, a failed repetition left out of the totals, skips with their reason', (t) => {
  const markers: GuestMarker[] = [];
  for (let rep = 1; rep <= 3; rep++) {
    markers.push(result('raw', 'build', 'build', rep, rep), result('raw', 'build', 'rebuild', rep, 1));
    markers.push(result('raw', 'untar', 'untar', rep, 2));
    markers.push(result('prism-shm', 'build', 'build', rep, 2 * rep), result('prism-shm', 'build', 'rebuild', rep, 2));
  }
  // rep 2 of untar on prism failed after its first phase: its total must not count
  markers.push(result('prism-shm', 'untar', 'untar', 1, 4), result('prism-shm', 'untar', 'untar', 3, 6));
  markers.push({ kind: 'fail', target: 'prism-shm', workload: 'untar', rep: 2, reason: 'EIO' }, result('prism-shm', 'untar', 'untar', 2, 100));
  markers.push({ kind: 'skip', target: 'nfs', reason: 'mount failed: timed out' });
  const res = collect(markers, plan, new Map([['virtiofs', 'virtiofsd is missing']]));
  t.is(res.raw!.workloads.build!.median, 3); // totals 2, 3, 4
  t.is(res['prism-shm']!.workloads.build!.median, 6);
  t.deepEqual(res['prism-shm']!.workloads.untar!.runs, [4, 6]);
  t.deepEqual(res['prism-shm']!.failures, ['untar #2: EIO']);
  t.is(res.nfs!.skipped, 'mount failed: timed out');
  t.is(res.virtiofs!.skipped, 'virtiofsd is missing');
  t.regex(res.qcow2!.skipped!, /not in this run/);

  const r = render(res);
  t.regex(r.markdown, /\| \*\*build\*\* \(total\) \| 3\.00 s ±33% \(1\.00x\) \| 6\.00 s ±33% \(2\.00x\) \|/);
  t.regex(r.markdown, /- NFSv3 \(NFS-Ganesha\): skipped \(mount failed: timed out\)/);
  t.regex(r.text, /Prism, ivshmem \+ metadata: failed untar #2: EIO/);
});

test('the SVG chart draws a bar per value, n/a where there is none, and escapes labels', (t) => {
  const svg = barChartSvg({ title: 'a <b> & c', rows: ['build', 'untar'], series: ['x', 'y'], values: [[1, 2], [undefined, 0.5]], baseline: 1 });
  t.true(svg.startsWith('<svg'));
  t.true(svg.includes('a &lt;b&gt; &amp; c'));
  t.false(svg.includes('<b>'));
  // three bars and two legend swatches
  t.is((svg.match(/<rect x=/g) ?? []).length, 5);
  t.is((svg.match(/>n\/a</g) ?? []).length, 1);
  t.true(svg.includes('stroke-dasharray'));
});
