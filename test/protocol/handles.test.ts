import crypto from 'node:crypto';
import test from 'ava';
import { HANDLE_SIZE, HANDLE_VERSION, HandleKey } from '../../src/protocol/handles.js';
import { MAC_CACHE_SLOTS, MacCache } from '../../src/protocol/mac-cache.js';

const secret = Buffer.alloc(32, 7);

/** The documented format, computed from scratch: the cache must never change what a handle is. */
function reference(vm: string, volumeId: number, ino: number): Buffer {
  const key = crypto.createHmac('sha256', secret).update(`prism-vm:${vm}`).digest();
  const body = Buffer.alloc(13);
  body[0] = HANDLE_VERSION;
  body.writeUInt32BE(volumeId, 1);
  body.writeBigUInt64BE(BigInt(ino), 5);
  return Buffer.concat([body, crypto.createHmac('sha256', key).update(body).digest().subarray(0, HANDLE_SIZE - 13)]);
}

test('handles are the documented bytes, stable across keys made afresh (a host restart)', (t) => {
  for (const ino of [1, 2, 0xffffffff, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
    const a = new HandleKey(secret, 'vm1').make({ volumeId: 3, ino });
    t.deepEqual(a, reference('vm1', 3, ino));
    const k = new HandleKey(secret, 'vm1');
    t.deepEqual(k.open(a), { volumeId: 3, ino });
    t.deepEqual(k.make({ volumeId: 3, ino }), a); // now from the cache
    t.deepEqual(k.open(a), { volumeId: 3, ino });
  }
});

test('a handle altered in any bit, or minted for another VM, does not verify, cached or not', (t) => {
  const k = new HandleKey(secret, 'vm1');
  const h = k.make({ volumeId: 1, ino: 42 });
  k.open(h); // cached
  for (let i = 0; i < HANDLE_SIZE; i++) {
    for (const bit of [0x01, 0x80]) {
      const bad = Buffer.from(h);
      bad[i] ^= bit;
      t.throws(() => k.open(bad), { message: /ESTALE/ }, `byte ${i} bit ${bit}`);
    }
  }
  t.throws(() => k.open(h.subarray(0, HANDLE_SIZE - 1)), { message: /ESTALE/ });
  t.throws(() => k.open(Buffer.concat([h, Buffer.alloc(1)])), { message: /ESTALE/ });
  const other = new HandleKey(secret, 'vm2');
  t.throws(() => other.open(h), { message: /ESTALE/ });
  other.make({ volumeId: 1, ino: 42 }); // vm2's own handle for the same inode is cached in vm2's key
  t.throws(() => other.open(h), { message: /ESTALE/ });
  // An inode number past 2^53 is never minted, so never verifies.
  const big = Buffer.from(h);
  big.writeUInt32BE(0x200000, 5);
  t.throws(() => k.open(big), { message: /ESTALE/ });
});

test('a forged handle is not remembered, and handles past the cache size still verify', (t) => {
  const k = new HandleKey(secret, 'vm1');
  const forged = Buffer.from(k.make({ volumeId: 1, ino: 5 }));
  forged[HANDLE_SIZE - 1] ^= 1;
  const k2 = new HandleKey(secret, 'vm1');
  t.throws(() => k2.open(forged), { message: /ESTALE/ });
  t.throws(() => k2.open(forged), { message: /ESTALE/ });
  const n = MAC_CACHE_SLOTS + 100;
  const hs = Array.from({ length: n }, (_, i) => k.make({ volumeId: 1 + (i & 1), ino: i + 1 }));
  for (let i = 0; i < n; i += 997) t.deepEqual(k.open(hs[i]), { volumeId: 1 + (i & 1), ino: i + 1 });
});

test('the MAC cache replaces its oldest slot once full', (t) => {
  const c = new MacCache(2, 3);
  const mac = (x: number) => Uint8Array.of(x, x + 1, 99);
  for (let i = 0; i < 3; i++) t.is(c.put(1, i, mac(i)), i * 2);
  t.is(c.get(1, 0), 0);
  t.is(c.put(2, 0, mac(9)), 0); // evicts (1, 0)
  t.is(c.get(1, 0), -1);
  t.is(c.get(2, 0), 0);
  t.deepEqual([...c.slab.subarray(0, 2)], [9, 10]);
  t.is(c.get(1, 2), 4);
});
