/**
 * better-sync browser client: local-first storage (IndexedDB), a persistent
 * outbox, HTTP and WebSocket transports, and field-level last-writer-wins
 * conflict resolution identical to the server's (`src/conflict.rs`).
 *
 * Wire protocol: `docs/PROTOCOL.md`, protocol version 1.
 */

/** The wire protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

/** Largest counter a clock carries in its four hex digits (`0xffff`). */
export declare const MAX_COUNTER: number;

// ---------------------------------------------------------------------------
// Errors

/**
 * An error of the sync client. `code` is the server's `SYNC:*` code when the
 * server answered with one, or one of the client's own codes: `NETWORK`
 * (unreachable, timeout, socket failure), `BAD_RESPONSE` (an answer that is
 * not the protocol), `ABORTED` (the client disconnected), `CLIENT_ERROR` (an
 * unexpected local failure). Local validation of `applyChange` uses
 * `SYNC:INVALID_CHANGE` and `SYNC:UNKNOWN_MODEL` with `status` 0.
 */
export declare class SyncError extends Error {
  constructor(
    code: string,
    message: string,
    init?: { status?: number; meta?: Record<string, unknown> | null; retryAfterMs?: number | null; cause?: unknown },
  );
  readonly name: 'SyncError';
  /** Machine-readable code, e.g. `SYNC:INVALID_CHANGE` or `NETWORK`. */
  code: string;
  /** HTTP status of the answer; 0 when there was none. */
  status: number;
  /** The error answer's `meta`: `index`, `op_id`, `field`, `max`, `retryAfterMs`. */
  meta: Record<string, unknown> | null;
  /** Delay the server asked for before retrying, in ms. */
  retryAfterMs: number | null;
}

// ---------------------------------------------------------------------------
// Hybrid logical clock

/** A clock reading: milliseconds since the Unix epoch and a 16-bit counter. */
export interface Hlc {
  millis: number;
  counter: number;
}

/**
 * A new UUID version 7 (RFC 9562): Unix milliseconds, then random bits.
 * Later ids sort later, so a server's indexes take them in order; the client
 * uses them for op ids, and they make good row ids.
 */
export declare function uuidv7(): string;

/**
 * Parse a clock: any RFC 3339 date-time (a plain `toISOString()` is counter 0),
 * optionally followed after an upper-case `Z` by `-` and 1 to 4 hex digits.
 * @throws SyncError `SYNC:INVALID_CHANGE`
 */
export declare function parseHlc(text: string): Hlc;

/** Canonical text `YYYY-MM-DDTHH:MM:SS.mmmZ-CCCC` (lower-case hex counter). */
export declare function formatHlc(hlc: Hlc): string;

/** `formatHlc(parseHlc(text))`. */
export declare function canonicalHlc(text: string): string;

/** Order two clocks (physical time, then counter): negative, 0 or positive. */
export declare function compareHlc(a: Hlc | string, b: Hlc | string): number;

/** A hybrid logical clock for one replica (same semantics as `HlcClock` in hlc.rs). */
export declare class HlcClock {
  /** @param last a reading to continue from */
  constructor(last?: string | Hlc);
  /**
   * A new local event: the wall clock if it moved past the last reading, else
   * the last reading with counter + 1 (the next millisecond at `ffff`).
   * @returns the canonical clock text
   */
  tick(wallMillis?: number): string;
  /** Raise the clock to a remote reading so later ticks order after it. */
  observe(remote: string | Hlc): void;
  /** The last reading, canonical. */
  readonly last: string;
}

// ---------------------------------------------------------------------------
// Conflict resolution

/** Who wrote a value and when: `[clock, actor, op_id]`, the clock canonical. */
export type Stamp = [clock: string, actor: string, opId: string];

/** The merge state of a row, as a snapshot's `clocks`. */
export interface Clocks {
  /** Tombstone: the largest delete seen. */
  t: Stamp | null;
  /** The largest insert seen. */
  i: Stamp | null;
  /** The stamp of each field of `value`. */
  f: Record<string, Stamp>;
}

/** One row's state (`RowState` in conflict.rs). */
export interface RowState {
  value: Record<string, unknown>;
  clocks: Clocks;
}

