/**
 * The client: local writes with a persistent outbox, the push and sync loops, `createSyncClient`.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/client
 */

import { applyRowChange, compareText, emptyRowState, isObject, isRowLive, mergeRowStates, requireStamp, rowStateFromParts } from './conflict.js';
import { SyncError, asSyncError } from './errors.js';
import { HlcClock } from './hlc.js';
import { uuidv7 } from './ids.js';
import { LiveQuery, project } from './query.js';
import { applyShapeAnswer, checkShapeRequest, releaseShape, shapeKey } from './shapes.js';
import { rpc } from './transport.js';
import { CONTROL, backoffDelay, isUnreachable, jsonDepth, sleep, utf8Length, wakeAll } from './util.js';

/** The wire protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** @typedef {import('./query.js').QuerySpec} QuerySpec */
/** @typedef {import('./storage.js').Change} Change */
/** @typedef {import('./storage.js').RowRecord} RowRecord */
/** @typedef {import('./storage.js').SyncStorage} SyncStorage */
/** @typedef {import('./transport.js').Transport} Transport */

/**
 * Options of {@link createSyncClient}.
 * @typedef {object} SyncClientOptions
 * @property {boolean} [inspector] report this client's state to an inspector page of the same origin (default true)
 * @property {string} [baseUrl] origin of the server, e.g. `https://app.example`; default `location.origin` in a browser
 * @property {string} [basePath] the sync base path, default `/api/sync`
 * @property {string[] | Record<string, unknown>} [models] model names (or an object keyed by them):
 *   checked by `applyChange` and bootstrapped from snapshots; default: the server's `sync.json` `models`
 * @property {SyncStorage} storage {@link idb} or {@link memory}
 * @property {Transport} [transport] {@link rpc} (default) or {@link ws}
 * @property {{ headers: () => Record<string, string> | Headers | Promise<Record<string, string> | Headers>, refresh?: () => void | Promise<void> }} [auth]
 *   request headers, and an optional hook that renews the credentials after a 401 (the request is retried once)
 *   headers of each request, typically `{ Authorization: 'Bearer <JWT>' }`
 * @property {'lww'} [conflict] the conflict strategy; only `'lww'` exists
 * @property {string} [actor] this replica's actor id; default a random UUID kept in storage
 * @property {Record<string, number>} [versions] the schema version of each model this app was built for,
 *   announced with every request (`X-Sync-Versions`); a server that cannot serve them answers
 *   `SYNC:VERSION_UNSUPPORTED`, reported as a `version` event and `versionUnsupported` (the queue is kept)
 * @property {(event: SyncEvent) => void} [onEvent] receives every event
 * @property {boolean} [shapesOnly] replicate only the shapes subscribed with `subscribeShape`, no model whole
 *   (no model snapshot, no model subscription, no plain pull); `models` still lists what `applyChange` accepts
 */

/**
 * An event of the client.
 * @typedef {{ type: 'status', online: boolean }
 *   | { type: 'auth', ok: boolean, error: SyncError | null }
 *   | { type: 'version', ok: boolean, error: SyncError | null }
 *   | { type: 'retry', operation: 'push' | 'sync', attempt: number, delayMs: number, error: SyncError }
 *   | { type: 'resync', reason: string }
 *   | { type: 'outbox', queued: number }
 *   | { type: 'change', model: string, ids: string[], origin: 'local' | 'remote' | 'tab' }
 *   | { type: 'synced', cursor: string }
 *   | { type: 'live', mode: 'websocket' | 'long-poll' }
 *   | { type: 'error', error: SyncError }
 *   | { type: 'rejected', change: Change, error: SyncError }
 *   | { type: 'shape', name: string, params: Record<string, unknown> | null, status: 'synced' | 'refused', error: SyncError | null }} SyncEvent
 */

/**
 * Outbox and connection statistics.
 * @typedef {object} QueueStats
 * @property {number} queued changes not yet acknowledged by the server (in-flight ones included)
 * @property {number} inFlight changes of the push request under way
 * @property {SyncError | null} lastError the most recent error (kept after recovery; see `online`)
 * @property {boolean} authFailed the server refused the credentials (401, or 403 for the whole request) and no request has succeeded since
 * @property {boolean} versionUnsupported the server cannot serve the model versions this app announced, and no request has succeeded since
 * @property {{ operation: 'push' | 'sync', delayMs: number, attempt: number } | null} retrying the retry under way, if any
 * @property {boolean} online whether the last request reached the server
 * @property {string | null} cursor the pull cursor
 * @property {number} rejected changes the server refused (see `getRejected`)
 * @property {'websocket' | 'long-poll' | null} live how live changes arrive, null when not connected
 */

/**
 * A change the server refused for good, taken out of the outbox.
 * @typedef {{ change: Change, error: { code: string, message: string, status: number, meta: Record<string, unknown> | null }, at: number }} RejectedChange
 */

const DEFAULT_MAX_BATCH = 1000;
const DEFAULT_MAX_BATCH_BYTES = 256 * 1024;
const MAX_REJECTED_KEPT = 100;
const MODEL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Push errors that are about the batch's content: retrying the same batch fails again.
 * `SYNC:MALFORMED_JSON` and `SYNC:INVALID_BODY` are not among them: this client's
 * bodies are well-formed, so those mean a body damaged on the way (a proxy), and
 * setting changes aside for them would empty the outbox into `rejected`.
 */
const CONTENT_ERRORS = new Set([
  'SYNC:INVALID_CHANGE',
  'SYNC:UNKNOWN_MODEL',
  'SYNC:DUPLICATE_OP_ID',
  'SYNC:OP_ID_CONFLICT',
  'SYNC:PAYLOAD_TOO_LARGE',
  'SYNC:BATCH_TOO_LARGE',
  'SYNC:CHANGE_TOO_LARGE',
  'SYNC:PAYLOAD_TOO_DEEP',
  'SYNC:SCHEMA_VIOLATION',
]);

/** Errors that make the stored cursor unusable: bootstrap again. */
/** Where clients report their state to an inspector page of the same origin. */
const INSPECTOR_CHANNEL = 'better-sync-inspector';
const CURSOR_ERRORS = new Set(['SYNC:CURSOR_AHEAD', 'SYNC:CURSOR_STALE', 'SYNC:FOREIGN_CURSOR', 'SYNC:INVALID_CURSOR']);

