// Field-level LWW: the shared vectors (core/tests/conflict_vectors.json, which
// the Rust tests read too: the cases and the worked examples of
// docs/PROTOCOL.md section 4.5) under every arrival and merge order, and the
// browser client's own edges.
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
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

test('the shared conflict vectors: every arrival order and every merge order ends in the expected state', () => {
  const { cases } = JSON.parse(readFileSync(new URL('../../core/tests/conflict_vectors.json', import.meta.url), 'utf8'));
  assert.ok(cases.length >= 10);
  for (const { name, changes, live, value, clocks } of cases) {
    const whole = converges(changes);
    assert.equal(isRowLive(whole), live, `${name}: live`);
    assert.equal(canonical(whole.value), canonical(value), `${name}: value`);
    if (clocks) assert.equal(canonical(whole.clocks), canonical(clocks), `${name}: clocks`);
    // Replicas holding one change each merge to the same state.
    const parts = changes.map(([op, p, stamp]) => {
      const state = emptyRowState();
      applyRowChange(state, op, structuredClone(p), stamp);
      return state;
    });
    for (const order of permutations(parts.length)) {
      const merged = emptyRowState();
      for (const i of order) mergeRowStates(merged, rowStateFromParts(structuredClone(parts[i].value), structuredClone(parts[i].clocks)));
      assert.equal(canonical(merged), canonical(whole), `${name}: merge order ${order}`);
    }
  }
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
