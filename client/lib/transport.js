/**
 * Transports: HTTP with long-poll (`rpc`) and WebSocket (`ws`).
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/transport
 */

import { isObject } from './conflict.js';
import { SyncError, asSyncError } from './errors.js';
import { SHAPE_REFUSALS } from './shapes.js';
import { abortReason, backoffDelay, sleep } from './util.js';

/** @typedef {import('./storage.js').Change} Change */
/**
 * What a transport needs from the client.
 * @typedef {object} TransportContext
 * @property {string} baseUrl the client's base URL (used when the transport has none)
 * @property {string} basePath the sync base path, e.g. `/api/sync`
 * @property {() => Promise<Record<string, string>>} headers the auth headers of a request
 * @property {() => Promise<boolean>} [refresh] renew the credentials after a 401 (whether the app has a hook)
 * @property {string} [versions] the model versions the app was built for, as announced (`todo=2,list=1`)
 */

/**
 * Options of a live session: deliver changes from the cursor until `signal` aborts.
 * @typedef {object} LiveOptions
 * @property {() => string | null} getCursor the client's current cursor
 * @property {(changes: any[], cursor: string) => Promise<void>} onChanges store a page of changes and its cursor
 * @property {(cursor: string) => void} onSynced caught up with the server
 * @property {(mode: 'websocket' | 'long-poll') => void} onMode how changes arrive now
 * @property {Record<string, any>} metadata the server's `sync.json`
 * @property {AbortSignal} signal
 * @property {number} [until] stop (resolve) at this time, in ms since the epoch
 * @property {boolean} [models] follow whole models (default true; false when the client holds shapes only)
 * @property {ShapeLive[]} [shapes] shape subscriptions to follow beside them
 * @property {(id: string, msg: ShapeRows, via: 'pull' | 'websocket') => Promise<void>} [onShapeRows] store a shape's rows and retractions
 * @property {(id: string, cursor: string) => Promise<void>} [onShapeSynced] a shape caught up (over the socket: its reset is complete)
 * @property {(id: string, error: SyncError) => Promise<void>} [onShapeRefused] the server refused a shape subscription for good
 * @property {(id: string, signal: AbortSignal) => Promise<void>} [bootstrapShape] read a shape's snapshot (HTTP: no cursor yet, or `reset`)
 */

/**
 * A shape subscription a live session follows.
 * @typedef {{ id: string, name: string, params: Record<string, unknown> | null, getCursor: () => string | null }} ShapeLive
 */

/**
 * A shape's rows message (WebSocket) or pull page (HTTP).
 * @typedef {{ model: string, rows: any[], retracts: string[], reset?: boolean, cursor: string }} ShapeRows
 */

/**
 * Call `onSynced` once every source of a live session caught up once.
 * @param {LiveOptions} opts
 * @param {number} sources
 * @returns {(cursor: string) => void} marks one source caught up
 */
function syncedWhenAll(opts, sources) {
  let left = sources;
  let last = opts.getCursor() ?? '';
  if (left === 0) opts.onSynced(last);
  return (cursor) => {
    last = cursor || last;
    if (--left === 0) opts.onSynced(last);
  };
}

/**
 * A transport: how the client talks to the server.
 * @typedef {{ name: string, open: (ctx: TransportContext) => HttpSession }} Transport
 */

/** @param {string} baseUrl @param {string} basePath */
function rootUrl(baseUrl, basePath) {
  return baseUrl.replace(/\/+$/, '') + basePath;
}

/** HTTP requests of the protocol, and live changes by long-poll. */
class HttpSession {
  #fetch;
  #longPollSecs;

  /**
   * @param {string} root URL of the base path
   * @param {TransportContext} ctx
   * @param {typeof fetch} fetchImpl
   * @param {number} longPollSecs `wait` of a long-poll
   */
  constructor(root, ctx, fetchImpl, longPollSecs) {
    this.root = root;
    this.ctx = ctx;
    this.#fetch = fetchImpl;
    this.#longPollSecs = longPollSecs;
  }

