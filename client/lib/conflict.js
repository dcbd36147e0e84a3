/**
 * Field-level last-writer-wins, the mirror of the server's (`core/src/conflict.rs`).
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/conflict
 */

import { SyncError } from './errors.js';
import { canonicalHlc } from './hlc.js';
/**
 * Who wrote a value and when: `[clock, actor, op_id]`, the clock canonical.
 * @typedef {[clock: string, actor: string, opId: string]} Stamp
 */

/**
 * The merge state of a row, as in a snapshot's `clocks`: tombstone `t`
 * (largest delete), inserted `i` (largest insert), and `f`, the stamp of each
 * field of `value`.
 * @typedef {{ t: Stamp | null, i: Stamp | null, f: Record<string, Stamp> }} Clocks
 */

/**
 * One row's state: its current fields and their clocks (`RowState`).
 * @typedef {{ value: Record<string, unknown>, clocks: Clocks }} RowState
 */

const WRITE = 0;
const DELETE = 1;

/**
 * Compare two strings byte-wise in UTF-8, as Rust compares `str` (which is
 * code point order; JavaScript's `<` compares UTF-16 units instead).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareText(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let k = 0; k < n; k++) {
    let x = a.charCodeAt(k);
    let y = b.charCodeAt(k);
    if (x !== y) {
      // Surrogates (U+10000 and up) sort after U+E000..U+FFFF in code point order.
      if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
      if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
      return x - y;
    }
  }
  return a.length - b.length;
}

/** (clock, rank, actor, op_id) order. Stamps in states are canonical, so clocks compare as text. */
function compareKeys(/** @type {Stamp} */ a, /** @type {number} */ rankA, /** @type {Stamp} */ b, /** @type {number} */ rankB) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return rankA - rankB || compareText(a[1], b[1]) || compareText(a[2], b[2]);
}

/** @param {Stamp} a @param {Stamp} b @param {number} rank */
function newer(a, b, rank) {
  return compareKeys(a, rank, b, rank) > 0;
}

/** The write stamp `a` orders after the tombstone `t`. @param {Stamp} a @param {Stamp} t */
function writeBeatsDelete(a, t) {
  return compareKeys(a, WRITE, t, DELETE) > 0;
}

/**
 * A stamp with its clock canonical, or null when it is not a stamp.
 * @param {unknown} s
 * @returns {Stamp | null}
 */
function toStamp(s) {
  if (!Array.isArray(s) || s.length !== 3 || typeof s[1] !== 'string' || typeof s[2] !== 'string') return null;
  try {
    return [canonicalHlc(/** @type {string} */ (s[0])), s[1], s[2]];
  } catch {
    return null;
  }
}

/** @param {unknown} s @returns {Stamp} */
export function requireStamp(s) {
  const stamp = toStamp(s);
  if (!stamp) throw new SyncError('SYNC:INVALID_CHANGE', `not a stamp [clock, actor, op_id]: ${JSON.stringify(s)}`);
  return stamp;
}

