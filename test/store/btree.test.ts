import test from 'ava';
import fc from 'fast-check';
import { CowTree, MemoryNodeStore, LEAF_MAX } from '../../src/store/btree.js';

type V = string;

function setup() {
  const ns = new MemoryNodeStore<V>();
  const held = new Map<V, number>();
  const tree = new CowTree<V>(ns, {
    retain: (v) => held.set(v, (held.get(v) ?? 0) + 1),
    release: (v) => {
      const n = (held.get(v) ?? 0) - 1;
      if (n < 0) throw new Error(`released ${v} more than retained`);
      if (n === 0) held.delete(v); else held.set(v, n);
    },
  });
  return { ns, tree, held };
}

const key = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };

function contents(tree: CowTree<V>, root: number): Array<[number, V]> {
  const out: Array<[number, V]> = [];
  tree.each(root, Buffer.alloc(0), null, (k, v) => { out.push([k.readUInt32BE(0), v]); });
  return out;
}

test('put, get, delete and ordered iteration across many splits', (t) => {
  const { tree } = setup();
  let root = 0;
  const n = LEAF_MAX * 200;
  for (let i = 0; i < n; i++) root = tree.put(root, key((i * 7919) % n), `v${(i * 7919) % n}`);
  t.is(tree.get(root, key(1234)), 'v1234');
  const all = contents(tree, root);
  t.is(all.length, n);
  t.true(all.every(([k], i) => k === i));
  for (let i = 0; i < n; i += 2) root = tree.del(root, key(i));
  t.is(tree.get(root, key(2)), undefined);
  t.is(tree.get(root, key(3)), 'v3');
  t.is(contents(tree, root).length, n / 2);
  t.deepEqual(tree.first(root, key(100), key(200)), [key(101), 'v101']);
});

test('a clone shares every node until written, then copies only its path', (t) => {
  const { ns, tree } = setup();
  let a = 0;
  for (let i = 0; i < 5000; i++) a = tree.put(a, key(i), `a${i}`);
  const nodesBefore = ns.nodes.size;
  tree.retain(a);
  let b = a;
  t.is(ns.nodes.size, nodesBefore, 'clone allocates nothing');
  b = tree.put(b, key(42), 'changed');
  t.not(b, a);
  t.true(ns.nodes.size - nodesBefore <= 4, `a write copied ${ns.nodes.size - nodesBefore} nodes`);
  t.is(tree.get(a, key(42)), 'a42');
  t.is(tree.get(b, key(42)), 'changed');
  t.is(tree.get(b, key(43)), 'a43');
});

test('model check: random operations on random clones match Maps, and releasing everything frees everything', (t) => {
  fc.assert(fc.property(
    fc.array(fc.tuple(fc.constantFrom('put', 'del', 'clone', 'drop'), fc.nat(3), fc.nat(400), fc.nat(5)), { maxLength: 300 }),
    (ops) => {
      const { ns, tree, held } = setup();
      const roots: number[] = [0];
      const models: Array<Map<number, V>> = [new Map()];
      for (const [op, which, k, v] of ops) {
        const i = which % roots.length;
        if (op === 'put') { roots[i] = tree.put(roots[i], key(k), `v${v}`); models[i].set(k, `v${v}`); }
        else if (op === 'del') { roots[i] = tree.del(roots[i], key(k)); models[i].delete(k); }
        else if (op === 'clone' && roots.length < 6) { tree.retain(roots[i]); roots.push(roots[i]); models.push(new Map(models[i])); }
        else if (op === 'drop' && roots.length > 1) { tree.release(roots[i]); roots.splice(i, 1); models.splice(i, 1); }
      }
      roots.forEach((r, i) => {
        const expect = [...models[i]].sort((x, y) => x[0] - y[0]);
        if (JSON.stringify(contents(tree, r)) !== JSON.stringify(expect)) throw new Error(`tree ${i} differs from its model`);
      });
      // Value references must equal the number of leaf slots holding them.
      const counted = new Map<V, number>();
      const seen = new Set<number>();
      for (const r of roots) tree.visitNodes(r, (id, n) => {
        if (seen.has(id)) return false;
        seen.add(id);
        if (n.l === 1) for (const v of n.v) counted.set(v, (counted.get(v) ?? 0) + 1);
      });
      if (JSON.stringify([...counted].sort()) !== JSON.stringify([...held].sort())) throw new Error('value references out of balance');
      for (const r of roots) tree.release(r);
      if (ns.nodes.size !== 0) throw new Error(`${ns.nodes.size} nodes leaked`);
      if (held.size !== 0) throw new Error(`${held.size} values still referenced`);
    },
  ), { numRuns: 150 });
  t.pass();
});
