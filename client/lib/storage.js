/**
 * Local storage: IndexedDB (`idb`) and memory (`memory`).
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/storage
 */

import { SyncError } from './errors.js';
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
 * @property {(model: string, id: string) => Promise<void>} deleteRow drop a row locally (a shape let go of it; not a delete of the data)
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
        deleteRow: async (model, id) => void (await requestResult(rows.delete([model, id]))),
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
          async deleteRow(model, id) {
            writable();
            const k = rowKey(model, id);
            remember(rows, k);
            rows.delete(k);
          },
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
