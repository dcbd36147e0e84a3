import type { QuerySpec, QueueStats, Row, SyncClient } from './better-sync.js';

/** The live rows of a query: `undefined` until the first result. */
export function useQuery<R = Row>(sync: SyncClient, spec: QuerySpec<R>): R[] | undefined;
/** The client's queue statistics, `undefined` until first read. */
export function useSyncStatus(sync: SyncClient): QueueStats | undefined;
