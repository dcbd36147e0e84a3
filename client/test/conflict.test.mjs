// Field-level LWW: the cases of the Rust tests in src/conflict.rs and the
// worked examples of docs/PROTOCOL.md section 4.5, each checked under every
// arrival order, with the same expected results (clocks included).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyRowChange,
  emptyRowState,
  isRowLive,
  mergeRowStates,
  rowStateFromParts,
  formatHlc,
  compareText,
} from '../better-sync.js';

/** The stamp `st(ms, actor, op)` of the Rust tests: clock (ms, counter 0). */
const st = (ms, actor, op) => [formatHlc({ millis: ms, counter: 0 }), actor, op];
/** Clock `Tnn` of the protocol examples: 2026-11-25T10:00:nn.000Z-0000. */
const T = (s) => `2026-11-25T10:00:${String(s).padStart(2, '0')}.000Z-0000`;

/** JSON with object keys sorted, so states compare like Rust's BTreeMaps. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function permutations(n) {
  if (n === 0) return [[]];
  return permutations(n - 1).flatMap((p) => Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)]));
}

/** Every permutation of the changes ends in the same state; returns it. */
function converges(changes) {
  let first = null;
  for (const order of permutations(changes.length)) {
    const s = emptyRowState();
    for (const i of order) {
      const [op, payload, stamp] = changes[i];
      applyRowChange(s, op, structuredClone(payload), stamp);
    }
    if (first === null) first = s;
    else assert.equal(canonical(s), canonical(first), `order ${order}`);
  }
  return first;
}

test('concurrent updates of different fields both survive', () => {
  const s = converges([
    ['insert', { id: '1', title: 'a', done: false }, st(1, 'x', 'o1')],
    ['update', { title: 'b' }, st(5, 'x', 'o2')],
    ['update', { done: true }, st(4, 'y', 'o3')],
  ]);
  assert.deepEqual(s.value, { id: '1', title: 'b', done: true });
  assert.ok(isRowLive(s));
});

test('same field: latest clock wins, then the larger actor', () => {
  let s = converges([
    ['insert', { title: 'a' }, st(1, 'x', 'o1')],
    ['update', { title: 'late' }, st(9, 'a', 'o2')],
    ['update', { title: 'early' }, st(8, 'z', 'o3')],
  ]);
  assert.equal(s.value.title, 'late');
  s = converges([
    ['insert', { title: 'a' }, st(1, 'x', 'o1')],
    ['update', { title: 'from-a' }, st(9, 'a', 'o2')],
    ['update', { title: 'from-b' }, st(9, 'b', 'o3')],
  ]);
  assert.equal(s.value.title, 'from-b');
  // Same actor and clock: the larger op id wins.
  s = converges([
    ['update', { title: 'o2' }, st(9, 'a', 'o2')],
    ['update', { title: 'o3' }, st(9, 'a', 'o3')],
  ]);
  assert.equal(s.value.title, 'o3');
});

test('delete wins a tie; an update after a delete does not resurrect', () => {
  let s = converges([
    ['insert', { title: 'a' }, st(1, 'x', 'o1')],
    ['update', { title: 'b' }, st(5, 'z', 'o2')],
    ['delete', null, st(5, 'a', 'o3')],
  ]);
  assert.ok(!isRowLive(s));
  assert.deepEqual(s.value, {});
  s = converges([
    ['insert', { title: 'a' }, st(1, 'x', 'o1')],
    ['delete', null, st(5, 'a', 'o3')],
    ['update', { title: 'c' }, st(6, 'z', 'o2')],
  ]);
  assert.ok(!isRowLive(s));
});