  /**
   * One JSON request under the base path.
   * @param {'GET' | 'POST'} method
   * @param {string} route e.g. `/pull`
   * @param {{ query?: Record<string, string | number | undefined | null>, body?: unknown, signal?: AbortSignal, auth?: boolean, timeoutMs?: number }} [init]
   * @returns {Promise<any>}
   */
  async request(method, route, init = {}) {
    try {
      return await this.#requestOnce(method, route, init);
    } catch (e) {
      // A refused token: renew it (the app's `auth.refresh`) and try once more.
      if (!(e instanceof SyncError) || e.status !== 401 || init.auth === false || !this.ctx.refresh) throw e;
      if (!(await this.ctx.refresh())) throw e;
      return this.#requestOnce(method, route, init);
    }
  }

  /**
   * @param {'GET' | 'POST'} method @param {string} route
   * @param {{ query?: Record<string, string | number | undefined | null>, body?: unknown, signal?: AbortSignal, auth?: boolean, timeoutMs?: number }} [init]
   * @returns {Promise<any>}
   */
  async #requestOnce(method, route, { query = {}, body, signal, auth = true, timeoutMs = 30_000 } = {}) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
    const qs = params.toString();
    const url = this.root + route + (qs ? `?${qs}` : '');
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json', ...(auth ? await this.ctx.headers() : {}) };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.ctx.versions) headers['x-sync-versions'] = this.ctx.versions;
    const timeout = new AbortController();
    const onAbort = () => timeout.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => timeout.abort(new SyncError('NETWORK', `${method} ${route} timed out after ${timeoutMs} ms`)), timeoutMs);
    let res;
    let text;
    try {
      if (signal?.aborted) throw abortReason(signal);
      res = await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: timeout.signal,
      });
      text = await res.text();
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal);
      if (timeout.signal.aborted) throw timeout.signal.reason;
      throw new SyncError('NETWORK', `${method} ${route}: ${e instanceof Error ? e.message : e}`, { cause: e });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
    if (!res.ok) {
      const err = isObject(data) && isObject(data.error) ? data.error : {};
      const meta = isObject(data) && isObject(data.meta) ? data.meta : null;
      const retryAfter = Number(res.headers.get('retry-after'));
      throw new SyncError(
        typeof err.code === 'string' ? err.code : `HTTP_${res.status}`,
        typeof err.message === 'string' ? err.message : `${method} ${route} answered ${res.status}`,
        {
          status: res.status,
          meta,
          retryAfterMs: typeof meta?.retryAfterMs === 'number' ? meta.retryAfterMs : retryAfter > 0 ? retryAfter * 1000 : null,
        },
      );
    }
    if (!isObject(data)) throw new SyncError('BAD_RESPONSE', `${method} ${route}: the answer is not a JSON object`, { status: res.status });
    return data;
  }

  /** `GET B/sync.json`. @param {AbortSignal} [signal] */
  metadata(signal) {
    return this.request('GET', '/sync.json', { signal, auth: false });
  }

  /** `POST B/push`. @param {{ client_id: string, changes: Change[] }} body @param {AbortSignal} [signal] */
  async push(body, signal) {
    const res = await this.request('POST', '/push', { body, signal, timeoutMs: 60_000 });
    if (!Array.isArray(res.results)) throw new SyncError('BAD_RESPONSE', 'push: no results in the answer');
    return res;
  }

  /**
   * `GET B/snapshot`: one page of a model's rows.
   * @param {{ model: string, after?: string, limit?: number }} query
   * @param {AbortSignal} [signal]
   */
  async snapshot(query, signal) {
    const res = await this.request('GET', '/snapshot', { query, signal });
    if (!Array.isArray(res.rows) || typeof res.cursor !== 'string' || (res.has_more && typeof res.next_after !== 'string')) {
      throw new SyncError('BAD_RESPONSE', 'snapshot: the answer lacks rows, cursor or next_after');
    }
    return res;
  }

  /**
   * `GET B/pull`, a long-poll when `wait` > 0.
   * @param {{ cursor?: string | null, wait?: number, limit?: number }} query
   * @param {AbortSignal} [signal]
   */
  async pull({ cursor, wait = 0, limit }, signal) {
    const res = await this.request('GET', '/pull', {
      query: { cursor, limit, wait: wait > 0 ? wait : undefined },
      signal,
      timeoutMs: 30_000 + wait * 1000,
    });
    if (!Array.isArray(res.changes) || typeof res.cursor !== 'string' || typeof res.has_more !== 'boolean') {
      throw new SyncError('BAD_RESPONSE', 'pull: the answer lacks changes, cursor or has_more');
    }
    return res;
  }

  /**
   * `GET B/snapshot?shape=`: one page of a shape's rows (PROTOCOL.md 16.2).
   * @param {{ shape: string, params: Record<string, unknown> | null, after?: string, limit?: number }} query
   * @param {AbortSignal} [signal]
   */
  async snapshotShape({ shape, params, after, limit }, signal) {
    const query = { shape, params: params === null ? undefined : JSON.stringify(params), after, limit };
    const res = await this.request('GET', '/snapshot', { query, signal });
    if (!Array.isArray(res.rows) || typeof res.cursor !== 'string' || typeof res.model !== 'string' || (res.has_more && typeof res.next_after !== 'string')) {
      throw new SyncError('BAD_RESPONSE', 'shape snapshot: the answer lacks model, rows, cursor or next_after');
    }
    return res;
  }

  /**
   * `GET B/pull?shape=`: what changed in a shape after `cursor` (PROTOCOL.md 16.5).
   * @param {{ shape: string, params: Record<string, unknown> | null, cursor: string, wait?: number }} query
   * @param {AbortSignal} [signal]
   * @returns {Promise<ShapeRows & { has_more: boolean, reset: boolean }>}
   */
  async pullShape({ shape, params, cursor, wait = 0 }, signal) {
    const query = { shape, params: params === null ? undefined : JSON.stringify(params), cursor, wait: wait > 0 ? wait : undefined };
    const res = await this.request('GET', '/pull', { query, signal, timeoutMs: 30_000 + wait * 1000 });
    if (!Array.isArray(res.rows) || !Array.isArray(res.retracts) || typeof res.cursor !== 'string' || typeof res.model !== 'string' || typeof res.has_more !== 'boolean') {
      throw new SyncError('BAD_RESPONSE', 'shape pull: the answer lacks model, rows, retracts, cursor or has_more');
    }
    return res;
  }

  /**
   * Deliver changes by pull until `signal` aborts (or `until`): whole
   * models and every shape side by side, each at once while pages follow,
   * then by long-poll. Rejects on the first failed request.
   * @param {LiveOptions} opts
   * @returns {Promise<void>}
   */
  async live(opts) {
    const shapes = opts.shapes ?? [];
    const models = opts.models !== false;
    opts.onMode('long-poll');
    const synced = syncedWhenAll(opts, (models ? 1 : 0) + shapes.length);
    // One failure ends every poll of the round.
    const round = new AbortController();
    const stop = () => round.abort(opts.signal.reason);
    opts.signal.addEventListener('abort', stop, { once: true });
    const sub = { ...opts, signal: round.signal };
    /** @param {Promise<void>} task */
    const guard = (task) =>
      task.catch((e) => {
        round.abort(e);
        throw e;
      });
    try {
      const tasks = [...(models ? [this.#pollModels(sub, synced)] : []), ...shapes.map((s) => this.#pollShape(sub, s, synced))].map(guard);
      if (tasks.length === 0) {
        // Nothing to follow (shapes only, none yet): idle until the round ends.
        const left = opts.until === undefined ? 3_600_000 : Math.max(0, opts.until - Date.now());
        await sleep(left, round.signal).catch(() => {});
        return;
      }
      await Promise.all(tasks);
    } finally {
      opts.signal.removeEventListener('abort', stop);
    }
  }

  /** Seconds left of the session, and the `wait` of a long-poll then. @param {LiveOptions} opts @param {boolean} synced */
  #wait(opts, synced) {
    const left = opts.until === undefined ? Infinity : (opts.until - Date.now()) / 1000;
    const longPoll = (opts.metadata.features ?? []).includes('long-poll');
    return { left, longPoll, wait: synced && longPoll ? Math.min(this.#longPollSecs, Math.max(0.1, Math.round(left * 10) / 10)) : 0 };
  }

  /** Whole models by pull. @param {LiveOptions} opts @param {(cursor: string) => void} markSynced */
  async #pollModels(opts, markSynced) {
    const { signal } = opts;
    let synced = false;
    while (!signal.aborted) {
      const { left, longPoll, wait } = this.#wait(opts, synced);
      if (left <= 0) return;
      const page = await this.pull({ cursor: opts.getCursor(), wait }, signal);
      await opts.onChanges(page.changes, page.cursor);
      if (!page.has_more && !synced) {
        synced = true;
        markSynced(page.cursor);
      }
      // A server without long-poll is polled every few seconds.
      if (synced && !longPoll && !page.has_more) await sleep(Math.min(5000, left * 1000), signal);
    }
  }

  /**
   * One shape by shape pulls from its cursor; its snapshot first when it
   * has none, and again when a page answers `reset`.
   * @param {LiveOptions} opts @param {ShapeLive} shape @param {(cursor: string) => void} markSynced
   */
  async #pollShape(opts, shape, markSynced) {
    const { signal } = opts;
    let synced = false;
    const caughtUp = async (/** @type {string} */ cursor) => {
      if (synced) return;
      synced = true;
      await opts.onShapeSynced?.(shape.id, cursor);
      markSynced(cursor);
    };
    while (!signal.aborted) {
      const { left, longPoll, wait } = this.#wait(opts, synced);
      if (left <= 0) return;
      try {
        const cursor = shape.getCursor();
        if (cursor === null) {
          await opts.bootstrapShape?.(shape.id, signal);
          continue;
        }
        const page = await this.pullShape({ shape: shape.name, params: shape.params, cursor, wait }, signal);
        if (page.reset) {
          await opts.bootstrapShape?.(shape.id, signal);
          continue;
        }
        await opts.onShapeRows?.(shape.id, page, 'pull');
        if (!page.has_more) await caughtUp(page.cursor);
        if (synced && !longPoll && !page.has_more) await sleep(Math.min(5000, left * 1000), signal);
      } catch (e) {
        if (!(e instanceof SyncError) || !SHAPE_REFUSALS.has(e.code)) throw e;
        await opts.onShapeRefused?.(shape.id, e);
        if (!synced) markSynced('');
        return;
      }
    }
  }
}

/** Live changes over `B/ws`, falling back to long-poll when the socket fails. */
class SocketSession extends HttpSession {
  #WebSocket;
  #failures = 0;
  /** The server has no `ws/ticket` route: the token goes in the URL. */
  #noTickets = false;

  /**
   * @param {string} root
   * @param {TransportContext} ctx
   * @param {typeof fetch} fetchImpl
   * @param {number} longPollSecs
   * @param {typeof WebSocket | undefined} WebSocketImpl
   */
  constructor(root, ctx, fetchImpl, longPollSecs, WebSocketImpl) {
    super(root, ctx, fetchImpl, longPollSecs);
    this.#WebSocket = WebSocketImpl;
  }

  /**
   * Live changes over the socket while it works; after a failure, long-poll
   * for a backoff delay (1 s doubling to 30 s while the socket keeps failing)
   * and try the socket again. Server errors sent on the socket (e.g. a bad
   * cursor) reject, like failed requests.
   * @param {LiveOptions} opts
   */
  async live(opts) {
    const features = opts.metadata.features ?? [];
    const shapesOverSocket = !(opts.shapes ?? []).length || features.includes('shape-subscribe');
    if (typeof this.#WebSocket !== 'function' || !features.includes('websocket') || !shapesOverSocket) {
      return super.live(opts);
    }
    while (!opts.signal.aborted) {
      const outcome = await this.#runSocket(opts);
      if (opts.signal.aborted) return;
      if (outcome.error && outcome.error.code !== 'NETWORK') throw outcome.error;
      this.#failures = outcome.synced ? 0 : this.#failures + 1;
      await super.live({ ...opts, until: Date.now() + backoffDelay(this.#failures, 1000, 30_000) });
    }
  }

  /**
   * The socket URL. Browsers cannot set WebSocket headers: a single-use
   * ticket (`POST B/ws/ticket`) stands for the credentials, so the token
   * never appears in the URL (nor in logs or console errors); a server
   * without tickets gets the token as `access_token`.
   */
  async #url() {
    const url = new URL(`${this.root}/ws`, globalThis.location?.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers cannot set WebSocket headers: the versions go in the URL.
    if (this.ctx.versions) url.searchParams.set('versions', this.ctx.versions);
    if (!this.#noTickets) {
      try {
        const { ticket } = await this.request('POST', '/ws/ticket');
        if (typeof ticket === 'string') {
          url.searchParams.set('ticket', ticket);
          return url.href;
        }
      } catch (e) {
        // An older server: no such route. Anything else (401, offline) is
        // this round's failure.
        if (!(e instanceof SyncError) || (e.status !== 404 && e.status !== 405)) throw e;
        this.#noTickets = true;
      }
    }
    const headers = await this.ctx.headers();
    const auth = Object.entries(headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
    const token = /^bearer\s+(.+)$/i.exec(auth ?? '')?.[1];
    if (token) url.searchParams.set('access_token', token.trim());
    return url.href;
  }

  /**
   * One socket session: subscribe from the cursor, store every `changes`
   * frame in order, ping every heartbeat, and resolve when it ends.
   * @param {LiveOptions} opts
   * @returns {Promise<{ synced: boolean, error: SyncError | null }>}
   */
  async #runSocket(opts) {
    const heartbeatMs = Math.max(1000, (Number(opts.metadata.heartbeatSecs) || 30) * 1000);
    let url;
    try {
      url = await this.#url();
    } catch (e) {
      return { synced: false, error: asSyncError(e) };
    }
    if (opts.signal.aborted) return { synced: false, error: null };
    const Socket = /** @type {typeof WebSocket} */ (this.#WebSocket);
    /** Shape subscriptions by id. */
    const shapes = new Map((opts.shapes ?? []).map((s) => [s.id, s]));
    return new Promise((resolve) => {
      let synced = false;
      /** @type {(cursor: string) => void} */
      let markSynced = () => {};
      let finished = false;
      let lastSeen = Date.now();
      /** @type {Promise<void>} */
      let chain = Promise.resolve();
      /** @type {WebSocket} */
      let socket;
      /** @type {ReturnType<typeof setInterval> | undefined} */
      let heartbeat;
      /** @param {SyncError | null} error */
      const finish = (error) => {
        if (finished) return;
        finished = true;
        clearInterval(heartbeat);
        opts.signal.removeEventListener('abort', onAbort);
        if (socket) {
          socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
          try {
            socket.close(1000);
          } catch {
            // already closed
          }
        }
        // Frames already received are stored before the session ends.
        chain.then(() => resolve({ synced, error }), (e) => resolve({ synced, error: asSyncError(e) }));
      };
      const onAbort = () => finish(null);
      /** @param {() => Promise<void> | void} step */
      const enqueue = (step) => {
        chain = chain.then(step);
        chain.catch((e) => finish(asSyncError(e)));
      };
      opts.signal.addEventListener('abort', onAbort, { once: true });
      try {
        socket = new Socket(url);
      } catch (e) {
        finish(new SyncError('NETWORK', `WebSocket: ${e instanceof Error ? e.message : e}`, { cause: e }));
        return;
      }
      socket.onopen = () => {
        const cursor = opts.getCursor();
        if (opts.models !== false) socket.send(JSON.stringify(cursor === null ? { type: 'subscribe' } : { type: 'subscribe', cursor }));
        for (const shape of shapes.values()) {
          socket.send(JSON.stringify(shape.params === null ? { type: 'subscribe', id: shape.id, shape: shape.name } : { type: 'subscribe', id: shape.id, shape: shape.name, params: shape.params }));
        }
        opts.onMode('websocket');
        markSynced = syncedWhenAll(opts, (opts.models !== false ? 1 : 0) + shapes.size);
        heartbeat = setInterval(() => {
          if (Date.now() - lastSeen > 2 * heartbeatMs + 5000) finish(new SyncError('NETWORK', 'WebSocket heartbeat timed out'));
          else socket.send('{"type":"ping"}');
        }, heartbeatMs);
      };
      socket.onmessage = (event) => {
        lastSeen = Date.now();
        let msg;
        try {
          msg = JSON.parse(String(event.data));
        } catch {
          finish(new SyncError('BAD_RESPONSE', 'WebSocket: a frame is not JSON'));
          return;
        }
        const shape = typeof msg.id === 'string' ? shapes.get(msg.id) : undefined;
        if (msg.type === 'changes' && Array.isArray(msg.changes) && typeof msg.cursor === 'string') {
          enqueue(() => opts.onChanges(msg.changes, msg.cursor));
        } else if (msg.type === 'rows' && shape && typeof msg.model === 'string' && Array.isArray(msg.rows ?? []) && Array.isArray(msg.retracts ?? [])) {
          enqueue(() => opts.onShapeRows?.(shape.id, { model: msg.model, rows: msg.rows ?? [], retracts: msg.retracts ?? [], reset: msg.reset === true, cursor: String(msg.cursor ?? '') }, 'websocket'));
        } else if (msg.type === 'synced' && shape && typeof msg.cursor === 'string') {
          enqueue(async () => {
            await opts.onShapeSynced?.(shape.id, msg.cursor);
            synced = true;
            markSynced(msg.cursor);
          });
        } else if (msg.type === 'synced' && typeof msg.cursor === 'string') {
          enqueue(async () => {
            await opts.onChanges([], msg.cursor);
            synced = true;
            markSynced(msg.cursor);
          });
        } else if (msg.type === 'error' && shape && SHAPE_REFUSALS.has(String(msg.error?.code))) {
          // One subscription refused: the connection and the others go on.
          const error = new SyncError(String(msg.error.code), String(msg.error.message ?? 'shape refused'), { status: 422, meta: isObject(msg.meta) ? msg.meta : null });
          shapes.delete(shape.id);
          enqueue(async () => {
            await opts.onShapeRefused?.(shape.id, error);
            markSynced('');
          });
        } else if (msg.type === 'error') {
          const err = isObject(msg.error) ? msg.error : {};
          const code = String(err.code ?? 'BAD_RESPONSE');
          // An expired token ends the session like a 401 ends a request.
          const status = code === 'SYNC:UNAUTHORIZED' ? 401 : 0;
          finish(new SyncError(code, String(err.message ?? 'WebSocket error'), { status, meta: isObject(msg.meta) ? msg.meta : null }));
        }
      };
      socket.onerror = () => finish(new SyncError('NETWORK', 'WebSocket failed'));
      socket.onclose = (event) => finish(new SyncError('NETWORK', `WebSocket closed (${event.code})`));
    });
  }
}

/**
 * HTTP transport: push, snapshot and pull over `fetch`, live changes by
 * long-poll (`GET B/pull?wait=S`).
 * @param {{ baseUrl?: string, fetch?: typeof fetch, longPollSecs?: number }} [options]
 *   `baseUrl` defaults to the client's; `longPollSecs` (default 25) is the `wait` of each long-poll
 * @returns {Transport}
 */
export function rpc({ baseUrl, fetch: fetchImpl, longPollSecs = 25 } = {}) {
  return {
    name: 'rpc',
    open: (ctx) => new HttpSession(rootUrl(baseUrl ?? ctx.baseUrl, ctx.basePath), ctx, fetchImpl ?? globalThis.fetch.bind(globalThis), longPollSecs),
  };
}

/**
 * WebSocket transport: HTTP for push and snapshot, live changes over
 * `B/ws` (token in the `access_token` query parameter), falling back to
 * long-poll while the socket fails or when the server does not list the
 * `websocket` feature.
 * @param {{ baseUrl?: string, fetch?: typeof fetch, WebSocket?: typeof WebSocket, longPollSecs?: number }} [options]
 * @returns {Transport}
 */
export function ws({ baseUrl, fetch: fetchImpl, WebSocket: WebSocketImpl = globalThis.WebSocket, longPollSecs = 25 } = {}) {
  return {
    name: 'ws',
    open: (ctx) =>
      new SocketSession(rootUrl(baseUrl ?? ctx.baseUrl, ctx.basePath), ctx, fetchImpl ?? globalThis.fetch.bind(globalThis), longPollSecs, WebSocketImpl),
  };
}
