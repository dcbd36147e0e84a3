/**
 * Shape subscriptions (PROTOCOL.md section 16): which subscription holds
 * which row, and what a shape answer does to the local rows.
 *
 * Every row record a shape brings carries `held`: the keys of the
 * subscriptions holding it. Rows the server sends are joined like snapshot
 * rows (by their stamps) and held; a retraction releases a row, and the row
 * leaves local storage when nothing holds it any more (no subscription, no
 * model replicated whole, no queued write). A reset (a new subscription, a
 * reconnection, a membership change seen by pull) releases the rows it does
 * not send again.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/shapes
 */

import { emptyRowState, isObject, isRowLive, mergeRowStates, rowStateFromParts } from './conflict.js';
import { SyncError } from './errors.js';

/** @typedef {import('./storage.js').RowRecord & { held?: string[] }} HeldRecord */
/** @typedef {import('./storage.js').StorageTx} StorageTx */

/**
 * A subscription as the client keeps it (in meta `shapes`).
 * @typedef {{ key: string, name: string, params: Record<string, unknown> | null, model: string | null, cursor: string | null }} ShapeSub
 */

const SHAPE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Check a subscription's name and params the way the server will.
 * @param {unknown} name @param {unknown} params
 */
export function checkShapeRequest(name, params) {
  if (typeof name !== 'string' || !SHAPE_NAME.test(name)) {
    throw new SyncError('SYNC:INVALID_QUERY', `shape ${JSON.stringify(name)}: 1 to 64 characters of A-Za-z0-9_-`);
  }
  if (params !== null && !isObject(params)) {
    throw new SyncError('SYNC:INVALID_SHAPE_PARAMS', "a shape's params are an object (or null when it has none)");
  }
}

/**
 * A subscription's key: the name and the params with sorted object keys.
 * @param {string} name @param {unknown} params
 */
export function shapeKey(name, params) {
  /** @param {unknown} v @returns {string} */
  const canonical = (v) => {
    if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
    if (isObject(v)) {
      return `{${Object.keys(v)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
        .join(',')}}`;
    }
    return JSON.stringify(v ?? null);
  };
  return `${name} ${canonical(params ?? null)}`;
}

/** Codes that refuse a subscription for good. */
export const SHAPE_REFUSALS = new Set(['SYNC:UNKNOWN_SHAPE', 'SYNC:INVALID_SHAPE_PARAMS']);

/**
 * What a shape answer did: records written (for queries and listeners),
 * records dropped (queries drop them), rows skipped as malformed.
 * @typedef {{ written: HeldRecord[], dropped: HeldRecord[], skipped: SyncError[] }} ShapeOutcome
 */

/**
 * Apply a shape answer inside a storage transaction.
 * @param {StorageTx} tx
 * @param {{
 *   key: string,
 *   model: string,
 *   rows: any[],
 *   retracts: string[],
 *   replace: Set<string> | null,
 *   whole: boolean,
 *   observe: (clock: string) => void,
 * }} answer `replace`: the ids of a finished reset (every other row this
 *   subscription held is released); `whole`: the model is replicated whole
 *   (released rows stay)
 * @returns {Promise<ShapeOutcome>}
 */
export async function applyShapeAnswer(tx, { key, model, rows, retracts, replace, whole, observe }) {
  /** @type {ShapeOutcome} */
  const out = { written: [], dropped: [], skipped: [] };
  for (const row of rows) {
    const state = typeof row?.id === 'string' ? rowStateFromParts(row.value, row.clocks) : null;
    if (!state) {
      out.skipped.push(new SyncError('BAD_RESPONSE', `shape rows of ${model}: row ${JSON.stringify(row?.id)} has value and clocks that do not fit`));
      continue;
    }
    for (const s of [state.clocks.t, state.clocks.i, ...Object.values(state.clocks.f)]) if (s) observe(s[0]);
    /** @type {HeldRecord} */
    const record = (await tx.getRow(model, row.id)) ?? { model, id: row.id, ...emptyRowState(), deleted: true };
    const changed = mergeRowStates(record, state);
    const held = new Set(record.held ?? []);
    const newlyHeld = !held.has(key);
    held.add(key);
    record.held = [...held];
    if (changed || newlyHeld) {
      record.deleted = !isRowLive(record);
      await tx.putRow(record);
      if (changed) out.written.push(record);
    }
  }
  const needsPending = retracts.length > 0 || replace !== null;
  const pending = needsPending ? await pendingIds(tx, model) : new Set();
  /** @param {HeldRecord} record @param {boolean} heldHere */
  const release = async (record, heldHere) => {
    const held = (record.held ?? []).filter((/** @type {string} */ k) => k !== key);
    if (!whole && held.length === 0 && (heldHere || !pending.has(record.id))) {
      await tx.deleteRow(model, record.id);
      out.dropped.push({ ...record, held: [], deleted: true });
    } else if (heldHere) {
      record.held = held;
      await tx.putRow(record);
    }
  };
  for (const id of retracts) {
    /** @type {HeldRecord | undefined} */
    const record = await tx.getRow(model, id);
    // A pull names rows never held too: the server says they are not in the shape.
    if (record) await release(record, (record.held ?? []).includes(key));
  }
  if (replace) {
    /** @type {HeldRecord[]} */
    const all = await tx.listRows(model);
    for (const record of all) {
      if (replace.has(record.id)) continue;
      const heldHere = (record.held ?? []).includes(key);
      // Rows nothing holds (a local write acknowledged before its shape sent it back) go too.
      if (heldHere || (record.held ?? []).length === 0) await release(record, heldHere);
    }
  }
  return out;
}

/**
 * Forget a subscription's hold on every row of its model; rows nothing
 * else holds (and no queued write keeps) leave.
 * @param {StorageTx} tx @param {string} key @param {string} model @param {boolean} whole
 * @returns {Promise<HeldRecord[]>} the dropped rows
 */
export async function releaseShape(tx, key, model, whole) {
  const out = await applyShapeAnswer(tx, { key, model, rows: [], retracts: [], replace: new Set(), whole, observe: () => {} });
  return out.dropped;
}

/** Ids of rows of `model` with queued writes. @param {StorageTx} tx @param {string} model */
async function pendingIds(tx, model) {
  const ids = new Set();
  for (const { change } of await tx.readOutbox()) if (change.model === model) ids.add(change.pk);
  return ids;
}
