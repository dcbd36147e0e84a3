// React bindings of the better-sync browser client: a live query and the
// client's status as hooks, over `useSyncExternalStore` (React 18 or later).
//
//   import { useQuery, useSyncStatus } from 'better-sync-client/react';
//   const todos = useQuery(sync, { model: 'todo', where: { done: false } });
//   const status = useSyncStatus(sync);
import { useMemo, useSyncExternalStore } from 'react';
import { querySource, statusSource } from './lib/live.js';

/**
 * The live rows of a query: `undefined` until the first result, then the
 * rows, re-rendering when (and only when) they change. A new `spec` with
 * the same content keeps the subscription.
 * @param {import('./better-sync.js').SyncClient} sync
 * @param {import('./better-sync.js').QuerySpec} spec
 */
export function useQuery(sync, spec) {
  const key = JSON.stringify(spec);
  // The spec's content is the key: callers may pass a new object each render.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const live = useMemo(() => querySource(sync, spec), [sync, key]);
  return useSyncExternalStore(live.subscribe, live.current, () => undefined);
}

/**
 * The client's queue statistics (`getQueueStats()`: online, queued,
 * authFailed, retrying, lastError...), `undefined` until first read.
 * @param {import('./better-sync.js').SyncClient} sync
 */
export function useSyncStatus(sync) {
  const live = useMemo(() => statusSource(sync), [sync]);
  return useSyncExternalStore(live.subscribe, live.current, () => undefined);
}
