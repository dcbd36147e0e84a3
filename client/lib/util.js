/**
 * Small helpers: UTF-8 sizes, JSON depth and equality, backoff, sleeps.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/util
 */

import { SyncError } from './errors.js';
const encoder = new TextEncoder();

/** UTF-8 length of a string. @param {string} s */
export function utf8Length(s) {
  return encoder.encode(s).length;
}

/** Unicode control characters (Rust's `char::is_control`). */
export const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Nesting depth as the server counts it: the value is level 1. @param {unknown} v @returns {number} */
export function jsonDepth(v) {
  if (v === null || typeof v !== 'object') return 1;
  let max = 0;
  for (const child of Object.values(v)) max = Math.max(max, jsonDepth(child));
  return 1 + max;
}

/** Deep equality of JSON values. @param {unknown} a @param {unknown} b @returns {boolean} */
export function sameJson(a, b) {
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
export function backoffDelay(attempt, baseMs = 250, capMs = 30_000) {
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
export function sleep(ms, signal, wakers) {
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
export function wakeAll(wakers) {
  for (const wake of [...wakers]) wake();
}

/** The reason an aborted signal carries, as an error. @param {AbortSignal} signal */
export function abortReason(signal) {
  return signal.reason instanceof Error ? signal.reason : new SyncError('ABORTED', 'aborted');
}

/** Whether an error means the server could not be reached or failed (worth retrying later). @param {unknown} e */
export function isUnreachable(e) {
  return e instanceof SyncError && (e.code === 'NETWORK' || e.status >= 500);
}
