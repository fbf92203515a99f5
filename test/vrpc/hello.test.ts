// The handshake's bytes are a wire format (docs/protocol.md): every client sends the same hello and
// the host answers both transports alike. These bytes must not change without a protocol version.
import test from 'ava';
import { PrismError, isPrismError } from '../../src/errors.js';
import { encodeResponse } from '../../src/protocol/codec.js';
import { HelloExchange, encodeRefusal, encodeWelcome, isHelloReply, judgeHello } from '../../src/vrpc/hello.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('hello, welcome and refusal are the CBOR arrays docs/protocol.md names, byte for byte', (t) => {
  // ["prism-vrpc", 2, "vm1", "tok"], ["ok", 2], ["error", "EACCES", "no"]
  t.is(hex(new HelloExchange('vm1', 'tok').request), '846a707269736d2d767270630263766d3163746f6b');
  t.is(hex(encodeWelcome()), '82626f6b02');
  t.is(hex(encodeRefusal(new PrismError('EACCES', 'no'))), '83656572726f7266454143434553626e6f');
});

test('a client reads a welcome, throws a refusal, and skips a late reply to an earlier client', (t) => {
  const hello = new HelloExchange('vm1', '');
  const late = encodeResponse({ id: 7, errno: 0, result: [] });
  t.false(hello.receive(late));
  t.false(isHelloReply(late));
  t.true(isHelloReply(encodeWelcome()));
  t.true(hello.receive(encodeWelcome()));
  const e = t.throws(() => hello.receive(encodeRefusal(new PrismError('EBUSY', 'busy'))));
  t.true(isPrismError(e, 'EBUSY') && e.detail === 'busy');
});

test('the host judges a hello: malformed, then the transport\'s own check, then the version', (t) => {
  const vetAll = () => undefined;
  const garbage = judgeHello(Buffer.from([0xff, 0x00]), vetAll);
  t.true(!garbage.ok && garbage.malformed && garbage.refusal.code === 'EINVAL');

  const hello = new HelloExchange('vm1', 'tok').request;
  const ok = judgeHello(hello, vetAll);
  t.true(ok.ok && ok.hello.vm === 'vm1' && ok.hello.token === 'tok');

  const refused = judgeHello(hello, (h) => (h.token === 'tok' ? new PrismError('EACCES', 'wrong token') : undefined));
  t.true(!refused.ok && !refused.malformed && refused.refusal.code === 'EACCES' && refused.refusal.detail === 'wrong token');

  // Another version: refused after the transport's check passed (a wrong token is told as such first).
  const old = Buffer.from('846a707269736d2d767270630163766d3163746f6b', 'hex'); // version 1
  const v = judgeHello(old, vetAll);
  t.true(!v.ok && !v.malformed && v.refusal.code === 'EINVAL');
  const both = judgeHello(old, () => new PrismError('EACCES', 'wrong token'));
  t.true(!both.ok && both.refusal.code === 'EACCES');
});