test('an insert after a delete re-creates the row with the new fields only', () => {
  let s = converges([
    ['insert', { id: '1', title: 'a', note: 'n' }, st(1, 'x', 'o1')],
    ['delete', null, st(5, 'x', 'o2')],
    ['insert', { id: '1', title: 'again' }, st(7, 'y', 'o3')],
  ]);
  assert.ok(isRowLive(s));
  assert.deepEqual(s.value, { id: '1', title: 'again' });
  // An insert older than the delete stays deleted.
  s = converges([
    ['delete', null, st(5, 'x', 'o2')],
    ['insert', { id: '1' }, st(3, 'y', 'o3')],
  ]);
  assert.ok(!isRowLive(s));
});

test('replays change nothing and states round-trip through value + clocks', () => {
  const s = emptyRowState();
  const stamp = st(1, 'x', 'o1');
  assert.equal(applyRowChange(s, 'insert', { a: 1 }, stamp), true);
  assert.equal(applyRowChange(s, 'insert', { a: 1 }, stamp), false);
  applyRowChange(s, 'delete', null, st(2, 'x', 'o2'));
  applyRowChange(s, 'update', { b: [1, 2] }, st(3, 'y', 'o3'));
  const back = rowStateFromParts(structuredClone(s.value), structuredClone(s.clocks));
  assert.equal(canonical(back), canonical(s));
  const merged = emptyRowState();
  mergeRowStates(merged, s);
  assert.equal(canonical(merged), canonical(s));
  assert.equal(mergeRowStates(merged, s), false, 'merging the same state again changes nothing');
});

test('protocol example 1: concurrent updates of different fields', () => {
  const s = converges([
    ['insert', { id: '1', title: 'a', done: false }, [T(1), 'x', 'o1']],
    ['update', { title: 'b' }, [T(5), 'x', 'o2']],
    ['update', { done: true }, [T(4), 'y', 'o3']],
  ]);
  assert.deepEqual(s.value, { id: '1', title: 'b', done: true });
  assert.deepEqual(s.clocks.f, { id: [T(1), 'x', 'o1'], title: [T(5), 'x', 'o2'], done: [T(4), 'y', 'o3'] });
  // c2 alone: the field is kept but the row does not exist before an insert.
  const only = emptyRowState();
  applyRowChange(only, 'update', { title: 'b' }, [T(5), 'x', 'o2']);
  assert.ok(!isRowLive(only));
  assert.deepEqual(only.value, { title: 'b' });
});

test('protocol example 3: delete-first at an equal clock, exact clocks', () => {
  const s = converges([
    ['insert', { title: 'a' }, [T(1), 'x', 'o1']],
    ['update', { title: 'b' }, [T(5), 'z', 'o2']],
    ['delete', null, [T(5), 'a', 'o3']],
  ]);
  assert.ok(!isRowLive(s));
  assert.deepEqual(s, { value: {}, clocks: { t: [T(5), 'a', 'o3'], i: [T(1), 'x', 'o1'], f: {} } });
});

test('protocol example 4: update after delete, then insert after delete, exact clocks', () => {
  const changes = [
    ['insert', { id: '1', title: 'a', note: 'n' }, [T(1), 'x', 'o1']],
    ['delete', null, [T(5), 'x', 'o2']],
    ['update', { title: 'c' }, [T(6), 'z', 'o4']],
    ['insert', { id: '1' }, [T(7), 'y', 'o5']],
  ];
  const before = converges(changes.slice(0, 3));
  assert.ok(!isRowLive(before));
  assert.deepEqual(before.value, { title: 'c' });
  const s = converges(changes);
  assert.ok(isRowLive(s));
  assert.equal(
    canonical(s),
    canonical({
      value: { id: '1', title: 'c' },
      clocks: {
        t: [T(5), 'x', 'o2'],
        i: [T(7), 'y', 'o5'],
        f: { id: [T(7), 'y', 'o5'], title: [T(6), 'z', 'o4'] },
      },
    }),
  );
  // Had c4 been at T03 (older than the delete), the row stays deleted.
  const late = converges([...changes.slice(0, 3), ['insert', { id: '1' }, [T(3), 'y', 'o5']]]);
  assert.ok(!isRowLive(late));
});