/**
 * What to do after a failed push of `size` changes.
 * @param {SyncError} e
 * @param {number} size
 * @returns {{ action: 'retry' } | { action: 'split' } | { action: 'reject', index: number }}
 */
function pushVerdict(e, size) {
  const index = e.meta?.index;
  const hasIndex = Number.isInteger(index) && /** @type {number} */ (index) >= 0 && /** @type {number} */ (index) < size;
  // Any 413 (a proxy's has no SYNC body) is about size: smaller batches get through.
  const aboutContent = CONTENT_ERRORS.has(e.code) || (e.code === 'SYNC:FORBIDDEN' && hasIndex) || e.status === 413;
  if (e.status < 400 || e.status >= 500 || !aboutContent) return { action: 'retry' };
  if (hasIndex) return { action: 'reject', index: /** @type {number} */ (index) };
  return size > 1 ? { action: 'split' } : { action: 'reject', index: 0 };
}

/** @param {string} model @param {string} id @returns {RowRecord} */
function newRecord(model, id) {
  return { model, id, ...emptyRowState(), deleted: true };
}

/**
 * The sync client. Create it with {@link createSyncClient}.
 */
class SyncClient {
  #options;
  #storage;
  #session;
  #clock = new HlcClock();
  /** @type {string} */
  #actor = '';
  /** @type {string | null} */
  #cursor = null;
  #needsResync = false;
  /** Replicate shapes only, no model whole. */
  #shapesOnly = false;
  /** Shape subscriptions by key (stored in meta `shapes`). @type {Map<string, import('./shapes.js').ShapeSub>} */
  #shapes = new Map();
  /** @type {Record<string, any> | null} */
  #metadata = null;
  #ready;

  /** @type {Map<string, Set<(event: any) => void>>} */
  #listeners = new Map();
  /** @type {Map<string, Set<LiveQuery>>} */
  #queries = new Map();
  /** @type {BroadcastChannel | null} */
  #channel = null;

  #online = false;
  /** @type {SyncError | null} */
  #lastError = null;
  #inFlight = 0;
  /** Whether the credentials were refused, and nothing succeeded since. */
  #authFailed = false;
  /** Whether the server refused this app's model versions, and nothing succeeded since. */
  #versionUnsupported = false;
  /** @type {Promise<boolean> | null} the token refresh under way */
  #refreshing = null;
  /** @type {BroadcastChannel | null} the inspector's channel */
  #inspector = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #reportTimer = null;
  /** @type {{ operation: 'push' | 'sync', delayMs: number, attempt: number } | null} */
  #retrying = null;
  /** @type {'websocket' | 'long-poll' | null} */
  #liveMode = null;
  #batchLimit = DEFAULT_MAX_BATCH;

  /** Set while connected. @type {AbortController | null} */
  #connection = null;
  /** Aborts the current live round (to resync). @type {AbortController | null} */
  #round = null;
  /** @type {{ promise: Promise<void>, resolve: () => void } | null} */
  #firstRound = null;
  /** @type {Promise<void> | null} */
  #syncTask = null;
  /** @type {Promise<void> | null} */
  #pushTask = null;
  /** @type {AbortController | null} */
  #pushAbort = null;
  /** Wake the idle pusher (new outbox entries). @type {Set<() => void>} */
  #work = new Set();
  /** Cut backoff waits short (the browser came back online). @type {Set<() => void>} */
  #network = new Set();
  /** @type {Set<{ resolve: () => void, reject: (e: unknown) => void }>} */
  #drains = new Set();
  #onBrowserOnline = () => wakeAll(this.#network);

