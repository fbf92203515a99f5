import test from 'ava';
import { decodeResponse, encodeResponse, encodeResponseParts, LARGE_RESULT } from '../../src/protocol/codec.js';

test('a large reply sent in parts decodes exactly as the same reply encoded whole', (t) => {
  const data = Buffer.alloc(70_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  for (const result of [[data, true], [data.subarray(0, LARGE_RESULT), false], [data], [data, 5, 'x', [1, null]]]) {
    const parts = encodeResponseParts(12345, result);
    t.truthy(parts);
    t.deepEqual(decodeResponse(Buffer.concat(parts!)), decodeResponse(encodeResponse({ id: 12345, errno: 0, result })));
  }
  t.is(encodeResponseParts(1, [Buffer.alloc(LARGE_RESULT - 1), true]), null, 'small replies are encoded whole');
  t.is(encodeResponseParts(1, [42, data]), null, 'only a leading byte string is sent in parts');
});