export type Op = 'insert' | 'update' | 'delete';

/** A row state that has seen nothing. */
export declare function emptyRowState(): RowState;

/**
 * Fold one change into a row state, in place (`RowState::apply`).
 * @returns whether the state changed
 */
export declare function applyRowChange(state: RowState, op: Op, payload: unknown, stamp: Stamp): boolean;

/**
 * Join another replica's state of the same row into `state`, in place (`RowState::merge`).
 * @returns whether `state` changed
 */
export declare function mergeRowStates(state: RowState, other: RowState): boolean;

/** Whether the row exists: its latest insert orders after its tombstone. */
export declare function isRowLive(state: RowState): boolean;

/** Rebuild a state from a snapshot row's `value` and `clocks`; null when they do not fit. */
export declare function rowStateFromParts(value: unknown, clocks: unknown): RowState | null;

/** Compare strings byte-wise in UTF-8 (code point order), as Rust does. */
export declare function compareText(a: string, b: string): number;

// ---------------------------------------------------------------------------
// Wire types

/** A change as pushed (protocol section 3.1). */
export interface Change {
  op_id: string;
  model: string;
  pk: string;
  op: Op;
  /** The row (insert), the changed fields (update), null (delete). */
  payload: Record<string, unknown> | null;
  /** Canonical hybrid logical clock. */
  updated_at: string;
  actor: string;
}

// ---------------------------------------------------------------------------
// Storage

/** A row as stored locally. */
export interface RowRecord extends RowState {
  model: string;
  id: string;
  /** The row does not exist (deleted, or updated but never inserted). */
  deleted: boolean;
}

/** A queued change and its size in bytes. */
export interface OutboxEntry {
  change: Change;
  bytes: number;
}

/** The operations of one storage transaction. */
export interface StorageTx {
  getRow(model: string, id: string): Promise<RowRecord | undefined>;
  putRow(record: RowRecord): Promise<void>;
  /** Every row of a model, tombstones included. */
  listRows(model: string): Promise<RowRecord[]>;
  /** Drop a row locally (a shape let go of it; not a delete of the data). */
  deleteRow(model: string, id: string): Promise<void>;
  clearRows(): Promise<void>;
  /** Append; returns the entry's key. */
  addOutbox(entry: OutboxEntry): Promise<number>;
  /** The oldest entries, in order (all when `limit` is omitted). */
  readOutbox(limit?: number): Promise<Array<OutboxEntry & { key: number }>>;
  deleteOutbox(keys: number[]): Promise<void>;
  countOutbox(): Promise<number>;
  getMeta(key: string): Promise<any>;
  setMeta(key: string, value: unknown): Promise<void>;
}

/** A storage provider: rows, outbox and meta, changed in atomic transactions. */
export interface SyncStorage {
  /** Shared name: other tabs on the same name are told about changes. Null when not shared. */
  readonly name: string | null;
  open(): Promise<void>;
  /**
   * Run `fn` in one transaction: its writes commit together, or none when it
   * throws. `fn` must only await `tx` operations.
   */
  transaction<T>(mode: 'readonly' | 'readwrite', fn: (tx: StorageTx) => Promise<T>): Promise<T>;
  close(): void;
}

/**
 * IndexedDB storage: database `dbName` (version 1) with the object stores
 * `rows` (key `[model, id]`, index `model`), `outbox` (auto-increment) and
 * `meta` (cursor, actor, clock, resync flag, rejected changes).
 */
export declare function idb(options?: { dbName?: string; indexedDB?: IDBFactory }): SyncStorage;

/** In-memory storage with the same interface and transaction semantics. */
export declare function memory(): SyncStorage;

// ---------------------------------------------------------------------------
// Transports

/** What a transport needs from the client. */
export interface TransportContext {
  baseUrl: string;
  basePath: string;
  headers(): Promise<Record<string, string>>;
}

/** A transport; its session is internal to the client. */
export interface Transport {
  readonly name: string;
  open(ctx: TransportContext): unknown;
}

export interface RpcOptions {
  /** Server origin; default: the client's `baseUrl`. */
  baseUrl?: string;
  /** A `fetch` implementation; default the global one. */
  fetch?: typeof fetch;
  /** `wait` of each long-poll, in seconds (default 25). */
  longPollSecs?: number;
}