  /** @param {SyncClientOptions} options */
  constructor(options) {
    if (!options || typeof options !== 'object') throw new TypeError('createSyncClient: options are required');
    const { storage, conflict = 'lww' } = options;
    if (!storage || typeof storage.transaction !== 'function') throw new TypeError('createSyncClient: `storage` must be idb(...) or memory()');
    if (conflict !== 'lww') throw new TypeError(`createSyncClient: unknown conflict strategy ${JSON.stringify(conflict)}; only 'lww' exists`);
    const baseUrl = options.baseUrl ?? globalThis.location?.origin;
    if (typeof baseUrl !== 'string') throw new TypeError('createSyncClient: `baseUrl` is required outside a browser');
    const basePath = (options.basePath ?? '/api/sync').replace(/\/+$/, '');
    if (!basePath.startsWith('/')) throw new TypeError('createSyncClient: `basePath` must start with /');
    if (options.actor !== undefined) checkActor(options.actor);
    const versions = versionsText(options.versions);
    this.#options = options;
    this.#shapesOnly = options.shapesOnly === true;
    this.#storage = storage;
    const transport = options.transport ?? rpc();
    this.#session = transport.open({
      baseUrl,
      basePath,
      headers: () => this.#authHeaders(),
      refresh: () => this.#refreshAuth(),
      versions,
    });
    this.#ready = this.#init();
    // Keep unhandled-rejection noise away; every method awaits #ready and rethrows.
    this.#ready.catch(() => {});
    // Report this client's state to an inspector page of the same origin
    // (`B/inspector`); `inspector: false` turns it off.
    if (options.inspector !== false && typeof BroadcastChannel === 'function') {
      this.#inspector = new BroadcastChannel(INSPECTOR_CHANNEL);
      this.#inspector.unref?.();
      this.#inspector.onmessage = ({ data }) => {
        if (data?.type === 'ping') this.#report();
      };
    }
  }

  /** Post this client's stats to the inspector channel, at most every 200 ms. */
  #scheduleReport() {
    if (!this.#inspector || this.#reportTimer) return;
    this.#reportTimer = setTimeout(() => {
      this.#reportTimer = null;
      this.#report();
    }, 200);
    /** @type {any} */ (this.#reportTimer).unref?.();
  }

  #report() {
    const channel = this.#inspector;
    if (!channel) return;
    this.getQueueStats()
      .then((stats) => channel.postMessage({ type: 'stats', actor: this.#actor, stats: JSON.parse(JSON.stringify(stats)) }))
      .catch(() => {});
  }

  async #init() {
    await this.#storage.open();
    await this.#storage.transaction('readwrite', async (tx) => {
      const stored = await tx.getMeta('actor');
      this.#actor = this.#options.actor ?? stored ?? crypto.randomUUID();
      if (stored !== this.#actor) await tx.setMeta('actor', this.#actor);
      const clock = await tx.getMeta('clock');
      if (typeof clock === 'string') this.#clock.observe(clock);
      this.#cursor = (await tx.getMeta('cursor')) ?? null;
      this.#needsResync = (await tx.getMeta('resync')) === true;
      const shapes = await tx.getMeta('shapes');
      for (const sub of Array.isArray(shapes) ? shapes : []) {
        if (typeof sub?.name === 'string') this.#shapes.set(shapeKey(sub.name, sub.params ?? null), { ...sub, key: shapeKey(sub.name, sub.params ?? null) });
      }
    });
    const name = this.#storage.name;
    if (name !== null && typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(`better-sync:${name}`);
      /** @type {any} */ (this.#channel).unref?.();
      this.#channel.onmessage = (event) => this.#onTabMessage(event.data);
    }
  }

  /** This replica's actor id (available once a method has resolved). */
  get actor() {
    return this.#actor;
  }

  // -- events ---------------------------------------------------------------

  /**
   * Listen to one kind of event (`status`, `change`, `synced`, `live`,
   * `error`, `rejected`).
   * @param {SyncEvent['type']} type
   * @param {(event: any) => void} listener receives the event object
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  /** @param {SyncEvent} event */
  #emit(event) {
    if (event.type !== 'change') this.#scheduleReport();
    const targets = [...(this.#listeners.get(event.type) ?? [])];
    if (this.#options.onEvent) targets.push(this.#options.onEvent);
    for (const fn of targets) {
      try {
        fn(event);
      } catch (e) {
        if (event.type !== 'error') this.#emit({ type: 'error', error: asSyncError(e) });
      }
    }
  }

  /** @param {unknown} e */
  #recordError(e) {
    const error = asSyncError(e);
    this.#lastError = error;
    this.#emit({ type: 'error', error });
  }

  /** Record a failed request; whether the server answered tells `online`. @param {SyncError} error */
  #noteFailure(error) {
    this.#recordError(error);
    if (isUnreachable(error)) this.#setOnline(false);
    else if (error.status > 0) this.#setOnline(true);
    // Refused credentials are not being offline: the app must renew them.
    const refused = error.status === 401 || (error.status === 403 && error.meta?.index === undefined);
    if (refused && !this.#authFailed) {
      this.#authFailed = true;
      this.#emit({ type: 'auth', ok: false, error });
    }
    // Only a newer app (or server) helps: report it, keep the queue.
    if (error.code === 'SYNC:VERSION_UNSUPPORTED' && !this.#versionUnsupported) {
      this.#versionUnsupported = true;
      this.#emit({ type: 'version', ok: false, error });
    }
  }

  /** A request succeeded: the server is reachable and takes the credentials. */
  #noteSuccess() {
    this.#setOnline(true);
    this.#retrying = null;
    if (this.#authFailed) {
      this.#authFailed = false;
      this.#emit({ type: 'auth', ok: true, error: null });
    }
    if (this.#versionUnsupported) {
      this.#versionUnsupported = false;
      this.#emit({ type: 'version', ok: true, error: null });
    }
  }

  /**
   * Wait before retrying `operation`: the backoff delay (at least what the
   * server asked for), announced as a `retry` event.
   * @param {'push' | 'sync'} operation @param {number} attempt @param {SyncError} error
   * @param {AbortSignal} signal @param {Set<() => void>} [wakers]
   */
  async #retryAfter(operation, attempt, error, signal, wakers) {
    const delayMs = Math.max(error.retryAfterMs ?? 0, backoffDelay(attempt));
    this.#retrying = { operation, delayMs, attempt: attempt + 1 };
    this.#emit({ type: 'retry', operation, attempt: attempt + 1, delayMs, error });
    await sleep(delayMs, signal, wakers);
  }

  /** The outbox changed size: tell the app. */
  async #announceOutbox() {
    const queued = await this.#storage.transaction('readonly', (tx) => tx.countOutbox());
    this.#emit({ type: 'outbox', queued });
  }

  /** @param {boolean} online */
  #setOnline(online) {
    if (this.#online === online) return;
    this.#online = online;
    this.#emit({ type: 'status', online });
  }

  /** The auth headers of a request, as a plain object. @returns {Promise<Record<string, string>>} */
  /**
   * Renew the credentials with the app's `auth.refresh` hook, once for all
   * requests refused at the same time; whether there is a hook.
   * @returns {Promise<boolean>}
   */
  #refreshAuth() {
    const refresh = this.#options.auth?.refresh;
    if (typeof refresh !== 'function') return Promise.resolve(false);
    this.#refreshing ??= Promise.resolve()
      .then(() => refresh())
      .then(() => true)
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  async #authHeaders() {
    const h = await this.#options.auth?.headers();
    /** @type {Record<string, string>} */
    const out = {};
    if (typeof Headers === 'function' && h instanceof Headers) h.forEach((value, name) => (out[name] = value));
    else if (h) Object.assign(out, h);
    return out;
  }

  // -- local writes ---------------------------------------------------------

  /**
   * Write a change locally, now: the row and the outbox in one storage
   * transaction. Works offline; the change is pushed in the background.
   *
   * - `insert`: `value` is the row (an object). Fields it does not mention
   *   keep their values (an insert is a field-level upsert).
   * - `update`: `patch` (or `value`) holds the changed fields (non-empty).
   *   An update of a row that does not exist is kept but does not create it.
   * - `delete`: no payload.
   *
   * @param {string} model
   * @param {{ type: 'insert' | 'update' | 'delete', id: string, value?: Record<string, unknown>, patch?: Record<string, unknown> }} change
   * @returns {Promise<Change>} the queued change, once stored locally
   * @throws {SyncError} `SYNC:INVALID_CHANGE` / `SYNC:UNKNOWN_MODEL` for a change the server would refuse
   */
  async applyChange(model, { type, id, value, patch } = /** @type {any} */ ({})) {
    await this.#ready;
    const invalid = (/** @type {string} */ message, /** @type {string} */ field) =>
      new SyncError('SYNC:INVALID_CHANGE', message, { meta: { field } });
    if (typeof model !== 'string' || !MODEL_NAME.test(model)) throw invalid(`model ${JSON.stringify(model)}: 1 to 64 characters of A-Za-z0-9_-`, 'model');
    const known = this.#knownModels();
    if (known && !known.includes(model)) throw new SyncError('SYNC:UNKNOWN_MODEL', `unknown model ${JSON.stringify(model)}`, { meta: { field: 'model' } });
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > 255 || CONTROL.test(id)) {
      throw invalid('id: a string of 1 to 255 bytes without control characters', 'pk');
    }
    if (type !== 'insert' && type !== 'update' && type !== 'delete') throw invalid(`type ${JSON.stringify(type)}: insert, update or delete`, 'op');

    let payload = null;
    if (type !== 'delete') {
      const raw = type === 'update' ? patch ?? value : value;
      let text;
      try {
        text = JSON.stringify(raw);
      } catch (e) {
        throw invalid(`${type} payload is not JSON: ${e instanceof Error ? e.message : e}`, 'payload');
      }
      payload = text === undefined ? undefined : JSON.parse(text);
      if (!isObject(payload)) throw invalid(`${type} needs an object (${type === 'insert' ? 'value' : 'patch'})`, 'payload');
      if (type === 'update' && Object.keys(payload).length === 0) throw invalid('update needs at least one field', 'payload');
      if (Object.hasOwn(payload, 'id')) {
        const pid = payload.id;
        if (!(pid === id || (typeof pid === 'number' && JSON.stringify(pid) === id))) throw invalid(`payload.id ${JSON.stringify(pid)} differs from id ${JSON.stringify(id)}`, 'payload');
      }
      const limits = this.#metadata?.limits ?? {};
      const maxBytes = limits.maxPayloadBytes ?? 262_144;
      if (utf8Length(/** @type {string} */ (text)) > maxBytes) throw invalid(`payload larger than ${maxBytes} bytes`, 'payload');
      if (jsonDepth(payload) > 32) throw invalid('payload nests deeper than 32 levels', 'payload');
    }

    const updated_at = this.#clock.tick();
    /** @type {Change} */
    const change = { op_id: uuidv7(), model, pk: id, op: type, payload, updated_at, actor: this.#actor };
    const bytes = utf8Length(JSON.stringify(change));
    /** @type {RowRecord | undefined} */
    let record;
    await this.#storage.transaction('readwrite', async (tx) => {
      record = (await tx.getRow(model, id)) ?? newRecord(model, id);
      applyRowChange(record, type, payload, [updated_at, this.#actor, change.op_id]);
      record.deleted = !isRowLive(record);
      await tx.putRow(record);
      await tx.addOutbox({ change, bytes });
      await tx.setMeta('clock', this.#clock.last);
    });
    this.#notify([/** @type {RowRecord} */ (record)], 'local');
    wakeAll(this.#work);
    await this.#announceOutbox();
    return change;
  }

  /** Model names known before connecting (the option), else the server's list once read. */
  #knownModels() {
    const m = this.#options.models;
    if (Array.isArray(m)) return m;
    if (isObject(m)) return Object.keys(m);
    return Array.isArray(this.#metadata?.models) ? /** @type {string[]} */ (this.#metadata.models) : null;
  }

  // -- queries --------------------------------------------------------------

  /**
   * Read a model's live rows once: `{ id, ...value }`, sorted by id,
   * filtered by `where`, projected by `select`.
   * @param {QuerySpec} spec
   * @returns {Promise<any[]>}
   */
  async query(spec) {
    await this.#ready;
    const records = await this.#readModel(spec.model);
    return records
      .sort((a, b) => compareText(a.id, b.id))
      .map((r) => project(spec, r))
      .filter((row) => row !== undefined);
  }

  /**
   * A live query: `callback` gets the matching rows (as {@link query} gives
   * them) once read, then again after every local, remote or other-tab change
   * that changes the result.
   * @param {QuerySpec} spec
   * @param {(rows: any[]) => void} callback
   * @returns {() => void} unsubscribe
   */
  subscribeQuery(spec, callback) {
    if (!spec || typeof spec.model !== 'string') throw new TypeError('subscribeQuery: { model } is required');
    if (typeof callback !== 'function') throw new TypeError('subscribeQuery: a callback is required');
    const query = new LiveQuery(spec, callback, (model) => this.#readModel(model), (e) => this.#recordError(e));
    let set = this.#queries.get(spec.model);
    if (!set) this.#queries.set(spec.model, (set = new Set()));
    set.add(query);
    this.#ready.then(() => query.reload(), (e) => this.#recordError(e));
    return () => {
      query.closed = true;
      set.delete(query);
    };
  }

  /** @param {string} model */
  #readModel(model) {
    return this.#storage.transaction('readonly', (tx) => tx.listRows(model));
  }

  /**
   * Tell queries, listeners and other tabs about changed rows.
   * @param {Iterable<RowRecord>} records
   * @param {'local' | 'remote' | 'tab'} origin
   */
  #notify(records, origin) {
    /** @type {Map<string, RowRecord[]>} */
    const byModel = new Map();
    for (const r of records) {
      const list = byModel.get(r.model);
      if (list) list.push(r);
      else byModel.set(r.model, [r]);
    }
    for (const [model, list] of byModel) {
      for (const q of this.#queries.get(model) ?? []) q.update(list);
      const ids = list.map((r) => r.id);
      this.#emit({ type: 'change', model, ids, origin });
      if (origin !== 'tab') this.#channel?.postMessage({ type: 'rows', model, ids });
    }
  }

  /** Every query reads its result again (after local state was rebuilt). @param {boolean} broadcast */
  #reloadQueries(broadcast) {
    for (const set of this.#queries.values()) for (const q of set) q.reload();
    if (broadcast) this.#channel?.postMessage({ type: 'reset' });
  }

  /** Another tab changed the shared storage. @param {any} msg */
  async #onTabMessage(msg) {
    try {
      if (msg?.type === 'reset') return this.#reloadQueries(false);
      if (msg?.type !== 'rows' || !this.#queries.has(msg.model)) return;
      const records = await this.#storage.transaction('readonly', async (tx) => {
        const found = await Promise.all(msg.ids.map((/** @type {string} */ id) => tx.getRow(msg.model, id)));
        return found.filter((r) => r !== undefined);
      });
      this.#notify(records, 'tab');
    } catch (e) {
      this.#recordError(e);
    }
  }

  // -- connection -----------------------------------------------------------

  /**
   * Start syncing: read `sync.json`, bootstrap from snapshots when there is
   * no cursor yet, then receive live changes, and push the outbox. Resolves
   * after the first round: caught up with the server, or failed (then it keeps
   * retrying in the background with backoff, and `status` events tell when the
   * server is reachable). Calling it again while connected returns the same promise.
   * @returns {Promise<void>}
   */
  async connect() {
    await this.#ready;
    if (this.#connection && this.#firstRound) return this.#firstRound.promise;
    const connection = new AbortController();
    this.#connection = connection;
    /** @type {() => void} */
    let resolve = () => {};
    const promise = new Promise((r) => (resolve = () => r(undefined)));
    this.#firstRound = { promise, resolve };
    globalThis.addEventListener?.('online', this.#onBrowserOnline);
    this.#syncTask = this.#syncLoop(connection.signal);
    this.#ensurePusher();
    return promise;
  }

  /**
   * Stop all network activity (local writes and queries keep working).
   * Pending `drain()` calls reject with `ABORTED`. Resolves once the loops
   * have stopped.
   * @returns {Promise<void>}
   */
  async disconnect() {
    this.#connection?.abort(new SyncError('ABORTED', 'disconnected'));
    this.#connection = null;
    this.#pushAbort?.abort(new SyncError('ABORTED', 'disconnected'));
    globalThis.removeEventListener?.('online', this.#onBrowserOnline);
    for (const d of this.#drains) d.reject(new SyncError('ABORTED', 'disconnected before the outbox was drained'));
    this.#drains.clear();
    this.#firstRound?.resolve();
    await Promise.all([this.#syncTask, this.#pushTask]);
    this.#liveMode = null;
    this.#setOnline(false);
  }

  /**
   * Disconnect and release the storage (and the cross-tab channel).
   * @returns {Promise<void>}
   */
  async close() {
    await this.disconnect();
    await this.#ready.catch(() => {});
    this.#channel?.close();
    this.#channel = null;
    clearTimeout(this.#reportTimer ?? undefined);
    this.#reportTimer = null;
    this.#inspector?.close();
    this.#inspector = null;
    this.#storage.close();
  }

  /** The server's sync.json (read once per client). @param {AbortSignal} signal */
  async #readMetadata(signal) {
    if (this.#metadata) return this.#metadata;
    const meta = await this.#session.metadata(signal);
    if (meta.protocolVersion !== PROTOCOL_VERSION) {
      throw new SyncError('BAD_RESPONSE', `server speaks protocol ${meta.protocolVersion}, this client ${PROTOCOL_VERSION}`);
    }
    this.#metadata = meta;
    return meta;
  }

  /**
   * Bootstrap (when there is no cursor) and live changes, in rounds; a
   * failed round is retried with backoff, a cursor error rebuilds local state.
   * @param {AbortSignal} signal
   */
  async #syncLoop(signal) {
    let attempt = 0;
    while (!signal.aborted) {
      const round = new AbortController();
      const stop = () => round.abort(signal.reason);
      signal.addEventListener('abort', stop, { once: true });
      this.#round = round;
      try {
        if (this.#needsResync) await this.#resetLocal();
        const metadata = await this.#readMetadata(round.signal);
        this.#setOnline(true);
        if (this.#cursor === null && !this.#shapesOnly) await this.#bootstrap(metadata, round.signal);
        await this.#session.live({
          ...this.#shapeLive(),
          getCursor: () => this.#cursor,
          onChanges: (changes, cursor) => this.#applyRemote(changes, cursor),
          onSynced: (cursor) => {
            attempt = 0;
            this.#emit({ type: 'synced', cursor });
            this.#firstRound?.resolve();
          },
          onMode: (mode) => {
            if (mode === this.#liveMode) return;
            this.#liveMode = mode;
            this.#emit({ type: 'live', mode });
          },
          metadata,
          signal: round.signal,
        });
      } catch (e) {
        if (signal.aborted) break;
        if (round.signal.aborted) continue; // cut short to rebuild local state
        const error = asSyncError(e);
        this.#noteFailure(error);
        if (CURSOR_ERRORS.has(error.code)) {
          this.#emit({ type: 'resync', reason: error.code });
          await this.#requestResync().catch((e) => this.#recordError(e));
        }
        this.#firstRound?.resolve();
        await this.#retryAfter('sync', attempt++, error, signal, this.#network);
      } finally {
        signal.removeEventListener('abort', stop);
      }
    }
  }

  /**
   * Fill local state from snapshots: every model, every page, tombstones and
   * clocks included, joined into the local rows; then keep the cursor of the
   * very first page. Without models to read, pull starts from the log's start.
   * @param {Record<string, any>} metadata
   * @param {AbortSignal} signal
   */
  async #bootstrap(metadata, signal) {
    const models = (metadata.features ?? []).includes('snapshot') ? this.#knownModels() ?? [] : [];
    /** @type {string | null} */
    let first = null;
    for (const model of models) {
      /** @type {string | undefined} */
      let after;
      for (;;) {
        const page = await this.#session.snapshot({ model, after }, signal);
        first ??= page.cursor;
        await this.#storeSnapshot(model, page.rows);
        if (!page.has_more) break;
        after = page.next_after;
      }
    }
    if (first === null) return;
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('cursor', first));
    this.#cursor = first;
  }

  // -- shapes ---------------------------------------------------------------

  /**
   * Hold the rows of the server's shape `name` with `params` beside what the
   * client holds already: they join the one local store, so queries see the
   * union of every shape (and of the models replicated whole). Rows that leave
   * the shape on the server (a field changed, a membership removed) leave local
   * storage unless another subscription holds them; that is not a delete,
   * nothing is pushed. Kept in storage across reloads; subscribing again to the
   * same shape and params does nothing. Resolves once recorded; a `shape` event
   * tells when its rows are in (`synced`) or that the server refused it
   * (`refused`, then the subscription is dropped).
   * @param {string} name
   * @param {Record<string, unknown> | null} [params]
   * @returns {Promise<void>}
   * @throws {SyncError} `SYNC:INVALID_QUERY` for a name that cannot be a shape's, `SYNC:INVALID_SHAPE_PARAMS` when params is not an object
   */
  async subscribeShape(name, params = null) {
    await this.#ready;
    checkShapeRequest(name, params);
    const key = shapeKey(name, params);
    if (this.#shapes.has(key)) return;
    const next = new Map(this.#shapes);
    next.set(key, { key, name, params: params === null ? null : JSON.parse(JSON.stringify(params)), model: null, cursor: null });
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('shapes', storedShapes(next)));
    this.#shapes = next;
    this.#round?.abort(new SyncError('ABORTED', 'shape subscriptions changed'));
  }

  /**
   * Stop holding shape `name` with `params`: its rows leave local storage
   * unless another subscription (or a model replicated whole) holds them.
   * Nothing when not subscribed.
   * @param {string} name
   * @param {Record<string, unknown> | null} [params]
   * @returns {Promise<void>}
   */
  async unsubscribeShape(name, params = null) {
    await this.#ready;
    const key = shapeKey(name, params);
    await this.#dropShape(key);
  }

  /**
   * The shape subscriptions, sorted by key.
   * @returns {Promise<Array<{ name: string, params: Record<string, unknown> | null }>>}
   */
  async shapes() {
    await this.#ready;
    return [...this.#shapes.values()].sort((a, b) => compareText(a.key, b.key)).map(({ name, params }) => ({ name, params }));
  }

  /**
   * Forget a subscription and drop the rows only it held; with `restart`,
   * the live round starts again without it.
   * @param {string} key @param {boolean} [restart]
   */
  async #dropShape(key, restart = true) {
    const sub = this.#shapes.get(key);
    if (!sub) return null;
    const next = new Map(this.#shapes);
    next.delete(key);
    /** @type {RowRecord[]} */
    let dropped = [];
    await this.#storage.transaction('readwrite', async (tx) => {
      if (sub.model !== null) dropped = await releaseShape(tx, key, sub.model, !this.#shapesOnly);
      await tx.setMeta('shapes', storedShapes(next));
    });
    this.#shapes = next;
    if (restart) this.#round?.abort(new SyncError('ABORTED', 'shape subscriptions changed'));
    this.#notifyDropped(dropped);
    return sub;
  }

  /** Rows a shape let go of: queries drop them, other tabs read again. @param {RowRecord[]} dropped */
  #notifyDropped(dropped) {
    if (dropped.length === 0) return;
    this.#notify(dropped, 'tab');
    this.#channel?.postMessage({ type: 'reset' });
  }

  /**
   * What a live round needs to follow the shapes: their subscriptions under
   * ids of this round, and what to do with their answers.
   */
  #shapeLive() {
    /** @type {Map<string, string>} round id -> key */
    const keys = new Map();
    /** Resets under way on the socket: the ids sent since each began. @type {Map<string, Set<string>>} */
    const resets = new Map();
    const shapes = [...this.#shapes.values()].map((sub, n) => {
      const id = `shape-${n}`;
      keys.set(id, sub.key);
      return { id, name: sub.name, params: sub.params, getCursor: () => this.#shapes.get(sub.key)?.cursor ?? null };
    });
    const keyOf = (/** @type {string} */ id) => keys.get(id) ?? '';
    return {
      models: !this.#shapesOnly,
      shapes,
      /** @param {string} id @param {import('./transport.js').ShapeRows} msg @param {'pull' | 'websocket'} via */
      onShapeRows: async (id, msg, via) => {
        const key = keyOf(id);
        if (msg.reset) resets.set(key, new Set());
        const sent = resets.get(key);
        for (const row of msg.rows) if (typeof row?.id === 'string') sent?.add(row.id);
        // Pull pages carry the cursor to go on from; the socket restarts a shape from its rows.
        await this.#applyShapeRows(key, msg.model, msg.rows, msg.retracts, null, via === 'pull' ? msg.cursor : null);
      },
      /** @param {string} id */
      onShapeSynced: async (id) => {
        const key = keyOf(id);
        const sent = resets.get(key);
        resets.delete(key);
        const sub = this.#shapes.get(key);
        if (sent && sub?.model) await this.#applyShapeRows(key, sub.model, [], [], sent, null);
        if (sub) this.#emit({ type: 'shape', name: sub.name, params: sub.params, status: 'synced', error: null });
      },
      /** @param {string} id @param {SyncError} error */
      onShapeRefused: async (id, error) => {
        const key = keyOf(id);
        const sub = this.#shapes.get(key);
        if (!sub) return;
        // The round goes on without it (the socket keeps its other subscriptions).
        await this.#dropShape(key, false);
        this.#emit({ type: 'shape', name: sub.name, params: sub.params, status: 'refused', error });
      },
      /** @param {string} id @param {AbortSignal} signal */
      bootstrapShape: async (id, signal) => {
        const key = keyOf(id);
        const sub = this.#shapes.get(key);
        if (!sub) return;
        /** @type {any[]} */
        const rows = [];
        /** @type {string | null} */
        let first = null;
        let model = '';
        /** @type {string | undefined} */
        let after;
        for (;;) {
          const page = await this.#session.snapshotShape({ shape: sub.name, params: sub.params, after }, signal);
          first ??= page.cursor;
          model = page.model;
          rows.push(...page.rows);
          if (!page.has_more) break;
          after = page.next_after;
        }
        await this.#applyShapeRows(key, model, rows, [], new Set(rows.map((r) => r.id)), first);
      },
    };
  }

  /**
   * Join a shape answer's rows and hold them, release its retractions, and
   * with `replace` (a reset's end) release every held row not among them;
   * with `cursor`, the shape's pulls go on from there.
   * @param {string} key @param {string} model @param {any[]} rows @param {string[]} retracts
   * @param {Set<string> | null} replace @param {string | null} cursor
   */
  async #applyShapeRows(key, model, rows, retracts, replace, cursor) {
    const sub = this.#shapes.get(key);
    if (!sub) return;
    const next = { ...sub, model, cursor: cursor ?? sub.cursor };
    const metaChanged = sub.model !== model || next.cursor !== sub.cursor;
    /** @type {import('./shapes.js').ShapeOutcome} */
    let outcome = { written: [], dropped: [], skipped: [] };
    await this.#storage.transaction('readwrite', async (tx) => {
      outcome = await applyShapeAnswer(tx, { key, model, rows, retracts, replace, whole: !this.#shapesOnly, observe: (c) => this.#clock.observe(c) });
      if (rows.length) await tx.setMeta('clock', this.#clock.last);
      if (metaChanged) await tx.setMeta('shapes', storedShapes(new Map(this.#shapes).set(key, next)));
    });
    if (this.#shapes.has(key)) this.#shapes.set(key, next);
    this.#noteSuccess();
    outcome.skipped.forEach((e) => this.#recordError(e));
    this.#notify(outcome.written, 'remote');
    this.#notifyDropped(outcome.dropped);
  }

  /** @param {string} model @param {any[]} rows */
  async #storeSnapshot(model, rows) {
    /** @type {RowRecord[]} */
    const touched = [];
    /** @type {SyncError[]} */
    const skipped = [];
    await this.#storage.transaction('readwrite', async (tx) => {
      for (const row of rows) {
        const state = typeof row?.id === 'string' ? rowStateFromParts(row.value, row.clocks) : null;
        if (!state) {
          skipped.push(new SyncError('BAD_RESPONSE', `snapshot ${model}: row ${JSON.stringify(row?.id)} has value and clocks that do not fit`));
          continue;
        }
        for (const s of [state.clocks.t, state.clocks.i, ...Object.values(state.clocks.f)]) if (s) this.#clock.observe(s[0]);
        const record = (await tx.getRow(model, row.id)) ?? newRecord(model, row.id);
        if (mergeRowStates(record, state)) {
          record.deleted = !isRowLive(record);
          await tx.putRow(record);
          touched.push(record);
        }
      }
      await tx.setMeta('clock', this.#clock.last);
    });
    skipped.forEach((e) => this.#recordError(e));
    this.#notify(touched, 'remote');
  }

  /**
   * Fold a page of pulled changes into the rows and store its cursor, in one
   * transaction. Own changes coming back change nothing (the join is idempotent).
   * @param {any[]} changes
   * @param {string} cursor
   */
  async #applyRemote(changes, cursor) {
    this.#noteSuccess();
    if (changes.length === 0 && cursor === this.#cursor) return;
    /** @type {Map<string, RowRecord>} */
    const touched = new Map();
    /** @type {SyncError[]} */
    const skipped = [];
    await this.#storage.transaction('readwrite', async (tx) => {
      /** @type {Map<string, RowRecord>} */
      const rows = new Map();
      for (const c of changes) {
        let stamp;
        try {
          if (typeof c.model !== 'string' || typeof c.pk !== 'string') throw new SyncError('BAD_RESPONSE', 'no model or pk');
          stamp = requireStamp([c.updated_at, c.actor, c.op_id]);
          this.#clock.observe(stamp[0]);
        } catch (e) {
          skipped.push(new SyncError('BAD_RESPONSE', `pulled change ${JSON.stringify(c?.op_id)} skipped: ${asSyncError(e).message}`));
          continue;
        }
        const key = JSON.stringify([c.model, c.pk]);
        let record = rows.get(key);
        if (!record) {
          record = (await tx.getRow(c.model, c.pk)) ?? newRecord(c.model, c.pk);
          rows.set(key, record);
        }
        try {
          if (applyRowChange(record, c.op, c.payload, stamp)) touched.set(key, record);
        } catch (e) {
          skipped.push(asSyncError(e));
        }
      }
      for (const record of touched.values()) {
        record.deleted = !isRowLive(record);
        await tx.putRow(record);
      }
      await tx.setMeta('cursor', cursor);
      if (changes.length) await tx.setMeta('clock', this.#clock.last);
    });
    this.#cursor = cursor;
    skipped.forEach((e) => this.#recordError(e));
    this.#notify(touched.values(), 'remote');
  }

  /** Mark local state for rebuilding and cut the live round short. */
  async #requestResync() {
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('resync', true));
    this.#needsResync = true;
    this.#round?.abort(new SyncError('ABORTED', 'rebuilding local state'));
  }

  /**
   * Rebuild local state: drop every row and the cursor, fold the changes
   * still in the outbox back in; the next round bootstraps again and joins
   * the server's state in. Used after a cursor error and after a change was
   * rejected (its optimistic effect then disappears).
   */
  async #resetLocal() {
    await this.#storage.transaction('readwrite', async (tx) => {
      await tx.clearRows();
      /** @type {Map<string, RowRecord>} */
      const rows = new Map();
      for (const { change: c } of await tx.readOutbox()) {
        const key = JSON.stringify([c.model, c.pk]);
        const record = rows.get(key) ?? newRecord(c.model, c.pk);
        rows.set(key, record);
        applyRowChange(record, c.op, c.payload, [c.updated_at, c.actor, c.op_id]);
      }
      for (const record of rows.values()) {
        record.deleted = !isRowLive(record);
        await tx.putRow(record);
      }
      await tx.setMeta('cursor', null);
      await tx.setMeta('resync', false);
      // The shapes bootstrap again too: their rows went with the others.
      for (const sub of this.#shapes.values()) sub.cursor = null;
      await tx.setMeta('shapes', storedShapes(this.#shapes));
    });
    this.#cursor = null;
    this.#needsResync = false;
    this.#reloadQueries(true);
  }

  // -- push -----------------------------------------------------------------

  #ensurePusher() {
    if (this.#pushTask) return;
    const abort = new AbortController();
    this.#pushAbort = abort;
    this.#pushTask = this.#pushLoop(abort.signal).finally(() => {
      this.#pushTask = null;
      this.#pushAbort = null;
      // connect() or drain() called while the loop was exiting.
      if ((this.#connection || this.#drains.size) && !abort.signal.aborted) this.#ensurePusher();
    });
  }

  /** The oldest outbox entries that fit one push. */
  async #nextBatch() {
    const limits = this.#metadata?.limits ?? {};
    const maxCount = Math.min(DEFAULT_MAX_BATCH, limits.maxBatch ?? DEFAULT_MAX_BATCH, this.#batchLimit);
    const maxBytes = Math.min(DEFAULT_MAX_BATCH_BYTES, (limits.maxBodyBytes ?? 1_048_576) - 1024);
    const entries = await this.#storage.transaction('readonly', (tx) => tx.readOutbox(maxCount));
    let bytes = 0;
    let n = 0;
    while (n < entries.length && (n === 0 || bytes + entries[n].bytes + 1 <= maxBytes)) bytes += entries[n++].bytes + 1;
    return entries.slice(0, n);
  }

  /**
   * Push the outbox in batches until it is empty, then wait for new changes
   * (while connected). Network and server failures keep the outbox and retry
   * with backoff; a change the server refuses is quarantined (see #reject).
   * @param {AbortSignal} signal
   */
  async #pushLoop(signal) {
    let attempt = 0;
    while (!signal.aborted) {
      let batch;
      try {
        batch = await this.#nextBatch();
      } catch (e) {
        this.#recordError(e);
        await sleep(backoffDelay(attempt++), signal);
        continue;
      }
      if (batch.length === 0) {
        for (const d of this.#drains) d.resolve();
        this.#drains.clear();
        if (!this.#connection) return;
        await sleep(60_000, signal, this.#work);
        continue;
      }
      this.#inFlight = batch.length;
      try {
        await this.#readMetadata(signal);
        await this.#session.push({ client_id: this.#actor, changes: batch.map((e) => e.change) }, signal);
        await this.#storage.transaction('readwrite', (tx) => tx.deleteOutbox(batch.map((e) => e.key)));
        this.#noteSuccess();
        this.#batchLimit = DEFAULT_MAX_BATCH;
        attempt = 0;
        await this.#announceOutbox().catch((e) => this.#recordError(e));
      } catch (e) {
        if (signal.aborted) return;
        const error = asSyncError(e);
        this.#noteFailure(error);
        const verdict = pushVerdict(error, batch.length);
        if (verdict.action === 'reject') {
          await this.#reject(batch[verdict.index], error).catch(async (e) => {
            this.#recordError(e);
            await sleep(backoffDelay(attempt++), signal);
          });
        } else if (verdict.action === 'split') {
          this.#batchLimit = Math.ceil(batch.length / 2);
        } else {
          await this.#retryAfter('push', attempt++, error, signal, this.#network);
        }
      } finally {
        this.#inFlight = 0;
      }
    }
  }

  /**
   * Quarantine a change the server refused for its content: take it out of
   * the outbox (so it cannot block the queue), keep it with the error in
   * meta `rejected` (the last 100), emit `rejected`, and rebuild local state
   * so that its optimistic effect disappears.
   * @param {OutboxEntry & { key: number }} entry
   * @param {SyncError} error
   */
  async #reject(entry, error) {
    /** @type {RejectedChange} */
    const rejected = {
      change: entry.change,
      error: { code: error.code, message: error.message, status: error.status, meta: error.meta },
      at: Date.now(),
    };
    await this.#storage.transaction('readwrite', async (tx) => {
      await tx.deleteOutbox([entry.key]);
      const list = (await tx.getMeta('rejected')) ?? [];
      await tx.setMeta('rejected', [...list, rejected].slice(-MAX_REJECTED_KEPT));
      await tx.setMeta('resync', true);
    });
    this.#needsResync = true;
    this.#round?.abort(new SyncError('ABORTED', 'rebuilding local state'));
    this.#emit({ type: 'rejected', change: entry.change, error });
  }

  /**
   * Resolves when every queued change has been pushed and acknowledged
   * (pushing now, even when not connected). Rejects with `ABORTED` on
   * `disconnect()`. While the server is unreachable it keeps waiting.
   * @returns {Promise<void>}
   */
  async drain() {
    await this.#ready;
    const promise = new Promise((resolve, reject) => this.#drains.add({ resolve: () => resolve(undefined), reject }));
    this.#ensurePusher();
    wakeAll(this.#work);
    return promise;
  }

  /**
   * Outbox and connection statistics.
   * @returns {Promise<QueueStats>}
   */
  async getQueueStats() {
    await this.#ready;
    const [queued, rejected] = await this.#storage.transaction('readonly', async (tx) => [
      await tx.countOutbox(),
      ((await tx.getMeta('rejected')) ?? []).length,
    ]);
    return {
      queued,
      inFlight: this.#inFlight,
      lastError: this.#lastError,
      online: this.#online,
      authFailed: this.#authFailed,
      versionUnsupported: this.#versionUnsupported,
      retrying: this.#retrying,
      cursor: this.#cursor,
      rejected,
      live: this.#connection ? this.#liveMode : null,
    };
  }

  /**
   * Changes the server refused for good (oldest first, at most the last 100).
   * @returns {Promise<RejectedChange[]>}
   */
  async getRejected() {
    await this.#ready;
    return (await this.#storage.transaction('readonly', (tx) => tx.getMeta('rejected'))) ?? [];
  }

  /**
   * Forget the rejected changes.
   * @returns {Promise<void>}
   */
  async clearRejected() {
    await this.#ready;
    await this.#storage.transaction('readwrite', (tx) => tx.setMeta('rejected', []));
  }
}

/** The subscriptions as stored in meta `shapes`. @param {Map<string, import('./shapes.js').ShapeSub>} shapes */
function storedShapes(shapes) {
  return [...shapes.values()].map(({ name, params, model, cursor }) => ({ name, params, model, cursor }));
}

/**
 * The `versions` option as announced: `todo=2,list=1`; `undefined` for none.
 * @param {unknown} versions
 * @returns {string | undefined}
 */
function versionsText(versions) {
  if (versions === undefined || versions === null) return undefined;
  if (typeof versions !== 'object' || Array.isArray(versions)) {
    throw new TypeError('createSyncClient: `versions` must be an object of model name -> version');
  }
  const items = Object.entries(versions).map(([model, v]) => {
    if (!MODEL_NAME.test(model) || !Number.isInteger(v) || /** @type {number} */ (v) < 1) {
      throw new TypeError(`createSyncClient: versions.${model} must be a model name with an integer version of 1 or more`);
    }
    return `${model}=${v}`;
  });
  return items.length ? items.join(',') : undefined;
}

/** @param {unknown} actor */
function checkActor(actor) {
  if (typeof actor !== 'string' || actor.length === 0 || utf8Length(actor) > 255 || CONTROL.test(actor)) {
    throw new TypeError('createSyncClient: `actor` must be a string of 1 to 255 bytes without control characters');
  }
}

/**
 * Create a sync client.
 * @param {SyncClientOptions} options
 * @returns {SyncClient}
 */
export function createSyncClient(options) {
  return new SyncClient(options);
}
