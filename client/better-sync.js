/**
 * better-sync browser client: a dependency-free ES module.
 *
 * Local first: every write goes to local storage (IndexedDB in the browser)
 * together with a persistent outbox, in one transaction, and returns at once.
 * A background loop pushes the outbox to the server and folds the server's
 * changes into the local rows with the same field-level last-writer-wins rules
 * as the server (`src/conflict.rs`), so every replica converges.
 *
 * ```js
 * import { createSyncClient, idb, ws } from '/api/sync/client.js';
 * const sync = createSyncClient({
 *   baseUrl: location.origin,
 *   storage: idb({ dbName: 'app' }),
 *   transport: ws({ baseUrl: location.origin }),
 *   auth: { headers: () => ({ Authorization: `Bearer ${token()}` }) },
 *   conflict: 'lww',
 * });
 * await sync.connect();
 * await sync.applyChange('todo', { type: 'insert', id: '1', value: { id: '1', title: 'Write docs', done: false } });
 * const stop = sync.subscribeQuery({ model: 'todo', where: { done: false } }, (rows) => render(rows));
 * ```
 *
 * Wire protocol: `docs/PROTOCOL.md` (protocol version 1).
 *
 * @module better-sync
 */

/** The wire protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------
// Ids

/**
 * A new UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then
 * random bits. Ids made later sort later, so the server's indexes take
 * them near one end instead of all over: the client uses them for op ids,
 * and they make good row ids too (a commit of changes with random keys
 * writes a page of the index per change; measured in docs/PERFORMANCE.md).
 *
 * @returns {string} e.g. `0192f1c4-5a3e-7b2c-9d10-3f6a2b8e4c71`
 */
export function uuidv7() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  const ms = Date.now();
  for (let i = 0; i < 6; i++) b[i] = Math.floor(ms / 2 ** (8 * (5 - i))) & 0xff;
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------
// Errors

/**
 * An error of the sync client. `code` is the server's `SYNC:*` code when the
 * server answered with one, or one of the client's own codes:
 * `NETWORK` (server unreachable, timeout, socket failure), `BAD_RESPONSE`
 * (an answer that is not the protocol), `ABORTED` (the client disconnected),
 * `CLIENT_ERROR` (an unexpected local failure, e.g. of storage).
 * Local validation failures of {@link SyncClient.applyChange} use the server's
 * codes `SYNC:INVALID_CHANGE` and `SYNC:UNKNOWN_MODEL` with `status` 0.
 */
export class SyncError extends Error {
  /**
   * @param {string} code machine-readable code
   * @param {string} message human-readable explanation
   * @param {{ status?: number, meta?: Record<string, unknown> | null, retryAfterMs?: number | null, cause?: unknown }} [init]
   */
  constructor(code, message, init = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'SyncError';
    /** @type {string} */
    this.code = code;
    /** HTTP status of the answer, 0 when there was none. @type {number} */
    this.status = init.status ?? 0;
    /** The answer's `meta` (`index`, `op_id`, `field`, `max`, `retryAfterMs`). @type {Record<string, unknown> | null} */
    this.meta = init.meta ?? null;
    /** Delay the server asked for before retrying, in ms. @type {number | null} */
    this.retryAfterMs = init.retryAfterMs ?? null;
  }
}

