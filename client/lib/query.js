/**
 * Live queries over the local rows.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/query
 */

import { compareText, getOwn, setOwn } from './conflict.js';
import { sameJson } from './util.js';

/** @typedef {import('./storage.js').RowRecord} RowRecord */
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
export function project(spec, record) {
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
export class LiveQuery {
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
