// An in-process stand-in for the sync server, reached through a `fetch`
// function: enough of the protocol (sync.json, push, pull with long-poll,
// paged snapshots) to drive the client's HTTP paths in unit tests, and to
// script failures. The real server is exercised in integration.test.mjs.
import { applyRowChange, emptyRowState, isRowLive, canonicalHlc, compareText } from '../better-sync.js';

export class FakeServer {
  /**
   * @param {{ models?: string[] | null, snapshotLimit?: number, features?: string[] }} [options]
   */
  constructor({ models = ['todo'], snapshotLimit = 1000, features } = {}) {
    this.models = models;
    this.snapshotLimit = snapshotLimit;
    this.features = features ?? ['push', 'pull', 'snapshot', 'long-poll', 'lww-field', 'hlc', 'idempotent-push', 'opaque-cursor'];
    /** Every pulled change, in seq order (seq = index + 1). */
    this.log = [];
    /** op_id → seq */
    this.opIds = new Map();
    /** `model\0id` → row state */
    this.rows = new Map();
    /** Every request: { method, route, query, body }. */
    this.requests = [];
    /** Script a push failure: (changes) => null | { status, code, meta? }. */
    this.rejectPush = () => null;
    /** When true, every request fails as a network error. */
    this.down = false;
    this.waiters = new Set();
    this.fetch = this.fetch.bind(this);
  }

  head() {
    return this.log.length;
  }

  /** Apply changes as the server would (no validation beyond the scripted one). */
  commit(changes) {
    const results = [];
    for (const c of changes) {
      if (this.opIds.has(c.op_id)) {
        results.push({ op_id: c.op_id, status: 'applied', seq: this.opIds.get(c.op_id), duplicate: true });
        continue;
      }
      const pulled = { ...c, seq: this.log.length + 1, updated_at: canonicalHlc(c.updated_at), payload: c.op === 'delete' ? null : c.payload };
      this.log.push(pulled);
      this.opIds.set(c.op_id, pulled.seq);
      const key = `${c.model}\0${c.pk}`;
      const state = this.rows.get(key) ?? { model: c.model, id: c.pk, ...emptyRowState() };
      applyRowChange(state, c.op, structuredClone(pulled.payload), [pulled.updated_at, c.actor, c.op_id]);
      this.rows.set(key, state);
      results.push({ op_id: c.op_id, status: 'applied', seq: pulled.seq });
    }
    for (const wake of this.waiters) wake();
    return results;
  }

  async fetch(url, init = {}) {
    const u = new URL(url);
    const route = u.pathname.replace(/^\/api\/sync/, '');
    const query = Object.fromEntries(u.searchParams);
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    this.requests.push({ method: init.method ?? 'GET', route, query, body, headers: init.headers });
    if (this.down) throw new TypeError('fetch failed');
    const json = (status, value) => new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });
    const error = (status, code, meta) => json(status, { error: { code, message: code, helpUrl: 'x' }, ...(meta ? { meta } : {}) });
    switch (route) {
      case '/sync.json':
        return json(200, {
          protocolVersion: 1,
          basePath: '/api/sync',
          features: this.features,
          models: this.models,
          limits: { maxBatch: 1000, maxBodyBytes: 1048576, maxPayloadBytes: 262144 },
        });
      case '/push': {
        const failure = this.rejectPush(body.changes);
        if (failure) return error(failure.status, failure.code, failure.meta);
        const results = this.commit(body.changes);
        return json(200, { results, cursor: `c${this.head()}` });
      }
      case '/pull': {
        const from = query.cursor ? Number(query.cursor.slice(1)) : 0;
        if (from > this.head()) return error(409, 'SYNC:CURSOR_AHEAD');
        const limit = Number(query.limit ?? 1000);
        if (from === this.head() && Number(query.wait ?? 0) > 0) {
          await new Promise((resolve) => {
            const done = () => {
              this.waiters.delete(done);
              clearTimeout(timer);
              resolve();
            };
            const timer = setTimeout(done, Number(query.wait) * 1000);
            this.waiters.add(done);
            init.signal?.addEventListener('abort', done, { once: true });
          });
          if (init.signal?.aborted) throw init.signal.reason;
        }
        const changes = this.log.slice(from, from + limit);
        const end = from + changes.length;
        return json(200, { changes, cursor: `c${end}`, has_more: end < this.head() });
      }
      case '/snapshot': {
        const model = query.model;
        const limit = Math.min(Number(query.limit ?? this.snapshotLimit), this.snapshotLimit);
        const all = [...this.rows.values()].filter((r) => r.model === model).sort((a, b) => compareText(a.id, b.id));
        const after = query.after;
        const rest = after === undefined ? all : all.filter((r) => compareText(r.id, after) > 0);
        const page = rest.slice(0, limit);
        const hasMore = rest.length > limit;
        return json(200, {
          model,
          rows: page.map((r) => ({ id: r.id, value: r.value, deleted: !isRowLive(r), clocks: r.clocks })),
          cursor: `c${this.head()}`,
          has_more: hasMore,
          ...(hasMore ? { next_after: page[page.length - 1].id } : {}),
        });
      }
      default:
        return error(404, 'SYNC:NOT_FOUND');
    }
  }
}

/** Poll `check` until it returns a truthy value (or throw after `timeoutMs`). */
export async function waitFor(check, { timeoutMs = 10_000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