/** @param {unknown} e @returns {SyncError} */
function asSyncError(e) {
  if (e instanceof SyncError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new SyncError('CLIENT_ERROR', message, { cause: e });
}

// ---------------------------------------------------------------------------
// Hybrid logical clock (mirror of src/hlc.rs)

/**
 * A clock reading: milliseconds since the Unix epoch and a 16-bit counter.
 * @typedef {{ millis: number, counter: number }} Hlc
 */

/** Largest counter a clock carries in its four hex digits. */
export const MAX_COUNTER = 0xffff;

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

/** @param {number} y @param {number} m */
function daysInMonth(y, m) {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(m) ? 30 : 31;
}

/** Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm). */
function daysFromCivil(/** @type {number} */ y, /** @type {number} */ m, /** @type {number} */ d) {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/**
 * Milliseconds of an RFC 3339 date-time exactly as chrono's
 * `DateTime::parse_from_rfc3339` reads it (leap second 60 included), or null.
 * @param {string} s
 */
function rfc3339Millis(s) {
  const m = RFC3339.exec(s);
  if (!m) return null;
  const [year, month, day, hour, minute] = m.slice(1, 6).map(Number);
  const second = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null;
  if (hour > 23 || minute > 59 || second > 60) return null;
  let offsetMinutes = 0;
  if (m[8]) {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) return null;
    offsetMinutes = (m[8] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  // Digits past the millisecond are dropped; a leap second counts as 59 s + 1000 ms.
  const fraction = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  const leap = second === 60 ? 1000 : 0;
  const seconds = (hour * 60 + minute) * 60 + Math.min(second, 59);
  return daysFromCivil(year, month, day) * 86_400_000 + seconds * 1000 + fraction + leap - offsetMinutes * 60_000;
}

/** 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the clocks with a four-digit year. */
const MIN_CLOCK_MILLIS = -62167219200000;
const MAX_CLOCK_MILLIS = 253402300799999;

/**
 * Parse a clock value: any RFC 3339 date-time (a plain `toISOString()` is
 * counter 0), optionally followed after an upper-case `Z` by `-` and 1 to 4
 * hex counter digits. Same acceptance as the server.
 * @param {string} text
 * @returns {Hlc}
 * @throws {SyncError} `SYNC:INVALID_CHANGE` when the text is not a clock
 */
export function parseHlc(text) {
  const bad = () =>
    new SyncError(
      'SYNC:INVALID_CHANGE',
      `invalid clock value ${JSON.stringify(String(text).slice(0, 64))}: expected an ISO-8601 UTC time such as 2026-11-25T10:00:00.000Z, optionally followed by -CCCC (hex counter)`,
      { meta: { field: 'updated_at' } },
    );
  if (typeof text !== 'string' || text.length > 64 || !/^[\x00-\x7f]*$/.test(text)) throw bad();
  let time = text;
  let counter = 0;
  const dash = text.lastIndexOf('-');
  const digits = text.slice(dash + 1);
  if (dash >= 0 && digits.length >= 1 && digits.length <= 4 && text.slice(0, dash).endsWith('Z')) {
    if (!/^[0-9a-fA-F]+$/.test(digits)) throw bad();
    counter = parseInt(digits, 16);
    time = text.slice(0, dash);
  }
  const millis = rfc3339Millis(time);
  // As the server: a time an offset carries out of the years 0000-9999
  // would have no four-digit canonical text.
  if (millis === null || millis < MIN_CLOCK_MILLIS || millis > MAX_CLOCK_MILLIS) throw bad();
  return { millis, counter };
}

/**
 * The canonical text of a clock: `YYYY-MM-DDTHH:MM:SS.mmmZ-CCCC`, the counter
 * as four lower-case hex digits. Canonical texts sort lexically in clock order.
 * @param {Hlc} hlc
 * @returns {string}
 */
export function formatHlc({ millis, counter }) {
  return `${new Date(millis).toISOString()}-${counter.toString(16).padStart(4, '0')}`;
}

/**
 * Canonicalize a clock text (`parseHlc` then `formatHlc`).
 * @param {string} text
 * @returns {string}
 */
export function canonicalHlc(text) {
  return formatHlc(parseHlc(text));
}

/**
 * Order two clocks: physical time, then counter. Accepts texts or readings.
 * @param {Hlc | string} a
 * @param {Hlc | string} b
 * @returns {number} negative, 0 or positive
 */
export function compareHlc(a, b) {
  const x = typeof a === 'string' ? parseHlc(a) : a;
  const y = typeof b === 'string' ? parseHlc(b) : b;
  return x.millis - y.millis || x.counter - y.counter;
}

/**
 * A hybrid logical clock for one replica (mirror of `HlcClock` in hlc.rs):
 * every reading is greater than the previous one and than every remote clock
 * it has observed.
 */
export class HlcClock {
  /** @type {Hlc} */
  #last;

  /** @param {string | Hlc} [last] a reading to continue from (e.g. persisted) */
  constructor(last) {
    this.#last = { millis: 0, counter: 0 };
    if (last !== undefined) this.observe(last);
  }

  /**
   * A new local event: the wall clock if it moved past the last reading, else
   * the last reading with counter + 1 (the next millisecond at counter `ffff`).
   * @param {number} [wallMillis] the wall clock, default `Date.now()`
   * @returns {string} the canonical clock text
   */
  tick(wallMillis = Date.now()) {
    const last = this.#last;
    if (wallMillis > last.millis) this.#last = { millis: wallMillis, counter: 0 };
    else if (last.counter === MAX_COUNTER) this.#last = { millis: last.millis + 1, counter: 0 };
    else this.#last = { millis: last.millis, counter: last.counter + 1 };
    return formatHlc(this.#last);
  }

  /**
   * Merge a clock seen elsewhere so that later ticks order after it.
   * @param {string | Hlc} remote
   */
  observe(remote) {
    const r = typeof remote === 'string' ? parseHlc(remote) : remote;
    if (compareHlc(r, this.#last) > 0) this.#last = { millis: r.millis, counter: r.counter };
  }

  /** The last reading, canonical. @returns {string} */
  get last() {
    return formatHlc(this.#last);
  }
}

// ---------------------------------------------------------------------------
// Conflict resolution (mirror of src/conflict.rs)

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
function requireStamp(s) {
  const stamp = toStamp(s);
  if (!stamp) throw new SyncError('SYNC:INVALID_CHANGE', `not a stamp [clock, actor, op_id]: ${JSON.stringify(s)}`);
  return stamp;
}

/** @param {unknown} v @returns {v is Record<string, unknown>} */
function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Set an own property, `__proto__` included. */
function setOwn(/** @type {Record<string, unknown>} */ obj, /** @type {string} */ key, /** @type {unknown} */ value) {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/** An own property's value or undefined. */
function getOwn(/** @type {Record<string, unknown>} */ obj, /** @type {string} */ key) {
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

// ---------------------------------------------------------------------------
// Small helpers

const encoder = new TextEncoder();

/** UTF-8 length of a string. @param {string} s */
function utf8Length(s) {
  return encoder.encode(s).length;
}

/** Unicode control characters (Rust's `char::is_control`). */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Nesting depth as the server counts it: the value is level 1. @param {unknown} v @returns {number} */
function jsonDepth(v) {
  if (v === null || typeof v !== 'object') return 1;
  let max = 0;
  for (const child of Object.values(v)) max = Math.max(max, jsonDepth(child));
  return 1 + max;
}

/** Deep equality of JSON values. @param {unknown} a @param {unknown} b @returns {boolean} */
function sameJson(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && sameJson(/** @type {any} */ (a)[k], /** @type {any} */ (b)[k]));
}

/**
 * Exponential backoff with jitter: half of min(cap, base * 2^attempt), plus a
 * random part of the other half.
 * @param {number} attempt 0 for the first retry
 * @param {number} [baseMs]
 * @param {number} [capMs]
 */
function backoffDelay(attempt, baseMs = 250, capMs = 30_000) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * Wait `ms`; resolves early when `signal` aborts or a function added to
 * `wakers` is called.
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @param {Set<() => void>} [wakers]
 * @returns {Promise<void>}
 */
function sleep(ms, signal, wakers) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      wakers?.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    wakers?.add(done);
  });
}

/** Call and forget every waker. @param {Set<() => void>} wakers */
function wakeAll(wakers) {
  for (const wake of [...wakers]) wake();
}

/** The reason an aborted signal carries, as an error. @param {AbortSignal} signal */
function abortReason(signal) {
  return signal.reason instanceof Error ? signal.reason : new SyncError('ABORTED', 'aborted');
}

/** Whether an error means the server could not be reached or failed (worth retrying later). @param {unknown} e */
function isUnreachable(e) {
  return e instanceof SyncError && (e.code === 'NETWORK' || e.status >= 500);
}

// ---------------------------------------------------------------------------
// Storage

/**
 * A row as stored locally: its key, its merge state and whether it exists.
 * @typedef {RowState & { model: string, id: string, deleted: boolean }} RowRecord
 */

/**
 * A change on the wire (section 3.1 of the protocol).
 * @typedef {{ op_id: string, model: string, pk: string, op: 'insert' | 'update' | 'delete', payload: unknown, updated_at: string, actor: string }} Change
 */

/**
 * A queued change and its size in bytes.
 * @typedef {{ change: Change, bytes: number }} OutboxEntry
 */

/**
 * The operations of one storage transaction.
 * @typedef {object} StorageTx
 * @property {(model: string, id: string) => Promise<RowRecord | undefined>} getRow
 * @property {(record: RowRecord) => Promise<void>} putRow
 * @property {(model: string) => Promise<RowRecord[]>} listRows every row of a model, tombstones included
 * @property {() => Promise<void>} clearRows
 * @property {(entry: OutboxEntry) => Promise<number>} addOutbox append; returns the entry's key
 * @property {(limit?: number) => Promise<Array<OutboxEntry & { key: number }>>} readOutbox the oldest entries, in order
 * @property {(keys: number[]) => Promise<void>} deleteOutbox
 * @property {() => Promise<number>} countOutbox
 * @property {(key: string) => Promise<any>} getMeta
 * @property {(key: string, value: unknown) => Promise<void>} setMeta
 */

/**
 * A storage provider: rows with their merge state, the outbox and meta
 * (cursor, actor, clock), changed only in atomic transactions.
 * @typedef {object} SyncStorage
 * @property {string | null} name shared name (other tabs using the same name are notified of changes), null when not shared
 * @property {() => Promise<void>} open
 * @property {<T>(mode: 'readonly' | 'readwrite', fn: (tx: StorageTx) => Promise<T>) => Promise<T>} transaction
 *   run `fn` in one transaction: all its writes commit together, or none when it throws.
 *   `fn` must only await the `tx` operations (IndexedDB commits a transaction left idle).
 * @property {() => void} close
 */

/** @param {IDBRequest} request @returns {Promise<any>} */
function requestResult(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * IndexedDB storage. Database `dbName` (version 1) with the object stores
 * `rows` (key `[model, id]`, index `model`; records `{ model, id, value,
 * clocks: { t, i, f }, deleted }`), `outbox` (auto-increment keys, records
 * `{ change, bytes }`) and `meta` (`cursor`, `actor`, `clock`, `resync`,
 * `rejected`).
 * @param {{ dbName?: string, indexedDB?: IDBFactory }} [options]
 *   `indexedDB` defaults to the global one (pass e.g. fake-indexeddb in tests)
 * @returns {SyncStorage}
 */
export function idb({ dbName = 'better-sync', indexedDB: factory = globalThis.indexedDB } = {}) {
  const STORES = ['rows', 'outbox', 'meta'];
  /** @type {Promise<IDBDatabase> | null} */
  let opening = null;

  function open() {
    if (!factory) return Promise.reject(new SyncError('CLIENT_ERROR', 'IndexedDB is not available here'));
    opening ??= new Promise((resolve, reject) => {
      const req = factory.open(dbName, 1);
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore('rows', { keyPath: ['model', 'id'] }).createIndex('model', 'model');
        db.createObjectStore('outbox', { autoIncrement: true });
        db.createObjectStore('meta');
      };
      req.onsuccess = () => {
        const db = req.result;
        // Let a newer version of the app upgrade the database.
        db.onversionchange = () => db.close();
        resolve(db);
      };
      req.onerror = () => reject(req.error);
    });
    opening.catch(() => {
      opening = null;
    });
    return opening;
  }

  return {
    name: dbName,
    async open() {
      await open();
    },
    async transaction(mode, fn) {
      const db = await open();
      const t = db.transaction(STORES, mode);
      const done = new Promise((resolve, reject) => {
        t.oncomplete = () => resolve(undefined);
        t.onabort = () => reject(t.error ?? new SyncError('CLIENT_ERROR', 'IndexedDB transaction aborted'));
      });
      const rows = t.objectStore('rows');
      const outbox = t.objectStore('outbox');
      const meta = t.objectStore('meta');
      /** @type {StorageTx} */
      const tx = {
        getRow: (model, id) => requestResult(rows.get([model, id])),
        putRow: async (record) => void (await requestResult(rows.put(record))),
        listRows: (model) => requestResult(rows.index('model').getAll(model)),
        clearRows: async () => void (await requestResult(rows.clear())),
        addOutbox: (entry) => requestResult(outbox.add(entry)),
        async readOutbox(limit) {
          const [keys, values] = await Promise.all([
            requestResult(outbox.getAllKeys(null, limit)),
            requestResult(outbox.getAll(null, limit)),
          ]);
          return values.map((/** @type {OutboxEntry} */ v, /** @type {number} */ n) => ({ ...v, key: keys[n] }));
        },
        deleteOutbox: async (keys) => void (await Promise.all(keys.map((k) => requestResult(outbox.delete(k))))),
        countOutbox: () => requestResult(outbox.count()),
        getMeta: (key) => requestResult(meta.get(key)),
        setMeta: async (key, value) => void (await requestResult(meta.put(value, key))),
      };
      let result;
      try {
        result = await fn(tx);
      } catch (e) {
        done.catch(() => {});
        try {
          t.abort();
        } catch {
          // already finished
        }
        throw e;
      }
      await done;
      return result;
    },
    close() {
      opening?.then((db) => db.close(), () => {});
      opening = null;
    },
  };
}

/**
 * In-memory storage with the same interface and transaction semantics as
 * {@link idb} (serialized transactions, rollback on error, copies in and out).
 * Nothing survives the page; meant for tests and server-side use.
 * @returns {SyncStorage}
 */
export function memory() {
  /** @type {Map<string, RowRecord>} */
  const rows = new Map();
  /** @type {Map<number, OutboxEntry>} */
  const outbox = new Map();
  /** @type {Map<string, unknown>} */
  const meta = new Map();
  let nextKey = 1;
  /** @type {Promise<unknown>} */
  let tail = Promise.resolve();
  const rowKey = (/** @type {string} */ model, /** @type {string} */ id) => JSON.stringify([model, id]);
  const copy = structuredClone;

  return {
    name: null,
    async open() {},
    transaction(mode, fn) {
      const run = async () => {
        /** @type {Array<() => void>} */
        const undo = [];
        const writable = () => {
          if (mode !== 'readwrite') throw new SyncError('CLIENT_ERROR', 'write in a readonly transaction');
        };
        /** @template K, V @param {Map<K, V>} map @param {K} key */
        const remember = (map, key) => {
          const had = map.has(key);
          const old = map.get(key);
          undo.push(() => (had ? map.set(key, /** @type {V} */ (old)) : map.delete(key)));
        };
        /** @type {StorageTx} */
        const tx = {
          getRow: async (model, id) => copy(rows.get(rowKey(model, id))),
          async putRow(record) {
            writable();
            const k = rowKey(record.model, record.id);
            remember(rows, k);
            rows.set(k, copy(record));
          },
          listRows: async (model) => [...rows.values()].filter((r) => r.model === model).map((r) => copy(r)),
          async clearRows() {
            writable();
            const old = new Map(rows);
            undo.push(() => old.forEach((v, k) => rows.set(k, v)));
            rows.clear();
          },
          async addOutbox(entry) {
            writable();
            const key = nextKey++;
            remember(outbox, key);
            outbox.set(key, copy(entry));
            return key;
          },
          async readOutbox(limit = Infinity) {
            const keys = [...outbox.keys()].sort((a, b) => a - b).slice(0, limit);
            return keys.map((key) => ({ ...copy(/** @type {OutboxEntry} */ (outbox.get(key))), key }));
          },
          async deleteOutbox(keys) {
            writable();
            for (const k of keys) {
              remember(outbox, k);
              outbox.delete(k);
            }
          },
          countOutbox: async () => outbox.size,
          getMeta: async (key) => copy(meta.get(key)),
          async setMeta(key, value) {
            writable();
            remember(meta, key);
            meta.set(key, copy(value));
          },
        };
        try {
          return await fn(tx);
        } catch (e) {
          undo.reverse().forEach((u) => u());
          throw e;
        }
      };
      const result = tail.then(run, run);
      tail = result.catch(() => {});
      return result;
    },
    close() {},
  };
}

// ---------------------------------------------------------------------------
// Transports

/**
 * What a transport needs from the client.
 * @typedef {object} TransportContext
 * @property {string} baseUrl the client's base URL (used when the transport has none)
 * @property {string} basePath the sync base path, e.g. `/api/sync`
 * @property {() => Promise<Record<string, string>>} headers the auth headers of a request
 */

/**
 * Options of a live session: deliver changes from the cursor until `signal` aborts.
 * @typedef {object} LiveOptions
 * @property {() => string | null} getCursor the client's current cursor
 * @property {(changes: any[], cursor: string) => Promise<void>} onChanges store a page of changes and its cursor
 * @property {(cursor: string) => void} onSynced caught up with the server
 * @property {(mode: 'websocket' | 'long-poll') => void} onMode how changes arrive now
 * @property {Record<string, any>} metadata the server's `sync.json`
 * @property {AbortSignal} signal
 * @property {number} [until] stop (resolve) at this time, in ms since the epoch
 */

/**
 * A transport: how the client talks to the server.
 * @typedef {{ name: string, open: (ctx: TransportContext) => HttpSession }} Transport
 */

/** @param {string} baseUrl @param {string} basePath */
function rootUrl(baseUrl, basePath) {
  return baseUrl.replace(/\/+$/, '') + basePath;
}

/** HTTP requests of the protocol, and live changes by long-poll. */
class HttpSession {
  #fetch;
  #longPollSecs;

  /**
   * @param {string} root URL of the base path
   * @param {TransportContext} ctx
   * @param {typeof fetch} fetchImpl
   * @param {number} longPollSecs `wait` of a long-poll
   */
  constructor(root, ctx, fetchImpl, longPollSecs) {
    this.root = root;
    this.ctx = ctx;
    this.#fetch = fetchImpl;
    this.#longPollSecs = longPollSecs;
  }

  /**
   * One JSON request under the base path.
   * @param {'GET' | 'POST'} method
   * @param {string} route e.g. `/pull`
   * @param {{ query?: Record<string, string | number | undefined | null>, body?: unknown, signal?: AbortSignal, auth?: boolean, timeoutMs?: number }} [init]
   * @returns {Promise<any>}
   */
  async request(method, route, { query = {}, body, signal, auth = true, timeoutMs = 30_000 } = {}) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
    const qs = params.toString();
    const url = this.root + route + (qs ? `?${qs}` : '');
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json', ...(auth ? await this.ctx.headers() : {}) };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const timeout = new AbortController();
    const onAbort = () => timeout.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => timeout.abort(new SyncError('NETWORK', `${method} ${route} timed out after ${timeoutMs} ms`)), timeoutMs);
    let res;
    let text;
    try {
      if (signal?.aborted) throw abortReason(signal);
      res = await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: timeout.signal,
      });
      text = await res.text();
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal);
      if (timeout.signal.aborted) throw timeout.signal.reason;
      throw new SyncError('NETWORK', `${method} ${route}: ${e instanceof Error ? e.message : e}`, { cause: e });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
    if (!res.ok) {
      const err = isObject(data) && isObject(data.error) ? data.error : {};
      const meta = isObject(data) && isObject(data.meta) ? data.meta : null;
      const retryAfter = Number(res.headers.get('retry-after'));
      throw new SyncError(
        typeof err.code === 'string' ? err.code : `HTTP_${res.status}`,
        typeof err.message === 'string' ? err.message : `${method} ${route} answered ${res.status}`,
        {
          status: res.status,
          meta,
          retryAfterMs: typeof meta?.retryAfterMs === 'number' ? meta.retryAfterMs : retryAfter > 0 ? retryAfter * 1000 : null,
        },
      );
    }
    if (!isObject(data)) throw new SyncError('BAD_RESPONSE', `${method} ${route}: the answer is not a JSON object`, { status: res.status });
    return data;
  }

  /** `GET B/sync.json`. @param {AbortSignal} [signal] */
  metadata(signal) {
    return this.request('GET', '/sync.json', { signal, auth: false });
  }

  /** `POST B/push`. @param {{ client_id: string, changes: Change[] }} body @param {AbortSignal} [signal] */
  async push(body, signal) {
    const res = await this.request('POST', '/push', { body, signal, timeoutMs: 60_000 });
    if (!Array.isArray(res.results)) throw new SyncError('BAD_RESPONSE', 'push: no results in the answer');
    return res;
  }

  /**
   * `GET B/snapshot`: one page of a model's rows.
   * @param {{ model: string, after?: string, limit?: number }} query
   * @param {AbortSignal} [signal]
   */
  async snapshot(query, signal) {
    const res = await this.request('GET', '/snapshot', { query, signal });
    if (!Array.isArray(res.rows) || typeof res.cursor !== 'string' || (res.has_more && typeof res.next_after !== 'string')) {
      throw new SyncError('BAD_RESPONSE', 'snapshot: the answer lacks rows, cursor or next_after');
    }
    return res;
  }

  /**
   * `GET B/pull`, a long-poll when `wait` > 0.
   * @param {{ cursor?: string | null, wait?: number, limit?: number }} query
   * @param {AbortSignal} [signal]
   */
  async pull({ cursor, wait = 0, limit }, signal) {
    const res = await this.request('GET', '/pull', {
      query: { cursor, limit, wait: wait > 0 ? wait : undefined },
      signal,
      timeoutMs: 30_000 + wait * 1000,
    });
    if (!Array.isArray(res.changes) || typeof res.cursor !== 'string' || typeof res.has_more !== 'boolean') {
      throw new SyncError('BAD_RESPONSE', 'pull: the answer lacks changes, cursor or has_more');
    }
    return res;
  }

  /**
   * Deliver changes by pull until `signal` aborts (or `until`): at once while
   * pages follow, then by long-poll. Rejects on the first failed request.
   * @param {LiveOptions} opts
   * @returns {Promise<void>}
   */
  async live(opts) {
    const { signal, until } = opts;
    const longPoll = (opts.metadata.features ?? []).includes('long-poll');
    opts.onMode('long-poll');
    let synced = false;
    while (!signal.aborted) {
      const left = until === undefined ? Infinity : (until - Date.now()) / 1000;
      if (left <= 0) return;
      const wait = synced && longPoll ? Math.min(this.#longPollSecs, Math.max(0.1, Math.round(left * 10) / 10)) : 0;
      const page = await this.pull({ cursor: opts.getCursor(), wait }, signal);
      await opts.onChanges(page.changes, page.cursor);
      if (!page.has_more && !synced) {
        synced = true;
        opts.onSynced(page.cursor);
      }
      // A server without long-poll is polled every few seconds.
      if (synced && !longPoll && !page.has_more) await sleep(Math.min(5000, left * 1000), signal);
    }
  }
}

/** Live changes over `B/ws`, falling back to long-poll when the socket fails. */
class SocketSession extends HttpSession {
  #WebSocket;
  #failures = 0;

  /**
   * @param {string} root
   * @param {TransportContext} ctx
   * @param {typeof fetch} fetchImpl
   * @param {number} longPollSecs
   * @param {typeof WebSocket | undefined} WebSocketImpl
   */
  constructor(root, ctx, fetchImpl, longPollSecs, WebSocketImpl) {
    super(root, ctx, fetchImpl, longPollSecs);
    this.#WebSocket = WebSocketImpl;
  }

  /**
   * Live changes over the socket while it works; after a failure, long-poll
   * for a backoff delay (1 s doubling to 30 s while the socket keeps failing)
   * and try the socket again. Server errors sent on the socket (e.g. a bad
   * cursor) reject, like failed requests.
   * @param {LiveOptions} opts
   */
  async live(opts) {
    if (typeof this.#WebSocket !== 'function' || !(opts.metadata.features ?? []).includes('websocket')) {
      return super.live(opts);
    }
    while (!opts.signal.aborted) {
      const outcome = await this.#runSocket(opts);
      if (opts.signal.aborted) return;
      if (outcome.error && outcome.error.code !== 'NETWORK') throw outcome.error;
      this.#failures = outcome.synced ? 0 : this.#failures + 1;
      await super.live({ ...opts, until: Date.now() + backoffDelay(this.#failures, 1000, 30_000) });
    }
  }

  /** The socket URL, with the bearer token as `access_token` (browsers cannot set WebSocket headers). */
  async #url() {
    const url = new URL(`${this.root}/ws`, globalThis.location?.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const headers = await this.ctx.headers();
    const auth = Object.entries(headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
    const token = /^bearer\s+(.+)$/i.exec(auth ?? '')?.[1];
    if (token) url.searchParams.set('access_token', token.trim());
    return url.href;
  }

  /**
   * One socket session: subscribe from the cursor, store every `changes`
   * frame in order, ping every heartbeat, and resolve when it ends.
   * @param {LiveOptions} opts
   * @returns {Promise<{ synced: boolean, error: SyncError | null }>}
   */
  async #runSocket(opts) {
    const heartbeatMs = Math.max(1000, (Number(opts.metadata.heartbeatSecs) || 30) * 1000);
    let url;
    try {
      url = await this.#url();
    } catch (e) {
      return { synced: false, error: asSyncError(e) };
    }
    if (opts.signal.aborted) return { synced: false, error: null };
    const Socket = /** @type {typeof WebSocket} */ (this.#WebSocket);
    return new Promise((resolve) => {
      let synced = false;
      let finished = false;
      let lastSeen = Date.now();
      /** @type {Promise<void>} */
      let chain = Promise.resolve();
      /** @type {WebSocket} */
      let socket;
      /** @type {ReturnType<typeof setInterval> | undefined} */
      let heartbeat;
      /** @param {SyncError | null} error */
      const finish = (error) => {
        if (finished) return;
        finished = true;
        clearInterval(heartbeat);
        opts.signal.removeEventListener('abort', onAbort);
        if (socket) {
          socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
          try {
            socket.close(1000);
          } catch {
            // already closed
          }
        }
        // Frames already received are stored before the session ends.
        chain.then(() => resolve({ synced, error }), (e) => resolve({ synced, error: asSyncError(e) }));
      };
      const onAbort = () => finish(null);
      /** @param {() => Promise<void> | void} step */
      const enqueue = (step) => {
        chain = chain.then(step);
        chain.catch((e) => finish(asSyncError(e)));
      };
      opts.signal.addEventListener('abort', onAbort, { once: true });
      try {
        socket = new Socket(url);
      } catch (e) {
        finish(new SyncError('NETWORK', `WebSocket: ${e instanceof Error ? e.message : e}`, { cause: e }));
        return;
      }
      socket.onopen = () => {
        const cursor = opts.getCursor();
        socket.send(JSON.stringify(cursor === null ? { type: 'subscribe' } : { type: 'subscribe', cursor }));
        opts.onMode('websocket');
        heartbeat = setInterval(() => {
          if (Date.now() - lastSeen > 2 * heartbeatMs + 5000) finish(new SyncError('NETWORK', 'WebSocket heartbeat timed out'));
          else socket.send('{"type":"ping"}');
        }, heartbeatMs);
      };
      socket.onmessage = (event) => {
        lastSeen = Date.now();
        let msg;
        try {
          msg = JSON.parse(String(event.data));
        } catch {
          finish(new SyncError('BAD_RESPONSE', 'WebSocket: a frame is not JSON'));
          return;
        }
        if (msg.type === 'changes' && Array.isArray(msg.changes) && typeof msg.cursor === 'string') {
          enqueue(() => opts.onChanges(msg.changes, msg.cursor));
        } else if (msg.type === 'synced' && typeof msg.cursor === 'string') {
          enqueue(async () => {
            await opts.onChanges([], msg.cursor);
            synced = true;
            opts.onSynced(msg.cursor);
          });
        } else if (msg.type === 'error') {
          const err = isObject(msg.error) ? msg.error : {};
          finish(new SyncError(String(err.code ?? 'BAD_RESPONSE'), String(err.message ?? 'WebSocket error'), { meta: isObject(msg.meta) ? msg.meta : null }));
        }
      };
      socket.onerror = () => finish(new SyncError('NETWORK', 'WebSocket failed'));
      socket.onclose = (event) => finish(new SyncError('NETWORK', `WebSocket closed (${event.code})`));
    });
  }
}

/**
 * HTTP transport: push, snapshot and pull over `fetch`, live changes by
 * long-poll (`GET B/pull?wait=S`).
 * @param {{ baseUrl?: string, fetch?: typeof fetch, longPollSecs?: number }} [options]
 *   `baseUrl` defaults to the client's; `longPollSecs` (default 25) is the `wait` of each long-poll
 * @returns {Transport}
 */
export function rpc({ baseUrl, fetch: fetchImpl, longPollSecs = 25 } = {}) {
  return {
    name: 'rpc',
    open: (ctx) => new HttpSession(rootUrl(baseUrl ?? ctx.baseUrl, ctx.basePath), ctx, fetchImpl ?? globalThis.fetch.bind(globalThis), longPollSecs),
  };
}

/**
 * WebSocket transport: HTTP for push and snapshot, live changes over
 * `B/ws` (token in the `access_token` query parameter), falling back to
 * long-poll while the socket fails or when the server does not list the
 * `websocket` feature.
 * @param {{ baseUrl?: string, fetch?: typeof fetch, WebSocket?: typeof WebSocket, longPollSecs?: number }} [options]
 * @returns {Transport}
 */
export function ws({ baseUrl, fetch: fetchImpl, WebSocket: WebSocketImpl = globalThis.WebSocket, longPollSecs = 25 } = {}) {
  return {
    name: 'ws',
    open: (ctx) =>
      new SocketSession(rootUrl(baseUrl ?? ctx.baseUrl, ctx.basePath), ctx, fetchImpl ?? globalThis.fetch.bind(globalThis), longPollSecs, WebSocketImpl),
  };
}

// ---------------------------------------------------------------------------
// Queries

/**
 * A live query's description.
 * @typedef {object} QuerySpec
 * @property {string} model
 * @property {Record<string, unknown> | ((row: Record<string, any>) => boolean)} [where] field equalities, or a predicate
 * @property {string[] | ((row: Record<string, any>) => any)} [select] fields to keep, or a projection
 */

/**
 * A record as a query sees it, or undefined when the query leaves it out:
 * live rows only, `{ id, ...value }`, filtered by `where`, projected by `select`.
 * @param {QuerySpec} spec
 * @param {RowRecord} record
 */
function project(spec, record) {
  if (record.deleted) return undefined;
  /** @type {Record<string, any>} */
  const row = { id: record.id, ...record.value };
  const { where, select } = spec;
  if (typeof where === 'function') {
    if (!where(row)) return undefined;
  } else if (where && !Object.entries(where).every(([k, v]) => sameJson(getOwn(row, k), v))) {
    return undefined;
  }
  if (typeof select === 'function') return select(row);
  if (Array.isArray(select)) {
    /** @type {Record<string, any>} */
    const picked = {};
    for (const k of select) if (Object.hasOwn(row, k)) setOwn(picked, k, row[k]);
    return picked;
  }
  return row;
}

/** One subscribeQuery: the current result, kept up to date incrementally. */
class LiveQuery {
  /** @type {Map<string, unknown>} */
  #rows = new Map();
  #loading = false;
  #dirty = false;
  closed = false;

  /**
   * @param {QuerySpec} spec
   * @param {(rows: any[]) => void} callback
   * @param {(model: string) => Promise<RowRecord[]>} read
   * @param {(error: unknown) => void} onError
   */
  constructor(spec, callback, read, onError) {
    this.spec = spec;
    this.callback = callback;
    this.read = read;
    this.onError = onError;
  }

  /** Read the whole result again, then emit it. */
  async reload() {
    if (this.#loading) {
      this.#dirty = true;
      return;
    }
    this.#loading = true;
    try {
      do {
        this.#dirty = false;
        const records = await this.read(this.spec.model);
        this.#rows.clear();
        for (const r of records) {
          const row = project(this.spec, r);
          if (row !== undefined) this.#rows.set(r.id, row);
        }
      } while (this.#dirty && !this.closed);
    } catch (e) {
      this.onError(e);
    } finally {
      this.#loading = false;
    }
    this.#emit();
  }

  /** Fold changed records of the query's model in; emit when the result changed. @param {RowRecord[]} records */
  update(records) {
    if (this.#loading) {
      this.#dirty = true;
      return;
    }
    let changed = false;
    for (const r of records) {
      let row;
      try {
        row = project(this.spec, r);
      } catch (e) {
        this.onError(e);
        continue;
      }
      const before = this.#rows.get(r.id);
      if (row === undefined) {
        changed = this.#rows.delete(r.id) || changed;
      } else if (before === undefined || !sameJson(before, row)) {
        this.#rows.set(r.id, row);
        changed = true;
      }
    }
    if (changed) this.#emit();
  }

  #emit() {
    if (this.closed) return;
    const rows = [...this.#rows.entries()].sort(([a], [b]) => compareText(a, b)).map(([, row]) => structuredClone(row));
    try {
      this.callback(rows);
    } catch (e) {
      this.onError(e);
    }
  }
}

// ---------------------------------------------------------------------------
// The client

/**
 * Options of {@link createSyncClient}.
 * @typedef {object} SyncClientOptions
 * @property {string} [baseUrl] origin of the server, e.g. `https://app.example`; default `location.origin` in a browser
 * @property {string} [basePath] the sync base path, default `/api/sync`
 * @property {string[] | Record<string, unknown>} [models] model names (or an object keyed by them):
 *   checked by `applyChange` and bootstrapped from snapshots; default: the server's `sync.json` `models`
 * @property {SyncStorage} storage {@link idb} or {@link memory}
 * @property {Transport} [transport] {@link rpc} (default) or {@link ws}
 * @property {{ headers: () => Record<string, string> | Headers | Promise<Record<string, string> | Headers> }} [auth]
 *   headers of each request, typically `{ Authorization: 'Bearer <JWT>' }`
 * @property {'lww'} [conflict] the conflict strategy; only `'lww'` exists
 * @property {string} [actor] this replica's actor id; default a random UUID kept in storage
 * @property {(event: SyncEvent) => void} [onEvent] receives every event
 */

/**
 * An event of the client.
 * @typedef {{ type: 'status', online: boolean }
 *   | { type: 'change', model: string, ids: string[], origin: 'local' | 'remote' | 'tab' }
 *   | { type: 'synced', cursor: string }
 *   | { type: 'live', mode: 'websocket' | 'long-poll' }
 *   | { type: 'error', error: SyncError }
 *   | { type: 'rejected', change: Change, error: SyncError }} SyncEvent
 */

/**
 * Outbox and connection statistics.
 * @typedef {object} QueueStats
 * @property {number} queued changes not yet acknowledged by the server (in-flight ones included)
 * @property {number} inFlight changes of the push request under way
 * @property {SyncError | null} lastError the most recent error (kept after recovery; see `online`)
 * @property {boolean} online whether the last request reached the server
 * @property {string | null} cursor the pull cursor
 * @property {number} rejected changes the server refused (see `getRejected`)
 * @property {'websocket' | 'long-poll' | null} live how live changes arrive, null when not connected
 */

/**
 * A change the server refused for good, taken out of the outbox.
 * @typedef {{ change: Change, error: { code: string, message: string, status: number, meta: Record<string, unknown> | null }, at: number }} RejectedChange
 */

const DEFAULT_MAX_BATCH = 1000;
const DEFAULT_MAX_BATCH_BYTES = 256 * 1024;
const MAX_REJECTED_KEPT = 100;
const MODEL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Push errors that are about the batch's content: retrying the same batch fails again.
 * `SYNC:MALFORMED_JSON` and `SYNC:INVALID_BODY` are not among them: this client's
 * bodies are well-formed, so those mean a body damaged on the way (a proxy), and
 * setting changes aside for them would empty the outbox into `rejected`.
 */
const CONTENT_ERRORS = new Set([
  'SYNC:INVALID_CHANGE',
  'SYNC:UNKNOWN_MODEL',
  'SYNC:DUPLICATE_OP_ID',
  'SYNC:OP_ID_CONFLICT',
  'SYNC:PAYLOAD_TOO_LARGE',
  'SYNC:BATCH_TOO_LARGE',
  'SYNC:CHANGE_TOO_LARGE',
  'SYNC:PAYLOAD_TOO_DEEP',
]);

/** Errors that make the stored cursor unusable: bootstrap again. */
const CURSOR_ERRORS = new Set(['SYNC:CURSOR_AHEAD', 'SYNC:FOREIGN_CURSOR', 'SYNC:INVALID_CURSOR']);

/**
 * What to do after a failed push of `size` changes.
 * @param {SyncError} e
 * @param {number} size
 * @returns {{ action: 'retry' } | { action: 'split' } | { action: 'reject', index: number }}
 */
function pushVerdict(e, size) {
  const index = e.meta?.index;
  const hasIndex = Number.isInteger(index) && /** @type {number} */ (index) >= 0 && /** @type {number} */ (index) < size;
  // Any 413 (a proxy's has no SYNC body) is about size: smaller batches get through.
  const aboutContent = CONTENT_ERRORS.has(e.code) || (e.code === 'SYNC:FORBIDDEN' && hasIndex) || e.status === 413;
  if (e.status < 400 || e.status >= 500 || !aboutContent) return { action: 'retry' };
  if (hasIndex) return { action: 'reject', index: /** @type {number} */ (index) };
  return size > 1 ? { action: 'split' } : { action: 'reject', index: 0 };
}

/** @param {string} model @param {string} id @returns {RowRecord} */
function newRecord(model, id) {
  return { model, id, ...emptyRowState(), deleted: true };
}

/**
 * The sync client. Create it with {@link createSyncClient}.
 */
class SyncClient {
  #options;
  #storage;
  #session;
  #clock = new HlcClock();
  /** @type {string} */
  #actor = '';
  /** @type {string | null} */
  #cursor = null;
  #needsResync = false;
  /** @type {Record<string, any> | null} */
  #metadata = null;
  #ready;

  /** @type {Map<string, Set<(event: any) => void>>} */
  #listeners = new Map();
  /** @type {Map<string, Set<LiveQuery>>} */
  #queries = new Map();
  /** @type {BroadcastChannel | null} */
  #channel = null;

  #online = false;
  /** @type {SyncError | null} */
  #lastError = null;
  #inFlight = 0;
  /** @type {'websocket' | 'long-poll' | null} */
  #liveMode = null;
  #batchLimit = DEFAULT_MAX_BATCH;

  /** Set while connected. @type {AbortController | null} */
  #connection = null;
  /** Aborts the current live round (to resync). @type {AbortController | null} */
  #round = null;
  /** @type {{ promise: Promise<void>, resolve: () => void } | null} */
  #firstRound = null;
  /** @type {Promise<void> | null} */
  #syncTask = null;
  /** @type {Promise<void> | null} */
  #pushTask = null;
  /** @type {AbortController | null} */
  #pushAbort = null;
  /** Wake the idle pusher (new outbox entries). @type {Set<() => void>} */
  #work = new Set();
  /** Cut backoff waits short (the browser came back online). @type {Set<() => void>} */
  #network = new Set();
  /** @type {Set<{ resolve: () => void, reject: (e: unknown) => void }>} */
  #drains = new Set();
  #onBrowserOnline = () => wakeAll(this.#network);

  /** @param {SyncClientOptions} options */
  constructor(options) {
    if (!options || typeof options !== 'object') throw new TypeError('createSyncClient: options are required');
    const { storage, conflict = 'lww' } = options;
    if (!storage || typeof storage.transaction !== 'function') throw new TypeError('createSyncClient: `storage` must be idb(...) or memory()');
    if (conflict !== 'lww') throw new TypeError(`createSyncClient: unknown conflict strategy ${JSON.stringify(conflict)}; only 'lww' exists`);
    const baseUrl = options.baseUrl ?? globalThis.location?.origin;
    if (typeof baseUrl !== 'string') throw new TypeError('createSyncClient: `baseUrl` is required outside a browser');
    const basePath = (options.basePath ?? '/api/sync').replace(/\/+$/, '');
    if (!basePath.startsWith('/')) throw new TypeError('createSyncClient: `basePath` must start with /');
    if (options.actor !== undefined) checkActor(options.actor);
    this.#options = options;
    this.#storage = storage;
    const transport = options.transport ?? rpc();
    this.#session = transport.open({ baseUrl, basePath, headers: () => this.#authHeaders() });
    this.#ready = this.#init();
    // Keep unhandled-rejection noise away; every method awaits #ready and rethrows.
    this.#ready.catch(() => {});
  }

  async #init() {
    await this.#storage.open();
    await this.#storage.transaction('readwrite', async (tx) => {
      const stored = await tx.getMeta('actor');
      this.#actor = this.#options.actor ?? stored ?? crypto.randomUUID();
      if (stored !== this.#actor) await tx.setMeta('actor', this.#actor);
      const clock = await tx.getMeta('clock');
      if (typeof clock === 'string') this.#clock.observe(clock);
      this.#cursor = (await tx.getMeta('cursor')) ?? null;
      this.#needsResync = (await tx.getMeta('resync')) === true;
    });
    const name = this.#storage.name;
    if (name !== null && typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(`better-sync:${name}`);
      /** @type {any} */ (this.#channel).unref?.();
      this.#channel.onmessage = (event) => this.#onTabMessage(event.data);
    }
  }

  /** This replica's actor id (available once a method has resolved). */
  get actor() {
    return this.#actor;
  }

  // -- events ---------------------------------------------------------------

  /**
   * Listen to one kind of event (`status`, `change`, `synced`, `live`,
   * `error`, `rejected`).
   * @param {SyncEvent['type']} type
   * @param {(event: any) => void} listener receives the event object
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  /** @param {SyncEvent} event */
  #emit(event) {
    const targets = [...(this.#listeners.get(event.type) ?? [])];
    if (this.#options.onEvent) targets.push(this.#options.onEvent);
    for (const fn of targets) {
      try {
        fn(event);
      } catch (e) {
        if (event.type !== 'error') this.#emit({ type: 'error', error: asSyncError(e) });
      }
    }
  }

  /** @param {unknown} e */
  #recordError(e) {
    const error = asSyncError(e);
    this.#lastError = error;
    this.#emit({ type: 'error', error });
  }

  /** Record a failed request; whether the server answered tells `online`. @param {SyncError} error */
  #noteFailure(error) {
    this.#recordError(error);
    if (isUnreachable(error)) this.#setOnline(false);
    else if (error.status > 0) this.#setOnline(true);
  }

  /** @param {boolean} online */
  #setOnline(online) {
    if (this.#online === online) return;
    this.#online = online;
    this.#emit({ type: 'status', online });
  }

  /** The auth headers of a request, as a plain object. @returns {Promise<Record<string, string>>} */
  async #authHeaders() {
    const h = await this.#options.auth?.headers();
    /** @type {Record<string, string>} */
    const out = {};
    if (typeof Headers === 'function' && h instanceof Headers) h.forEach((value, name) => (out[name] = value));
    else if (h) Object.assign(out, h);
    return out;
  }

  // -- local writes ---------------------------------------------------------

  /**
   * Write a change locally, now: the row and the outbox in one storage
   * transaction. Works offline; the change is pushed in the background.
   *
   * - `insert`: `value` is the row (an object). Fields it does not mention
   *   keep their values (an insert is a field-level upsert).
   * - `update`: `patch` (or `value`) holds the changed fields (non-empty).
   *   An update of a row that does not exist is kept but does not create it.
   * - `delete`: no payload.
   *
   * @param {string} model
   * @param {{ type: 'insert' | 'update' | 'delete', id: string, value?: Record<string, unknown>, patch?: Record<string, unknown> }} change
   * @returns {Promise<Change>} the queued change, once stored locally
   * @throws {SyncError} `SYNC:INVALID_CHANGE` / `SYNC:UNKNOWN_MODEL` for a change the server would refuse
   */
  async applyChange(model, { type, id, value, patch } = /** @type {any} */ ({})) {
    await this.#ready;
    const invalid = (/** @type {string} */ message, /** @type {string} */ field) =>
      new SyncError('SYNC:INVALID_CHANGE', message, { meta: { field } });
    if (typeof model !== 'string' || !MODEL_NAME.test(model)) throw invalid(`model ${JSON.stringify(model)}: 1 to 64 characters of A-Za-z0-9_-`, 'model');
    const known = this.#knownModels();
    if (known && !known.includes(model)) throw new SyncError('SYNC:UNKNOWN_MODEL', `unknown model ${JSON.stringify(model)}`, { meta: { field: 'model' } });
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > 255 || CONTROL.test(id)) {
      throw invalid('id: a string of 1 to 255 bytes without control characters', 'pk');
    }
    if (type !== 'insert' && type !== 'update' && type !== 'delete') throw invalid(`type ${JSON.stringify(type)}: insert, update or delete`, 'op');

    let payload = null;
    if (type !== 'delete') {
      const raw = type === 'update' ? patch ?? value : value;
      let text;
      try {
        text = JSON.stringify(raw);
      } catch (e) {
        throw invalid(`${type} payload is not JSON: ${e instanceof Error ? e.message : e}`, 'payload');
      }
      payload = text === undefined ? undefined : JSON.parse(text);
      if (!isObject(payload)) throw invalid(`${type} needs an object (${type === 'insert' ? 'value' : 'patch'})`, 'payload');
      if (type === 'update' && Object.keys(payload).length === 0) throw invalid('update needs at least one field', 'payload');
      if (Object.hasOwn(payload, 'id')) {
        const pid = payload.id;
        if (!(pid === id || (typeof pid === 'number' && JSON.stringify(pid) === id))) throw invalid(`payload.id ${JSON.stringify(pid)} differs from id ${JSON.stringify(id)}`, 'payload');
      }
      const limits = this.#metadata?.limits ?? {};
      const maxBytes = limits.maxPayloadBytes ?? 262_144;
      if (utf8Length(/** @type {string} */ (text)) > maxBytes) throw invalid(`payload larger than ${maxBytes} bytes`, 'payload');
      if (jsonDepth(payload) > 32) throw invalid('payload nests deeper than 32 levels', 'payload');
    }

    const updated_at = this.#clock.tick();
    /** @type {Change} */
    const change = { op_id: uuidv7(), model, pk: id, op: type, payload, updated_at, actor: this.#actor };
    const bytes = utf8Length(JSON.stringify(change));
    /** @type {RowRecord | undefined} */
    let record;
    await this.#storage.transaction('readwrite', async (tx) => {
      record = (await tx.getRow(model, id)) ?? newRecord(model, id);
      applyRowChange(record, type, payload, [updated_at, this.#actor, change.op_id]);
      record.deleted = !isRowLive(record);
      await tx.putRow(record);
      await tx.addOutbox({ change, bytes });
      await tx.setMeta('clock', this.#clock.last);
    });
    this.#notify([/** @type {RowRecord} */ (record)], 'local');
    wakeAll(this.#work);
    return change;
  }

  /** Model names known before connecting (the option), else the server's list once read. */
  #knownModels() {
    const m = this.#options.models;
    if (Array.isArray(m)) return m;
    if (isObject(m)) return Object.keys(m);
    return Array.isArray(this.#metadata?.models) ? /** @type {string[]} */ (this.#metadata.models) : null;
  }

  // -- queries --------------------------------------------------------------

  /**
   * Read a model's live rows once: `{ id, ...value }`, sorted by id,
   * filtered by `where`, projected by `select`.
   * @param {QuerySpec} spec
   * @returns {Promise<any[]>}
   */
  async query(spec) {
    await this.#ready;
    const records = await this.#readModel(spec.model);
    return records
      .sort((a, b) => compareText(a.id, b.id))
      .map((r) => project(spec, r))
      .filter((row) => row !== undefined);
  }

  /**
   * A live query: `callback` gets the matching rows (as {@link query} gives
   * them) once read, then again after every local, remote or other-tab change
   * that changes the result.
   * @param {QuerySpec} spec
   * @param {(rows: any[]) => void} callback
   * @returns {() => void} unsubscribe
   */
  subscribeQuery(spec, callback) {
    if (!spec || typeof spec.model !== 'string') throw new TypeError('subscribeQuery: { model } is required');
    if (typeof callback !== 'function') throw new TypeError('subscribeQuery: a callback is required');
    const query = new LiveQuery(spec, callback, (model) => this.#readModel(model), (e) => this.#recordError(e));
    let set = this.#queries.get(spec.model);
    if (!set) this.#queries.set(spec.model, (set = new Set()));
    set.add(query);
    this.#ready.then(() => query.reload(), (e) => this.#recordError(e));
    return () => {
      query.closed = true;
      set.delete(query);
    };
  }

  /** @param {string} model */
  #readModel(model) {
    return this.#storage.transaction('readonly', (tx) => tx.listRows(model));
  }

  /**
   * Tell queries, listeners and other tabs about changed rows.
   * @param {Iterable<RowRecord>} records
   * @param {'local' | 'remote' | 'tab'} origin
   */
  #notify(records, origin) {
    /** @type {Map<string, RowRecord[]>} */
    const byModel = new Map();
    for (const r of records) {
      const list = byModel.get(r.model);
      if (list) list.push(r);
      else byModel.set(r.model, [r]);
    }
    for (const [model, list] of byModel) {
      for (const q of this.#queries.get(model) ?? []) q.update(list);
      const ids = list.map((r) => r.id);
      this.#emit({ type: 'change', model, ids, origin });
      if (origin !== 'tab') this.#channel?.postMessage({ type: 'rows', model, ids });
    }
  }

  /** Every query reads its result again (after local state was rebuilt). @param {boolean} broadcast */
  #reloadQueries(broadcast) {
    for (const set of this.#queries.values()) for (const q of set) q.reload();
    if (broadcast) this.#channel?.postMessage({ type: 'reset' });
  }

  /** Another tab changed the shared storage. @param {any} msg */
  async #onTabMessage(msg) {
    try {
      if (msg?.type === 'reset') return this.#reloadQueries(false);
      if (msg?.type !== 'rows' || !this.#queries.has(msg.model)) return;
      const records = await this.#storage.transaction('readonly', async (tx) => {
        const found = await Promise.all(msg.ids.map((/** @type {string} */ id) => tx.getRow(msg.model, id)));
        return found.filter((r) => r !== undefined);
      });
      this.#notify(records, 'tab');
    } catch (e) {
      this.#recordError(e);
    }
  }

  // -- connection -----------------------------------------------------------

  /**
   * Start syncing: read `sync.json`, bootstrap from snapshots when there is
   * no cursor yet, then receive live changes, and push the outbox. Resolves
   * after the first round: caught up with the server, or failed (then it keeps
   * retrying in the background with backoff, and `status` events tell when the
   * server is reachable). Calling it again while connected returns the same promise.
   * @returns {Promise<void>}
   */
  async connect() {
    await this.#ready;
    if (this.#connection && this.#firstRound) return this.#firstRound.promise;
    const connection = new AbortController();
    this.#connection = connection;
    /** @type {() => void} */
    let resolve = () => {};
    const promise = new Promise((r) => (resolve = () => r(undefined)));
    this.#firstRound = { promise, resolve };
    globalThis.addEventListener?.('online', this.#onBrowserOnline);
    this.#syncTask = this.#syncLoop(connection.signal);
    this.#ensurePusher();
    return promise;
  }

  /**
   * Stop all network activity (local writes and queries keep working).
   * Pending `drain()` calls reject with `ABORTED`. Resolves once the loops
   * have stopped.
   * @returns {Promise<void>}
   */
  async disconnect() {
    this.#connection?.abort(new SyncError('ABORTED', 'disconnected'));
    this.#connection = null;
    this.#pushAbort?.abort(new SyncError('ABORTED', 'disconnected'));
    globalThis.removeEventListener?.('online', this.#onBrowserOnline);
    for (const d of this.#drains) d.reject(new SyncError('ABORTED', 'disconnected before the outbox was drained'));
    this.#drains.clear();
    this.#firstRound?.resolve();
    await Promise.all([this.#syncTask, this.#pushTask]);
    this.#liveMode = null;
    this.#setOnline(false);
  }

  /**
   * Disconnect and release the storage (and the cross-tab channel).
   * @returns {Promise<void>}
   */
  async close() {
    await this.disconnect();
    await this.#ready.catch(() => {});
    this.#channel?.close();
    this.#channel = null;
    this.#storage.close();
  }

  /** The server's sync.json (read once per client). @param {AbortSignal} signal */
  async #readMetadata(signal) {
    if (this.#metadata) return this.#metadata;
    const meta = await this.#session.metadata(signal);
    if (meta.protocolVersion !== PROTOCOL_VERSION) {
      throw new SyncError('BAD_RESPONSE', `server speaks protocol ${meta.protocolVersion}, this client ${PROTOCOL_VERSION}`);
    }
    this.#metadata = meta;
    return meta;
  }

  /**
   * Bootstrap (when there is no cursor) and live changes, in rounds; a
   * failed round is retried with backoff, a cursor error rebuilds local state.
   * @param {AbortSignal} signal
   */
  async #syncLoop(signal) {
    let attempt = 0;
    while (!signal.aborted) {
      const round = new AbortController();
      const stop = () => round.abort(signal.reason);
      signal.addEventListener('abort', stop, { once: true });
      this.#round = round;
      try {
        if (this.#needsResync) await this.#resetLocal();
        const metadata = await this.#readMetadata(round.signal);
        this.#setOnline(true);
        if (this.#cursor === null) await this.#bootstrap(metadata, round.signal);
        await this.#session.live({
          getCursor: () => this.#cursor,
          onChanges: (changes, cursor) => this.#applyRemote(changes, cursor),
          onSynced: (cursor) => {
            attempt = 0;
            this.#emit({ type: 'synced', cursor });
            this.#firstRound?.resolve();
          },
          onMode: (mode) => {
            if (mode === this.#liveMode) return;
            this.#liveMode = mode;
            this.#emit({ type: 'live', mode });
          },
          metadata,
          signal: round.signal,
        });
      } catch (e) {
        if (signal.aborted) break;
        if (round.signal.aborted) continue; // cut short to rebuild local state
        const error = asSyncError(e);
        this.#noteFailure(error);
        if (CURSOR_ERRORS.has(error.code)) await this.#requestResync().catch((e) => this.#recordError(e));
        this.#firstRound?.resolve();
        await sleep(Math.max(error.retryAfterMs ?? 0, backoffDelay(attempt++)), signal, this.#network);
      } finally {
        signal.removeEventListener('abort', stop);
      }
    }
  }

  /**
   * Fill local state from snapshots: every model, every page, tombstones and
   * clocks included, joined into the local rows; then keep the cursor of the
   * very first page. Without models to read, pull starts from the log's start.
   * @param {Record<string, any>} metadata
   * @param {AbortSignal} signal
   */
  async #bootstrap(metadata, signal) {
    const models = (metadata.features ?? []).includes('snapshot') ? this.#knownModels() ?? [] : [];
    /** @type {string | null} */
    let first = null;
    for (const model of models) {
      /** @type {string | undefined} */
      let after;
      for (;;) {
        const page = await this.#session.snapshot({ model, after }, signal);
        first ??= page.cursor;
        await this.#storeSnapshot(model, page.rows);
        if (!page.has_more) break;
        after = page.next_after;
      }
    }
    if (first === null) return;
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('cursor', first));
    this.#cursor = first;
  }

  /** @param {string} model @param {any[]} rows */
  async #storeSnapshot(model, rows) {
    /** @type {RowRecord[]} */
    const touched = [];
    /** @type {SyncError[]} */
    const skipped = [];
    await this.#storage.transaction('readwrite', async (tx) => {
      for (const row of rows) {
        const state = typeof row?.id === 'string' ? rowStateFromParts(row.value, row.clocks) : null;
        if (!state) {
          skipped.push(new SyncError('BAD_RESPONSE', `snapshot ${model}: row ${JSON.stringify(row?.id)} has value and clocks that do not fit`));
          continue;
        }
        for (const s of [state.clocks.t, state.clocks.i, ...Object.values(state.clocks.f)]) if (s) this.#clock.observe(s[0]);
        const record = (await tx.getRow(model, row.id)) ?? newRecord(model, row.id);
        if (mergeRowStates(record, state)) {
          record.deleted = !isRowLive(record);
          await tx.putRow(record);
          touched.push(record);
        }
      }
      await tx.setMeta('clock', this.#clock.last);
    });
    skipped.forEach((e) => this.#recordError(e));
    this.#notify(touched, 'remote');
  }

  /**
   * Fold a page of pulled changes into the rows and store its cursor, in one
   * transaction. Own changes coming back change nothing (the join is idempotent).
   * @param {any[]} changes
   * @param {string} cursor
   */
  async #applyRemote(changes, cursor) {
    this.#setOnline(true);
    if (changes.length === 0 && cursor === this.#cursor) return;
    /** @type {Map<string, RowRecord>} */
    const touched = new Map();
    /** @type {SyncError[]} */
    const skipped = [];
    await this.#storage.transaction('readwrite', async (tx) => {
      /** @type {Map<string, RowRecord>} */
      const rows = new Map();
      for (const c of changes) {
        let stamp;
        try {
          if (typeof c.model !== 'string' || typeof c.pk !== 'string') throw new SyncError('BAD_RESPONSE', 'no model or pk');
          stamp = requireStamp([c.updated_at, c.actor, c.op_id]);
          this.#clock.observe(stamp[0]);
        } catch (e) {
          skipped.push(new SyncError('BAD_RESPONSE', `pulled change ${JSON.stringify(c?.op_id)} skipped: ${asSyncError(e).message}`));
          continue;
        }
        const key = JSON.stringify([c.model, c.pk]);
        let record = rows.get(key);
        if (!record) {
          record = (await tx.getRow(c.model, c.pk)) ?? newRecord(c.model, c.pk);
          rows.set(key, record);
        }
        try {
          if (applyRowChange(record, c.op, c.payload, stamp)) touched.set(key, record);
        } catch (e) {
          skipped.push(asSyncError(e));
        }
      }
      for (const record of touched.values()) {
        record.deleted = !isRowLive(record);
        await tx.putRow(record);
      }
      await tx.setMeta('cursor', cursor);
      if (changes.length) await tx.setMeta('clock', this.#clock.last);
    });
    this.#cursor = cursor;
    skipped.forEach((e) => this.#recordError(e));
    this.#notify(touched.values(), 'remote');
  }

  /** Mark local state for rebuilding and cut the live round short. */
  async #requestResync() {
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('resync', true));
    this.#needsResync = true;
    this.#round?.abort(new SyncError('ABORTED', 'rebuilding local state'));
  }

  /**
   * Rebuild local state: drop every row and the cursor, fold the changes
   * still in the outbox back in; the next round bootstraps again and joins
   * the server's state in. Used after a cursor error and after a change was
   * rejected (its optimistic effect then disappears).
   */
  async #resetLocal() {
    await this.#storage.transaction('readwrite', async (tx) => {
      await tx.clearRows();
      /** @type {Map<string, RowRecord>} */
      const rows = new Map();
      for (const { change: c } of await tx.readOutbox()) {
        const key = JSON.stringify([c.model, c.pk]);
        const record = rows.get(key) ?? newRecord(c.model, c.pk);
        rows.set(key, record);
        applyRowChange(record, c.op, c.payload, [c.updated_at, c.actor, c.op_id]);
      }
      for (const record of rows.values()) {
        record.deleted = !isRowLive(record);
        await tx.putRow(record);
      }
      await tx.setMeta('cursor', null);
      await tx.setMeta('resync', false);
    });
    this.#cursor = null;
    this.#needsResync = false;
    this.#reloadQueries(true);
  }

  // -- push -----------------------------------------------------------------

  #ensurePusher() {
    if (this.#pushTask) return;
    const abort = new AbortController();
    this.#pushAbort = abort;
    this.#pushTask = this.#pushLoop(abort.signal).finally(() => {
      this.#pushTask = null;
      this.#pushAbort = null;
      // connect() or drain() called while the loop was exiting.
      if ((this.#connection || this.#drains.size) && !abort.signal.aborted) this.#ensurePusher();
    });
  }

  /** The oldest outbox entries that fit one push. */
  async #nextBatch() {
    const limits = this.#metadata?.limits ?? {};
    const maxCount = Math.min(DEFAULT_MAX_BATCH, limits.maxBatch ?? DEFAULT_MAX_BATCH, this.#batchLimit);
    const maxBytes = Math.min(DEFAULT_MAX_BATCH_BYTES, (limits.maxBodyBytes ?? 1_048_576) - 1024);
    const entries = await this.#storage.transaction('readonly', (tx) => tx.readOutbox(maxCount));
    let bytes = 0;
    let n = 0;
    while (n < entries.length && (n === 0 || bytes + entries[n].bytes + 1 <= maxBytes)) bytes += entries[n++].bytes + 1;
    return entries.slice(0, n);
  }

  /**
   * Push the outbox in batches until it is empty, then wait for new changes
   * (while connected). Network and server failures keep the outbox and retry
   * with backoff; a change the server refuses is quarantined (see #reject).
   * @param {AbortSignal} signal
   */
  async #pushLoop(signal) {
    let attempt = 0;
    while (!signal.aborted) {
      let batch;
      try {
        batch = await this.#nextBatch();
      } catch (e) {
        this.#recordError(e);
        await sleep(backoffDelay(attempt++), signal);
        continue;
      }
      if (batch.length === 0) {
        for (const d of this.#drains) d.resolve();
        this.#drains.clear();
        if (!this.#connection) return;
        await sleep(60_000, signal, this.#work);
        continue;
      }
      this.#inFlight = batch.length;
      try {
        await this.#readMetadata(signal);
        await this.#session.push({ client_id: this.#actor, changes: batch.map((e) => e.change) }, signal);
        await this.#storage.transaction('readwrite', (tx) => tx.deleteOutbox(batch.map((e) => e.key)));
        this.#setOnline(true);
        this.#batchLimit = DEFAULT_MAX_BATCH;
        attempt = 0;
      } catch (e) {
        if (signal.aborted) return;
        const error = asSyncError(e);
        this.#noteFailure(error);
        const verdict = pushVerdict(error, batch.length);
        if (verdict.action === 'reject') {
          await this.#reject(batch[verdict.index], error).catch(async (e) => {
            this.#recordError(e);
            await sleep(backoffDelay(attempt++), signal);
          });
        } else if (verdict.action === 'split') {
          this.#batchLimit = Math.ceil(batch.length / 2);
        } else {
          await sleep(Math.max(error.retryAfterMs ?? 0, backoffDelay(attempt++)), signal, this.#network);
        }
      } finally {
        this.#inFlight = 0;
      }
    }
  }

  /**
   * Quarantine a change the server refused for its content: take it out of
   * the outbox (so it cannot block the queue), keep it with the error in
   * meta `rejected` (the last 100), emit `rejected`, and rebuild local state
   * so that its optimistic effect disappears.
   * @param {OutboxEntry & { key: number }} entry
   * @param {SyncError} error
   */
  async #reject(entry, error) {
    /** @type {RejectedChange} */
    const rejected = {
      change: entry.change,
      error: { code: error.code, message: error.message, status: error.status, meta: error.meta },
      at: Date.now(),
    };
    await this.#storage.transaction('readwrite', async (tx) => {
      await tx.deleteOutbox([entry.key]);
      const list = (await tx.getMeta('rejected')) ?? [];
      await tx.setMeta('rejected', [...list, rejected].slice(-MAX_REJECTED_KEPT));
      await tx.setMeta('resync', true);
    });
    this.#needsResync = true;
    this.#round?.abort(new SyncError('ABORTED', 'rebuilding local state'));
    this.#emit({ type: 'rejected', change: entry.change, error });
  }

  /**
   * Resolves when every queued change has been pushed and acknowledged
   * (pushing now, even when not connected). Rejects with `ABORTED` on
   * `disconnect()`. While the server is unreachable it keeps waiting.
   * @returns {Promise<void>}
   */
  async drain() {
    await this.#ready;
    const promise = new Promise((resolve, reject) => this.#drains.add({ resolve: () => resolve(undefined), reject }));
    this.#ensurePusher();
    wakeAll(this.#work);
    return promise;
  }

  /**
   * Outbox and connection statistics.
   * @returns {Promise<QueueStats>}
   */
  async getQueueStats() {
    await this.#ready;
    const [queued, rejected] = await this.#storage.transaction('readonly', async (tx) => [
      await tx.countOutbox(),
      ((await tx.getMeta('rejected')) ?? []).length,
    ]);
    return {
      queued,
      inFlight: this.#inFlight,
      lastError: this.#lastError,
      online: this.#online,
      cursor: this.#cursor,
      rejected,
      live: this.#connection ? this.#liveMode : null,
    };
  }

  /**
   * Changes the server refused for good (oldest first, at most the last 100).
   * @returns {Promise<RejectedChange[]>}
   */
  async getRejected() {
    await this.#ready;
    return (await this.#storage.transaction('readonly', (tx) => tx.getMeta('rejected'))) ?? [];
  }

  /**
   * Forget the rejected changes.
   * @returns {Promise<void>}
   */
  async clearRejected() {
    await this.#ready;
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('rejected', []));
  }
}

/** @param {unknown} actor */
function checkActor(actor) {
  if (typeof actor !== 'string' || actor.length === 0 || utf8Length(actor) > 255 || CONTROL.test(actor)) {
    throw new TypeError('createSyncClient: `actor` must be a string of 1 to 255 bytes without control characters');
  }
}

/**
 * Create a sync client.
 * @param {SyncClientOptions} options
 * @returns {SyncClient}
 */
export function createSyncClient(options) {
  return new SyncClient(options);
}