/** @param {unknown} v @returns {v is Record<string, unknown>} */
export function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Set an own property, `__proto__` included. */
export function setOwn(/** @type {Record<string, unknown>} */ obj, /** @type {string} */ key, /** @type {unknown} */ value) {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/** An own property's value or undefined. */
export function getOwn(/** @type {Record<string, unknown>} */ obj, /** @type {string} */ key) {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/**
 * A row state that has seen nothing.
 * @returns {RowState}
 */
export function emptyRowState() {
  return { value: {}, clocks: { t: null, i: null, f: {} } };
}

/** @param {RowState} state @param {Stamp} stamp */
function applyDelete(state, stamp) {
  const { clocks } = state;
  if (clocks.t !== null && !newer(stamp, clocks.t, DELETE)) return false;
  for (const k of Object.keys(clocks.f)) {
    if (!writeBeatsDelete(clocks.f[k], stamp)) {
      delete clocks.f[k];
      delete state.value[k];
    }
  }
  clocks.t = stamp;
  return true;
}

/** @param {RowState} state @param {string} name @param {unknown} value @param {Stamp} stamp */
function writeField(state, name, value, stamp) {
  const { clocks } = state;
  if (clocks.t !== null && !writeBeatsDelete(stamp, clocks.t)) return false;
  const current = /** @type {Stamp | undefined} */ (getOwn(clocks.f, name));
  if (current !== undefined && !newer(stamp, current, WRITE)) return false;
  setOwn(state.value, name, value);
  setOwn(clocks.f, name, stamp);
  return true;
}

/**
 * Fold one change into a row state, in place (`RowState::apply`):
 * a delete raises the tombstone and drops older fields; an insert or update
 * writes each payload field whose stamp is larger, unless the tombstone is
 * larger; an insert also raises `i`. Values are stored by reference.
 * @param {RowState} state
 * @param {'insert' | 'update' | 'delete'} op
 * @param {unknown} payload the row (insert), the changed fields (update), ignored (delete)
 * @param {Stamp} stamp `[clock, actor, op_id]`; the clock may be any accepted clock text
 * @returns {boolean} whether the state changed
 */
export function applyRowChange(state, op, payload, stamp) {
  const s = requireStamp(stamp);
  if (op === 'delete') return applyDelete(state, s);
  if (op !== 'insert' && op !== 'update') throw new SyncError('SYNC:INVALID_CHANGE', `unknown op ${JSON.stringify(op)}`);
  let changed = false;
  if (op === 'insert' && (state.clocks.i === null || newer(s, state.clocks.i, WRITE))) {
    state.clocks.i = s;
    changed = true;
  }
  if (isObject(payload)) {
    for (const [k, v] of Object.entries(payload)) changed = writeField(state, k, v, s) || changed;
  }
  return changed;
}

/**
 * Join another replica's state of the same row into `state`, in place
 * (`RowState::merge`).
 * @param {RowState} state
 * @param {RowState} other
 * @returns {boolean} whether `state` changed
 */
export function mergeRowStates(state, other) {
  let changed = false;
  if (other.clocks.t) changed = applyDelete(state, requireStamp(other.clocks.t)) || changed;
  if (other.clocks.i) {
    const i = requireStamp(other.clocks.i);
    if (state.clocks.i === null || newer(i, state.clocks.i, WRITE)) {
      state.clocks.i = i;
      changed = true;
    }
  }
  for (const k of Object.keys(other.value)) {
    const stamp = getOwn(other.clocks.f, k);
    if (stamp !== undefined) changed = writeField(state, k, other.value[k], requireStamp(stamp)) || changed;
  }
  return changed;
}

/**
 * Whether the row exists: its latest insert orders after its tombstone.
 * @param {RowState} state
 * @returns {boolean}
 */
export function isRowLive(state) {
  const { i, t } = state.clocks;
  return i !== null && (t === null || writeBeatsDelete(i, t));
}

/**
 * Rebuild a row state from a snapshot row's `value` and `clocks`
 * (`RowState::from_parts`), clocks canonicalized. Null when they do not fit
 * together (a field without a stamp, a malformed stamp).
 * @param {unknown} value
 * @param {unknown} clocks
 * @returns {RowState | null}
 */
export function rowStateFromParts(value, clocks) {
  if (!isObject(value) || !isObject(clocks) || !isObject(clocks.f)) return null;
  /** @param {'t' | 'i'} k @returns {Stamp | null | undefined} */
  const stampAt = (k) => (clocks[k] === undefined || clocks[k] === null ? null : toStamp(clocks[k]) ?? undefined);
  const t = stampAt('t');
  const i = stampAt('i');
  if (t === undefined || i === undefined) return null;
  /** @type {RowState} */
  const state = { value: {}, clocks: { t, i, f: {} } };
  for (const [k, v] of Object.entries(value)) {
    const s = toStamp(getOwn(clocks.f, k));
    if (!s) return null;
    setOwn(state.value, k, v);
    setOwn(state.clocks.f, k, s);
  }
  return state;
}
