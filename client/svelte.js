// Svelte bindings of the better-sync browser client: a live query and the
// client's status as readable stores (the store contract, so `$todos` works
// in components and `get`, `derived` work in code; no Svelte import here).
//
//   import { queryStore, statusStore } from 'better-sync-client/svelte';
//   const todos = queryStore(sync, { model: 'todo' });   // $todos in markup
import { querySource, statusSource } from './lib/live.js';

/**
 * A store of a source: calls the subscriber at once with the current value
 * (`undefined` before the first), then with every new one; the client is
 * listened to while the store has subscribers.
 * @template T
 * @param {{ subscribe(listener: (value: T) => void): () => void, current(): T | undefined }} live
 */
function readable(live) {
  return {
    /** @param {(value: T | undefined) => void} run */
    subscribe(run) {
      const stop = live.subscribe(run);
      run(live.current());
      return stop;
    },
  };
}

/**
 * The live rows of a query as a readable store.
 * @param {import('./better-sync.js').SyncClient} sync
 * @param {import('./better-sync.js').QuerySpec} spec
 */
export function queryStore(sync, spec) {
  return readable(querySource(sync, spec));
}

/**
 * The client's queue statistics as a readable store.
 * @param {import('./better-sync.js').SyncClient} sync
 */
export function statusStore(sync) {
  return readable(statusSource(sync));
}