/** HTTP transport: push, snapshot and pull over `fetch`; live changes by long-poll. */
export declare function rpc(options?: RpcOptions): Transport;

export interface WsOptions extends RpcOptions {
  /** A WebSocket constructor; default the global one. */
  WebSocket?: typeof WebSocket;
}

/**
 * WebSocket transport: live changes over `B/ws` (the bearer token goes in the
 * `access_token` query parameter), falling back to long-poll while the socket
 * fails or when the server does not list the `websocket` feature.
 */
export declare function ws(options?: WsOptions): Transport;

// ---------------------------------------------------------------------------
// The client

export interface SyncClientOptions {
  /** Server origin, e.g. `https://app.example`; default `location.origin` in a browser. */
  baseUrl?: string;
  /** Sync base path; default `/api/sync`. */
  basePath?: string;
  /**
   * Model names (or an object keyed by them): checked by `applyChange` and
   * bootstrapped from snapshots. Default: the server's `sync.json` `models`.
   */
  models?: string[] | Record<string, unknown>;
  storage: SyncStorage;
  /** Default `rpc()`. */
  transport?: Transport;
  /** Headers of each request, typically `{ Authorization: 'Bearer <JWT>' }`. */
  auth?: {
    headers: () => Record<string, string> | Headers | Promise<Record<string, string> | Headers>;
    /** Renew the credentials after a 401 (e.g. fetch a new token); the request is retried once. Concurrent refusals share one call. */
    refresh?: () => void | Promise<void>;
  };
  /** The conflict strategy; only `'lww'` exists. */
  conflict?: 'lww';
  /** This replica's actor id; default a random UUID kept in storage. */
  actor?: string;
  /** The schema version of each model this app was built for, announced with every request. */
  versions?: Record<string, number>;
  /** Receives every event. */
  onEvent?: (event: SyncEvent) => void;
  /**
   * Replicate only the shapes subscribed with `subscribeShape`, no model
   * whole (no model snapshot, subscription or plain pull). `models` still
   * lists what `applyChange` accepts.
   */
  shapesOnly?: boolean;
  /** Report this client's queue, cursor and last error to an inspector page of the same origin (BroadcastChannel `better-sync-inspector`; default true). */
  inspector?: boolean;
}

export type SyncEvent =
  | { type: 'status'; online: boolean }
  /** The server refused the credentials (ok: false: renew the token), or took them again. */
  | { type: 'auth'; ok: boolean; error: SyncError | null }
  | { type: 'version'; ok: boolean; error: SyncError | null }
  /** A push or sync round failed and is retried after `delayMs` (jittered backoff, at least the server's Retry-After). */
  | { type: 'retry'; operation: 'push' | 'sync'; attempt: number; delayMs: number; error: SyncError }
  /** The cursor is no longer valid here (the server's data was reset or compacted): local state is rebuilt from snapshots, the outbox kept. */
  | { type: 'resync'; reason: string }
  /** The outbox changed size. */
  | { type: 'outbox'; queued: number }
  | { type: 'change'; model: string; ids: string[]; origin: 'local' | 'remote' | 'tab' }
  | { type: 'synced'; cursor: string }
  | { type: 'live'; mode: 'websocket' | 'long-poll' }
  | { type: 'error'; error: SyncError }
  | { type: 'rejected'; change: Change; error: SyncError }
  /** A shape subscription caught up (`synced`: its rows are in), or the server refused it (`refused`: unknown shape, bad params; it was dropped). */
  | { type: 'shape'; name: string; params: Record<string, unknown> | null; status: 'synced' | 'refused'; error: SyncError | null };

export type SyncEventType = SyncEvent['type'];

/** The input of `applyChange`. */
export type LocalChange =
  | { type: 'insert'; id: string; value: Record<string, unknown> }
  | { type: 'update'; id: string; patch: Record<string, unknown> }
  | { type: 'update'; id: string; value: Record<string, unknown> }
  | { type: 'delete'; id: string };

/** A row as queries return it: its id and its fields. */
export type Row = { id: string } & Record<string, any>;

