// The metadata table against a model: whatever it answers is what the host last put for that key
// (or a miss, since it may evict); never another key's value, never a removed one.
import test from 'ava';
import fc from 'fast-check';
import { MetaTable, MetaTableError, HEADER_SIZE, SLOT_SIZE, hashOf } from '../../src/metadata-share/table.js';

const attrOf = (n: number): number[] => Array.from({ length: 16 }, (_, i) => n * 100 + i);

test('attributes and entries read back; negative entries; remove; names and volumes kept apart', (t) => {
  const m = MetaTable.create(new ArrayBuffer(HEADER_SIZE + 64 * SLOT_SIZE));
  const name = Buffer.from('hosts');
  m.putAttr(1, 42, attrOf(42));
  m.putEntry(1, 7, name, { fh: Buffer.alloc(29, 5), attr: attrOf(43) });
  m.putEntry(1, 7, Buffer.from('missing'), null);
  t.deepEqual(m.getAttr(1, 42), attrOf(42));
  t.is(m.getAttr(2, 42), undefined, 'another volume');
  t.deepEqual(m.getEntry(1, 7, name), { fh: new Uint8Array(Buffer.alloc(29, 5)), attr: attrOf(43) });
  t.is(m.getEntry(1, 7, Buffer.from('missing')), null);
  t.is(m.getEntry(1, 7, Buffer.from('other')), undefined);
  t.is(m.getEntry(1, 8, name), undefined, 'another directory');
  m.putEntry(1, 7, name, null); // now known absent: never both
  t.is(m.getEntry(1, 7, name), null);
  m.removeEntry(1, 7, name);
  t.is(m.getEntry(1, 7, name), undefined);
  m.removeAttr(1, 42);
  t.is(m.getAttr(1, 42), undefined);
  t.is(m.getEntry(1, 7, Buffer.alloc(256, 97)), undefined, 'names over 255 bytes are not shared');
});

test('attach checks the header; create bumps the generation', (t) => {
  const buf = new ArrayBuffer(HEADER_SIZE + 16 * SLOT_SIZE);
  t.throws(() => MetaTable.attach(buf), { instanceOf: MetaTableError });
  const g1 = MetaTable.create(buf).generation;
  t.is(MetaTable.create(buf).generation, g1 + 1);
  t.is(MetaTable.attach(buf).slots, 16);
  new DataView(buf).setUint32(8, 1000, true);
  t.throws(() => MetaTable.attach(buf), { message: /geometry/ });
  t.throws(() => MetaTable.create(new ArrayBuffer(HEADER_SIZE + 2 * SLOT_SIZE)), { instanceOf: MetaTableError });
});

test('random puts and removes against a model: hits are always the latest value of that key', (t) => {
  const op = fc.oneof(
    fc.record({ k: fc.constant('attr' as const), vol: fc.nat(2), ino: fc.nat(40), v: fc.nat(1000) }),
    fc.record({ k: fc.constant('entry' as const), vol: fc.nat(2), ino: fc.nat(5), name: fc.string({ minLength: 1, maxLength: 4 }), v: fc.option(fc.nat(1000)) }),
    fc.record({ k: fc.constant('rmattr' as const), vol: fc.nat(2), ino: fc.nat(40) }),
    fc.record({ k: fc.constant('rmentry' as const), vol: fc.nat(2), ino: fc.nat(5), name: fc.string({ minLength: 1, maxLength: 4 }) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 8, max: 40 }), (ops, slots) => {
    const m = MetaTable.create(new ArrayBuffer(HEADER_SIZE + slots * SLOT_SIZE));
    const model = new Map<string, number | null>();
    for (const o of ops) {
      const nameKey = 'name' in o ? Buffer.from(o.name) : Buffer.alloc(0);
      const key = `${o.k.includes('attr') ? 'a' : 'e'}:${o.vol}:${o.ino}:${nameKey.toString('hex')}`;
      if (o.k === 'attr') { m.putAttr(o.vol, o.ino, attrOf(o.v)); model.set(key, o.v); }
      else if (o.k === 'entry') { m.putEntry(o.vol, o.ino, nameKey, o.v === null ? null : { fh: Buffer.from([o.v & 255]), attr: attrOf(o.v) }); model.set(key, o.v); }
      else if (o.k === 'rmattr') { m.removeAttr(o.vol, o.ino); model.delete(key); }
      else { m.removeEntry(o.vol, o.ino, nameKey); model.delete(key); }
      // Every key the model knows: a hit must be right; a miss is allowed (eviction).
      for (const [k, v] of model) {
        const [kind, vol, ino, hex] = k.split(':');
        if (kind === 'a') {
          const got = m.getAttr(Number(vol), Number(ino));
          if (got !== undefined && got[0] !== v! * 100) return false;
        } else {
          const got = m.getEntry(Number(vol), Number(ino), Buffer.from(hex!, 'hex'));
          if (got === undefined) continue;
          if (v === null ? got !== null : got === null || got.attr[0] !== v * 100 || got.fh[0] !== (v & 255)) return false;
        }
      }
    }
    return true;
  }), { numRuns: 200 });
  t.pass();
});

test('the hash spreads volumes, inodes and names', (t) => {
  const seen = new Set<number>();
  for (let v = 0; v < 4; v++) for (let i = 0; i < 250; i++) seen.add(hashOf(v, i, Buffer.from(`n${i}`)) % 1024);
  t.true(seen.size > 600, `${seen.size} distinct buckets of 1024 for 1000 keys`);
});
