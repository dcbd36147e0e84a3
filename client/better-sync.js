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
 *
 * The source is split into the ES modules of `lib/`, which the server serves
 * beside this file (`B/lib/<name>.js`), so the import above needs no build
 * step.
 */

export { uuidv7 } from './lib/ids.js';
export { SyncError } from './lib/errors.js';
export { HlcClock, MAX_COUNTER, canonicalHlc, compareHlc, formatHlc, parseHlc } from './lib/hlc.js';
export { applyRowChange, compareText, emptyRowState, isRowLive, mergeRowStates, rowStateFromParts } from './lib/conflict.js';
export { idb, memory } from './lib/storage.js';
export { rpc, ws } from './lib/transport.js';
export { PROTOCOL_VERSION, createSyncClient } from './lib/client.js';