export interface QuerySpec<R = Row> {
  model: string;
  /** Field equalities (deep, JSON), or a predicate on the row. */
  where?: Record<string, unknown> | ((row: Row) => boolean);
  /** Fields to keep, or a projection of the row. */
  select?: string[] | ((row: Row) => R);
}

export interface QueueStats {
  /** Changes not yet acknowledged by the server (in-flight ones included). */
  queued: number;
  /** Changes of the push request under way. */
  inFlight: number;
  /** The most recent error (kept after recovery; see `online`). */
  lastError: SyncError | null;
  /** Whether the last request reached the server. */
  online: boolean;
  /** The server refused the credentials and no request has succeeded since. */
  authFailed: boolean;
  /** The server cannot serve the announced model versions, and no request has succeeded since. */
  versionUnsupported: boolean;
  /** The retry under way, if any. */
  retrying: { operation: 'push' | 'sync'; delayMs: number; attempt: number } | null;
  /** The pull cursor. */
  cursor: string | null;
  /** Changes the server refused for good (see `getRejected`). */
  rejected: number;
  /** How live changes arrive; null when not connected. */
  live: 'websocket' | 'long-poll' | null;
}

/** A change the server refused for good, taken out of the outbox. */
export interface RejectedChange {
  change: Change;
  error: { code: string; message: string; status: number; meta: Record<string, unknown> | null };
  /** When it was refused, ms since the epoch. */
  at: number;
}

export interface SyncClient {
  /** This replica's actor id (set once any method has resolved). */
  readonly actor: string;
  /**
   * Start syncing: bootstrap from snapshots when there is no cursor yet
   * (keeping the first page's cursor), then live changes, and push the
   * outbox. Resolves after the first round, caught up or failed; a failed
   * round is retried in the background with backoff.
   */
  connect(): Promise<void>;
  /** Stop network activity; pending `drain()` calls reject with `ABORTED`. */
  disconnect(): Promise<void>;
  /** Disconnect and release the storage. */
  close(): Promise<void>;
  /**
   * Write a change locally (row and outbox in one transaction) and queue it
   * for the server. Works offline.
   * @returns the queued change
   */
  applyChange(model: string, change: LocalChange): Promise<Change>;
  /** Read a model's live rows once, sorted by id. */
  query<R = Row>(spec: QuerySpec<R>): Promise<R[]>;
  /**
   * A live query: `callback` gets the matching rows once read, then after
   * every local, remote or other-tab change that changes the result.
   * @returns unsubscribe
   */
  subscribeQuery<R = Row>(spec: QuerySpec<R>, callback: (rows: R[]) => void): () => void;
  /**
   * Hold the rows of the server's shape `name` with `params` beside what the
   * client holds: they join the one local store, so queries see the union.
   * Rows that leave the shape on the server leave local storage unless
   * another subscription holds them (not a delete: nothing is pushed). Kept
   * across reloads. Resolves once recorded; a `shape` event tells when its
   * rows are in, or that the server refused it.
   * @throws {SyncError} `SYNC:INVALID_QUERY` (name), `SYNC:INVALID_SHAPE_PARAMS` (params not an object)
   */
  subscribeShape(name: string, params?: Record<string, unknown> | null): Promise<void>;
  /** Stop holding a shape: its rows leave unless another subscription holds them. */
  unsubscribeShape(name: string, params?: Record<string, unknown> | null): Promise<void>;
  /** The shape subscriptions, sorted. */
  shapes(): Promise<Array<{ name: string; params: Record<string, unknown> | null }>>;
  /** Resolves when the outbox is empty and acknowledged (pushes even when not connected). */
  drain(): Promise<void>;
  getQueueStats(): Promise<QueueStats>;
  /** Changes the server refused for good (the last 100). */
  getRejected(): Promise<RejectedChange[]>;
  clearRejected(): Promise<void>;
  /** Listen to one kind of event. @returns removes the listener */
  on<T extends SyncEventType>(type: T, listener: (event: Extract<SyncEvent, { type: T }>) => void): () => void;
}

/** Create a sync client. */
export declare function createSyncClient(options: SyncClientOptions): SyncClient;
