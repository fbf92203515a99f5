// The metadata table against a model: whatever it answers is what the host last put for that key
// (or a miss, since it may evict); never another key's value, never a removed one.
import test from 'ava';
import fc from 'fast-check';
import { MetaTable, MetaTableError, PROBE, SLOT_SIZE, hashOf, type Change } from '../../src/metadata-share/table.js';

/** A buffer for a table of about `slots` slots with a small log. */
const sized = (slots: number): ArrayBuffer => new ArrayBuffer(MetaTable.geometry(1 << 20, 16).slotsAt + slots * SLOT_SIZE);
const make = (slots: number): MetaTable => MetaTable.create(sized(slots), 16);

const attrOf = (n: number): number[] => Array.from({ length: 16 }, (_, i) => n * 100 + i);

test('attributes and entries read back; negative entries; remove; names and volumes kept apart', (t) => {
  const m = make(64);
  const name = Buffer.from('hosts');
  m.putAttr(1, 42, attrOf(42));
  m.putEntry(1, 7, name, { fh: Buffer.alloc(29, 5), ino: 43 });
  m.putEntry(1, 7, Buffer.from('missing'), null);
  t.deepEqual(m.getAttr(1, 42), attrOf(42));
  t.is(m.getAttr(2, 42), undefined, 'another volume');
  t.deepEqual(m.getEntry(1, 7, name), { fh: new Uint8Array(Buffer.alloc(29, 5)), ino: 43 });
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

test('attach checks the header; create clears a previous table and moves the generation on', (t) => {
  const buf = sized(16);
  t.throws(() => MetaTable.attach(buf), { instanceOf: MetaTableError });
  const m = MetaTable.create(buf, 16);
  const g1 = m.generation;
  t.is(g1 % 2, 0, 'even: usable');
  m.putAttr(1, 5, attrOf(5));
  const again = MetaTable.create(buf, 16);
  t.is(again.generation, g1 + 2);
  t.is(again.getAttr(1, 5), undefined, 'a new host starts empty');
  t.is(MetaTable.attach(buf).slots, 16);
  again.putAttr(1, 5, attrOf(5));
  again.reset(true);
  t.is(again.generation % 2, 1, 'a stopped host leaves the table odd');
  again.putAttr(1, 6, attrOf(6));
  t.is(MetaTable.attach(buf).getAttr(1, 6), undefined, 'readers miss while the generation is odd');
  new DataView(buf).setUint32(8, 1000, true);
  t.throws(() => MetaTable.attach(buf), { message: /geometry/ });
  t.throws(() => MetaTable.create(new ArrayBuffer(8192)), { instanceOf: MetaTableError });
});

test('the change log reads back in order and reports records written over', (t) => {
  const m = make(16);
  const changes: Change[] = [
    { kind: 'attr', volume: 3, ino: 9 },
    { kind: 'entry', volume: 3, dir: 2, name: Buffer.from('x\xffy', 'latin1') },
    { kind: 'data', volume: 4, ino: 2 ** 40 },
  ];
  m.appendLog(changes);
  const reader = MetaTable.attach(m.buffer);
  t.is(reader.logHead, 3);
  t.deepEqual([0, 1, 2].map((n) => reader.readLog(n)), changes.map((c) => (c.kind === 'entry' ? { ...c, name: new Uint8Array(c.name) } : c)));
  t.is(reader.readLog(3), 'lost', 'not written yet');
  for (let i = 0; i < m.logRecords; i++) m.appendLog([{ kind: 'attr', volume: 1, ino: i }]);
  t.is(reader.readLog(0), 'lost', 'written over');
  t.deepEqual(reader.readLog(m.logRecords + 2), { kind: 'attr', volume: 1, ino: m.logRecords - 1 });
});

test('random puts and removes against a model: hits are always the latest value of that key', (t) => {
  const op = fc.oneof(
    fc.record({ k: fc.constant('attr' as const), vol: fc.nat(2), ino: fc.nat(40), v: fc.nat(1000) }),
    fc.record({ k: fc.constant('entry' as const), vol: fc.nat(2), ino: fc.nat(5), name: fc.string({ minLength: 1, maxLength: 4 }), v: fc.option(fc.nat(1000)) }),
    fc.record({ k: fc.constant('rmattr' as const), vol: fc.nat(2), ino: fc.nat(40) }),
    fc.record({ k: fc.constant('rmentry' as const), vol: fc.nat(2), ino: fc.nat(5), name: fc.string({ minLength: 1, maxLength: 4 }) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: PROBE, max: 60 }), (ops, slots) => {
    const m = make(slots);
    const model = new Map<string, number | null>();
    for (const o of ops) {
      const nameKey = 'name' in o ? Buffer.from(o.name) : Buffer.alloc(0);
      const key = `${o.k.includes('attr') ? 'a' : 'e'}:${o.vol}:${o.ino}:${nameKey.toString('hex')}`;
      if (o.k === 'attr') { m.putAttr(o.vol, o.ino, attrOf(o.v)); model.set(key, o.v); }
      else if (o.k === 'entry') { m.putEntry(o.vol, o.ino, nameKey, o.v === null ? null : { fh: Buffer.from([o.v & 255]), ino: o.v }); model.set(key, o.v); }
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
          if (v === null ? got !== null : got === null || got.ino !== v || got.fh[0] !== (v & 255)) return false;
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

test('an attribute slot says whether the inode has extended attributes, only when told', (t) => {
  const m = make(64);
  m.putAttr(1, 5, attrOf(5));
  t.false(m.noXattrs(1, 5), 'not said: unknown');
  m.putAttr(1, 5, attrOf(5), false);
  t.true(m.noXattrs(1, 5));
  t.deepEqual(m.getAttr(1, 5), attrOf(5));
  m.refreshAttr(1, 5, attrOf(6), true);
  t.false(m.noXattrs(1, 5));
  t.false(m.noXattrs(1, 6), 'not held');
});

test('a fence: readers answer nothing while it is odd; it outlives a host restart; a table of another version is cleared', (t) => {
  const buf = new ArrayBuffer(MetaTable.geometry(1 << 20).slotsAt + 64 * SLOT_SIZE);
  const host = MetaTable.create(buf);
  const guest = MetaTable.attach(buf);
  const attr = Array.from({ length: 16 }, (_, i) => i + 1);
  host.putAttr(1, 5, attr);
  t.deepEqual(guest.getAttr(1, 5), attr);
  host.setFence(true);
  const fence = guest.fence;
  t.true(guest.fenced && (fence & 1) === 1);
  t.is(guest.getAttr(1, 5), undefined, 'a fenced reader misses');
  host.setFence(true);
  t.is(guest.fence, fence, 'fencing a fenced table changes nothing (the agent acknowledges one value)');
  // A host restart keeps the fence: the agent it fenced has not revalidated yet.
  const again = MetaTable.create(buf);
  t.true(again.fenced);
  again.setFence(false);
  t.false(guest.fenced);
  again.putAttr(1, 5, attr);
  t.deepEqual(guest.getAttr(1, 5), attr);
  again.setFence(true);
  t.not(guest.fence, fence, 'each fence has its own value');
  // A version-1 table (an older host): its slots go, and so does its generation's evenness meanwhile.
  new DataView(buf).setUint32(4, 1, true);
  const gen = new DataView(buf).getUint32(16, true);
  const upgraded = MetaTable.create(buf);
  t.is(upgraded.getAttr(1, 5), undefined, "nothing of another version's table is kept");
  t.false(upgraded.fenced);
  t.true(upgraded.generation > gen && (upgraded.generation & 1) === 0, 'the generation moves on, never back');
});

test('a complete directory: a name not held is absent; evicting or removing one of its entries unmarks it first', (t) => {
  const m = make(PROBE);
  m.putEntry(1, 7, Buffer.from('a'), { fh: Buffer.from([1]), ino: 9 });
  t.false(m.isComplete(1, 7));
  m.markComplete(1, 7);
  t.true(m.isComplete(1, 7));
  t.true(m.holdsComplete(1, 7));
  t.false(m.isComplete(1, 8), 'another directory');
  t.false(m.isComplete(2, 7), 'another volume');
  m.removeEntry(1, 7, Buffer.from('a'));
  t.false(m.isComplete(1, 7), 'a removed entry unmarks its directory');
  m.markComplete(1, 7);
  m.setFence(true);
  t.false(m.isComplete(1, 7), 'a fenced reader answers nothing');
  m.setFence(false);
  t.true(m.isComplete(1, 7));
  m.putEntry(1, 7, Buffer.from('a'), { fh: Buffer.from([1]), ino: 9 });
  for (let i = 0; i < 2 * PROBE; i++) m.putAttr(3, 100 + i, attrOf(i)); // a full table evicts everything in turn
  t.true(m.getEntry(1, 7, Buffer.from('a')) !== undefined || !m.isComplete(1, 7), 'an evicted name is never read as absent');
  t.false(m.isComplete(1, 7));

  // Against a model: whatever the host put last for a name is its truth (present or absent); the host
  // marks a directory complete only when it holds each present name, as the publisher does. Then a
  // present name is never answered absent, whatever evictions happened.
  const op = fc.oneof(
    fc.record({ k: fc.constant('entry' as const), dir: fc.nat(3), name: fc.nat(6), v: fc.option(fc.nat(1000)) }),
    fc.record({ k: fc.constant('attr' as const), ino: fc.nat(40) }),
    fc.record({ k: fc.constant('rmentry' as const), dir: fc.nat(3), name: fc.nat(6) }),
    fc.record({ k: fc.constant('complete' as const), dir: fc.nat(3) }),
  );
  fc.assert(fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: PROBE, max: 40 }), (ops, slots) => {
    const t2 = make(slots);
    const truth = new Map<string, number | null>();
    const nm = (n: number) => Buffer.from(`n${n}`);
    for (const o of ops) {
      if (o.k === 'entry') { t2.putEntry(1, o.dir, nm(o.name), o.v === null ? null : { fh: Buffer.from([1]), ino: o.v }); truth.set(`${o.dir}:${o.name}`, o.v); }
      else if (o.k === 'attr') t2.putAttr(1, o.ino % 4, attrOf(o.ino)); // keyed like the marks: they compete for slots
      else if (o.k === 'rmentry') t2.removeEntry(1, o.dir, nm(o.name));
      else {
        const present = [...truth].filter(([k, v]) => v !== null && k.startsWith(`${o.dir}:`)).map(([k]) => Number(k.split(':')[1]));
        if (present.every((n) => t2.hasEntry(1, o.dir, nm(n)))) t2.markComplete(1, o.dir);
      }
      for (let dir = 0; dir <= 3; dir++) {
        for (let n = 0; n <= 6; n++) {
          const got = t2.getEntry(1, dir, nm(n));
          const absent = got === null || (got === undefined && t2.isComplete(1, dir));
          const v = truth.get(`${dir}:${n}`);
          if (absent && v !== undefined && v !== null) return false;
        }
      }
    }
    return true;
  }), { numRuns: 300 });
});