test('merging replica states converges whatever the order (the join of RowState::merge)', () => {
  const changes = [
    ['insert', { id: '1', title: 'a', note: 'n' }, [T(1), 'x', 'o1']],
    ['update', { title: 'b' }, [T(4), 'y', 'o2']],
    ['delete', null, [T(5), 'x', 'o3']],
    ['update', { note: 'm' }, [T(6), 'z', 'o4']],
    ['insert', { id: '1', done: true }, [T(7), 'y', 'o5']],
  ];
  const whole = converges(changes);
  // Each change as a one-change replica state; merge them in every order.
  const parts = changes.map(([op, p, stamp]) => {
    const s = emptyRowState();
    applyRowChange(s, op, structuredClone(p), stamp);
    return s;
  });
  for (const order of permutations(parts.length)) {
    const s = emptyRowState();
    for (const i of order) mergeRowStates(s, rowStateFromParts(parts[i].value, parts[i].clocks));
    assert.equal(canonical(s), canonical(whole), `order ${order}`);
  }
  assert.deepEqual(whole.value, { id: '1', note: 'm', done: true });
});

test('plain ISO clocks are canonicalized into the state and order like canonical ones', () => {
  const s = emptyRowState();
  applyRowChange(s, 'insert', { a: 1 }, ['2026-11-25T10:00:01Z', 'x', 'o1']);
  applyRowChange(s, 'update', { a: 2 }, ['2026-11-25T10:00:00.999Z-0001', 'x', 'o2']);
  assert.deepEqual(s.clocks.f.a, ['2026-11-25T10:00:01.000Z-0000', 'x', 'o1']);
  assert.equal(s.value.a, 1);
  assert.throws(() => applyRowChange(s, 'update', { a: 3 }, ['soon', 'x', 'o3']), { code: 'SYNC:INVALID_CHANGE' });
});

test('actors and op ids compare byte-wise in UTF-8, as Rust compares strings', () => {
  assert.ok(compareText('B', 'a') < 0);
  assert.ok(compareText('a', 'ab') < 0);
  // U+FF5E (3 bytes EF BD 9E) sorts before U+1F600 (4 bytes F0 ...), unlike UTF-16 order.
  assert.ok(compareText('\uff5e', '\u{1f600}') < 0);
  assert.ok('\uff5e' > '\u{1f600}', 'JavaScript < would get it wrong');
  const s = converges([
    ['update', { t: 'emoji' }, [T(9), '\u{1f600}', 'o1']],
    ['update', { t: 'fullwidth' }, [T(9), '\uff5e', 'o2']],
  ]);
  assert.equal(s.value.t, 'emoji');
});

test('rowStateFromParts refuses value and clocks that do not fit', () => {
  assert.equal(rowStateFromParts({ a: 1 }, { t: null, i: null, f: {} }), null);
  assert.equal(rowStateFromParts({}, { t: ['bad', 'x', 'o'], i: null, f: {} }), null);
  assert.equal(rowStateFromParts({}, { t: null, i: null }), null);
  assert.equal(rowStateFromParts([], { t: null, i: null, f: {} }), null);
  const ok = rowStateFromParts({ a: 1 }, { i: [T(1), 'x', 'o1'], f: { a: ['2026-11-25T10:00:01Z', 'x', 'o1'], extra: [T(2), 'x', 'o2'] } });
  assert.deepEqual(ok, { value: { a: 1 }, clocks: { t: null, i: [T(1), 'x', 'o1'], f: { a: [T(1), 'x', 'o1'] } } });
});

test('a field named __proto__ is an ordinary field', () => {
  const s = emptyRowState();
  applyRowChange(s, 'insert', JSON.parse('{"__proto__": {"polluted": true}, "a": 1}'), [T(1), 'x', 'o1']);
  assert.deepEqual(Object.keys(s.value).sort(), ['__proto__', 'a']);
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(s.value), Object.prototype);
});
