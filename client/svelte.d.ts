import type { QuerySpec, QueueStats, Row, SyncClient } from './better-sync.js';

/** Svelte's readable store contract. */
export interface Readable<T> {
  subscribe(run: (value: T) => void): () => void;
}
/** The live rows of a query as a readable store (`undefined` until the first result). */
export function queryStore<R = Row>(sync: SyncClient, spec: QuerySpec<R>): Readable<R[] | undefined>;
/** The client's queue statistics as a readable store. */
export function statusStore(sync: SyncClient): Readable<QueueStats | undefined>;
