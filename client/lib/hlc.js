/**
 * The hybrid logical clock, the mirror of the server's (`core/src/hlc.rs`).
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/hlc
 */

import { SyncError } from './errors.js';
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
