// The one reconnect loop both agent links use: a call that finds the host gone is sent again on a new
// connection; the call's own errors are not retried; a host that never comes back is EIO at the deadline.
import test from 'ava';
import { PrismError, isPrismError } from '../../src/errors.js';
import { Reconnector } from '../../src/guest-agent/reconnector.js';
import { HostGone } from '../../src/vrpc/client.js';

class Conn {
  closed = false;
  constructor(readonly n: number) {}
  close(): void { this.closed = true; }
}

test('a call that finds the host gone runs again on the redialed connection; onLost hears of the old one', async (t) => {
  let dials = 0;
  const lost: number[] = [];
  const r = new Reconnector(new Conn(0), () => new Conn(++dials), 5000, { onLost: (c) => lost.push(c.n) });
  const seen: number[] = [];
  const result = await r.run(Date.now() + 5000, (c) => {
    seen.push(c.n);
    if (c.n === 0) throw new HostGone('the host restarted');
    return 'done';
  });
  t.is(result, 'done');
  t.deepEqual(seen, [0, 1]);
  t.deepEqual(lost, [0]);
  t.is(r.reconnects, 1);
  r.close();
});

test('the call\'s own error is not retried, and the connection is kept', async (t) => {
  const first = new Conn(0);
  const r = new Reconnector(first, () => new Conn(1), 5000);
  let runs = 0;
  await t.throwsAsync(r.run(Date.now() + 5000, () => { runs++; throw new PrismError('ENOENT', 'no such file'); }), { message: /ENOENT/ });
  t.is(runs, 1);
  t.is(r.current, first);
  t.false(r.dropIfGone(first, new PrismError('ENOENT', 'x')));
  t.true(r.dropIfGone(first, new HostGone('gone')));
  t.true(first.closed);
  r.close();
});

test('a host that does not come back: EIO at the call\'s deadline', async (t) => {
  const r = new Reconnector(new Conn(0), () => { throw new Error('refused'); }, 300);
  const e = await t.throwsAsync(r.run(Date.now() + 300, (c) => { if (c.n === 0) throw new HostGone('gone'); return 1; }));
  t.true(isPrismError(e, 'EIO'));
  r.close();
});
