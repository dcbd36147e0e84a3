// The client against the real server (the prebuilt axum example on
// 127.0.0.1, SQLite in a temporary directory): clock agreement, convergence of
// concurrent edits over HTTP and WebSocket, a refused change, and an outbox
// queued while the server was down.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { indexedDB } from 'fake-indexeddb';
import { createSyncClient, memory, idb, rpc, ws, canonicalHlc, parseHlc, compareHlc, compareText } from '../better-sync.js';
import { admin, hasAdmin, hasServer, freePort, signToken, startServer, ADMIN_BIN, SERVER_BIN } from '../testing/server.mjs';
import { waitFor } from '../testing/fake-server.mjs';

const SECRET = 'integration-test-secret';
const skip = hasServer() ? false : `no server binary at ${SERVER_BIN} (cargo build --examples)`;
const hasWebSocket = typeof WebSocket === 'function';

let dir;
let dbPath;
let server;
const clients = new Set();

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'better-sync-client-'));
  dbPath = join(dir, 't.db');
  server = await startServer({ port: await freePort(), dbPath, secret: SECRET });
});

afterEach(async () => {
  await Promise.all([...clients].map((c) => c.close()));
  clients.clear();
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const token = (tenant, sub = 'user-1') => signToken(SECRET, { sub, tenant, exp: Math.floor(Date.now() / 1000) + 3600 });

/** A client of `tenant`, closed after the test. */
function client(tenant, { storage = memory(), transport, actor, baseUrl = server.baseUrl } = {}) {
  const jwt = token(tenant);
  const c = createSyncClient({
    baseUrl,
    storage,
    transport: transport ?? rpc({ longPollSecs: 2 }),
    auth: { headers: () => ({ Authorization: `Bearer ${jwt}` }) },
    conflict: 'lww',
    actor,
  });
  clients.add(c);
  return { c, storage };
}

/** A raw request to the server. */
async function call(tenant, method, route, body) {
  const res = await fetch(`${server.baseUrl}/api/sync${route}`, {
    method,
    headers: { authorization: `Bearer ${token(tenant)}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** JSON with sorted keys: states compare whatever the key order. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** A model's rows as the server holds them: { id: { value, clocks, deleted } }. */
async function serverRows(tenant, model = 'todo') {
  const { status, body } = await call(tenant, 'GET', `/snapshot?model=${model}`);
  assert.equal(status, 200);
  return Object.fromEntries(body.rows.map((r) => [r.id, { value: r.value, clocks: r.clocks, deleted: r.deleted }]));
}

/** A model's rows as a client's storage holds them, in the same shape. */
async function localRows(storage, model = 'todo') {
  const rows = await storage.transaction('readonly', (tx) => tx.listRows(model));
  return Object.fromEntries(rows.map((r) => [r.id, { value: r.value, clocks: r.clocks, deleted: r.deleted }]));
}

/** Wait until every storage holds exactly the server's state (values, clocks, tombstones). */
async function converged(tenant, storages) {
  await waitFor(
    async () => {
      const want = canonical(await serverRows(tenant));
      for (const s of storages) if (canonical(await localRows(s)) !== want) return false;
      return true;
    },
    { timeoutMs: 20_000, what: 'convergence with the server' },
  );
}

/** The winner of two changes by stamp order (clock, rank: delete 1 else 0, actor, op_id). */
const rank = (c) => (c.op === 'delete' ? 1 : 0);
const later = (a, b) =>
  (compareHlc(a.updated_at, b.updated_at) || rank(a) - rank(b) || compareText(a.actor, b.actor) || compareText(a.op_id, b.op_id)) > 0 ? a : b;

test('the client reads clock texts exactly as the server does', { skip }, async () => {
  const tenant = 'clocks';
  const valid = [
    '2025-11-25T10:00:00Z',
    '2025-11-25T10:00:00.123456Z',
    '2025-11-25T11:00:00.5+01:00',
    '2025-11-25T09:00:00.000-01:00',
    '2025-11-25T10:00:00.123Z-1',
    '2025-11-25T10:00:00.123Z-00FF',
    '2025-11-25 10:00:00.000Z',
    '2025-11-25t10:00:00.999z',
    '2025-12-31T23:59:60.500Z',
    '2024-02-29T00:00:00+23:59',
    '1970-01-01T00:00:00Z',
    '0001-01-01T00:00:00Z',
    new Date().toISOString(),
  ];
  const changes = valid.map((updated_at, n) => ({ op_id: `clock-${n}`, model: 'todo', pk: `c${n}`, op: 'insert', payload: {}, updated_at, actor: 'x' }));
  const pushed = await call(tenant, 'POST', '/push', { client_id: 'test', changes });
  assert.equal(pushed.status, 200, JSON.stringify(pushed.body));
  const pulled = await call(tenant, 'GET', '/pull');
  assert.deepEqual(pulled.body.changes.map((c) => c.updated_at), valid.map(canonicalHlc));

  for (const updated_at of ['2025-11-25', '2025-11-25T10:00:00', '2025-11-25T10:00:00Z-', '2025-11-25T10:00:00Z-00001', '2025-02-29T10:00:00Z', '2025-11-25T10:00:00+01:00-0001', '2025-11-25T10:00:00z-0001']) {
    const res = await call(tenant, 'POST', '/push', { changes: [{ op_id: `bad-${updated_at}`, model: 'todo', pk: 'b', op: 'insert', payload: {}, updated_at }] });
    assert.equal(res.status, 422, updated_at);
    assert.throws(() => parseHlc(updated_at), { code: 'SYNC:INVALID_CHANGE' }, updated_at);
  }
});

test('two HTTP clients converge with the server after concurrent edits of the same rows', { skip }, async () => {
  const tenant = 'converge';
  const { c: a, storage: sa } = client(tenant, { actor: 'alice-laptop' });
  const { c: b, storage: sb } = client(tenant, { actor: 'bob-phone' });
  await a.applyChange('todo', { type: 'insert', id: '1', value: { id: '1', title: 'first', done: false, note: 'n' } });
  await a.applyChange('todo', { type: 'insert', id: '2', value: { id: '2', title: 'second' } });
  await a.connect();
  await a.drain();
  const seen = [];
  b.subscribeQuery({ model: 'todo' }, (rows) => seen.push(rows));
  await b.connect(); // bootstraps from the snapshot
  await waitFor(() => seen.at(-1)?.length === 2, { what: 'B to see both rows' });
  await a.disconnect();
  await b.disconnect();

  // Offline, both edit the same rows.
  const aTitle = await a.applyChange('todo', { type: 'update', id: '1', patch: { title: 'from alice', note: 'alice' } });
  const bTitle = await b.applyChange('todo', { type: 'update', id: '1', patch: { title: 'from bob', done: true } });
  const aDelete = await a.applyChange('todo', { type: 'delete', id: '2' });
  const bUpdate = await b.applyChange('todo', { type: 'update', id: '2', patch: { title: 'edited' } });
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([a.drain(), b.drain()]);
  await converged(tenant, [sa, sb]);

  const [rowA] = await a.query({ model: 'todo', where: { id: '1' } });
  const [rowB] = await b.query({ model: 'todo', where: { id: '1' } });
  assert.deepEqual(rowA, rowB);
  // Different fields both survive; the same field goes to the later stamp.
  assert.equal(rowA.title, later(aTitle, bTitle).payload.title);
  assert.equal(rowA.note, 'alice');
  assert.equal(rowA.done, true);
  // An update never resurrects a deleted row, whatever the order of the clocks.
  assert.deepEqual(await a.query({ model: 'todo', where: { id: '2' } }), []);
  assert.deepEqual(await b.query({ model: 'todo', where: { id: '2' } }), []);
  const row2 = (await serverRows(tenant))['2'];
  assert.equal(row2.deleted, true);
  assert.deepEqual(row2.value, later(aDelete, bUpdate) === bUpdate ? { title: 'edited' } : {});
});

test('a WebSocket client receives live changes and converges', { skip: skip || (!hasWebSocket && 'this Node has no global WebSocket (Node 20: run `npm test`, which passes --experimental-websocket, or use Node >= 22)') }, async () => {
  const tenant = 'realtime';
  const { c: a, storage: sa } = client(tenant, { actor: 'writer' });
  const { c: w, storage: sw } = client(tenant, { actor: 'watcher', transport: ws() });
  const modes = [];
  w.on('live', (e) => modes.push(e.mode));
  await a.applyChange('todo', { type: 'insert', id: 'x', value: { title: 'before' } });
  await a.connect();
  await a.drain();
  const seen = [];
  w.subscribeQuery({ model: 'todo' }, (rows) => seen.push(rows));
  await w.connect();
  assert.equal((await w.getQueueStats()).live, 'websocket');
  await waitFor(() => seen.at(-1)?.[0]?.title === 'before', { what: 'the bootstrapped row' });

  // Concurrent edits of one row from both sides.
  await a.applyChange('todo', { type: 'update', id: 'x', patch: { title: 'by writer' } });
  await w.applyChange('todo', { type: 'update', id: 'x', patch: { done: true } });
  await Promise.all([a.drain(), w.drain()]);
  await waitFor(() => seen.at(-1)?.[0]?.title === 'by writer', { what: 'the change over the socket' });
  await converged(tenant, [sa, sw]);
  assert.deepEqual(await w.query({ model: 'todo' }), [{ id: 'x', title: 'by writer', done: true }]);
  assert.deepEqual(modes, ['websocket'], 'no fallback was needed');
});

test('the ws transport falls back to long-poll when the socket fails', { skip }, async () => {
  const tenant = 'fallback';
  class BrokenSocket {
    constructor() {
      setTimeout(() => this.onerror?.({}), 10);
    }
    close() {}
    send() {}
  }
  const { c: a } = client(tenant);
  const { c: w, storage: sw } = client(tenant, { transport: ws({ WebSocket: BrokenSocket, longPollSecs: 1 }) });
  const modes = [];
  w.on('live', (e) => modes.push(e.mode));
  await w.connect();
  await a.applyChange('todo', { type: 'insert', id: 'f', value: { title: 'via long-poll' } });
  await a.drain();
  await waitFor(async () => (await w.query({ model: 'todo' }))[0]?.title === 'via long-poll', { what: 'the change by long-poll' });
  assert.ok(modes.includes('long-poll'));
  assert.equal((await w.getQueueStats()).live, 'long-poll');
  await converged(tenant, [sw]);
});

test('a change the server refuses is quarantined and does not block the queue', { skip }, async () => {
  const tenant = 'refused';
  const { c, storage } = client(tenant);
  // Queued before the client knows the server's models: "nope" is not registered.
  await c.applyChange('todo', { type: 'insert', id: '1', value: { title: 'ok' } });
  const bad = await c.applyChange('nope', { type: 'insert', id: '1', value: {} });
  await c.applyChange('todo', { type: 'insert', id: '2', value: { title: 'also ok' } });
  await c.connect();
  await c.drain();
  const stats = await c.getQueueStats();
  assert.equal(stats.queued, 0);
  assert.equal(stats.rejected, 1);
  const [rejected] = await c.getRejected();
  assert.equal(rejected.change.op_id, bad.op_id);
  assert.equal(rejected.error.code, 'SYNC:UNKNOWN_MODEL');
  assert.equal(rejected.error.meta.index, 1);
  assert.deepEqual(Object.keys(await serverRows(tenant)).sort(), ['1', '2']);
  // The refused row disappears locally once local state is rebuilt.
  await waitFor(async () => (await localRows(storage, 'nope'))['1'] === undefined, { what: 'the refused row to go' });
  await converged(tenant, [storage]);
});

test('an outbox queued while the server is down is pushed once it comes up', { skip }, async () => {
  const tenant = 'offline';
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const dbName = `offline-${Date.now()}`;
  // Written by one client instance, sent by the next one (same IndexedDB).
  const { c: first } = client(tenant, { baseUrl, storage: idb({ dbName, indexedDB }) });
  await first.applyChange('todo', { type: 'insert', id: 'a', value: { title: 'queued 1' } });
  await first.applyChange('todo', { type: 'insert', id: 'b', value: { title: 'queued 2' } });
  await first.applyChange('todo', { type: 'update', id: 'a', patch: { done: true } });
  await first.close();

  const { c, storage } = client(tenant, { baseUrl, storage: idb({ dbName, indexedDB }) });
  const statuses = [];
  c.on('status', (e) => statuses.push(e.online));
  await c.connect(); // the server is down: the first round fails, connect resolves
  let stats = await c.getQueueStats();
  assert.equal(stats.online, false);
  assert.equal(stats.queued, 3);
  assert.equal(stats.lastError.code, 'NETWORK');

  const late = await startServer({ port, dbPath: join(dir, 'late.db'), secret: SECRET });
  try {
    await c.drain();
    stats = await c.getQueueStats();
    assert.equal(stats.queued, 0);
    assert.equal(stats.online, true);
    assert.deepEqual(statuses, [true]);
    const { body } = await fetch(`${baseUrl}/api/sync/snapshot?model=todo`, { headers: { authorization: `Bearer ${token(tenant)}` } }).then(async (r) => ({ body: await r.json() }));
    assert.deepEqual(
      body.rows.map((r) => [r.id, r.value]),
      [['a', { title: 'queued 1', done: true }], ['b', { title: 'queued 2' }]],
    );
    await waitFor(async () => (await c.getQueueStats()).cursor !== null, { what: 'the bootstrap after the server came up' });
    assert.equal((await localRows(storage)).a.deleted, false);
  } finally {
    await c.close();
    await late.stop();
  }
});

/** Random doubles of every exponent (subnormals included), edge values, and -0. */
function exactCorpus(seed) {
  let state = seed >>> 0;
  const next = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const view = new DataView(new ArrayBuffer(8));
  const double = () => {
    for (;;) {
      view.setUint32(0, Math.floor(next() * 2 ** 32));
      view.setUint32(4, Math.floor(next() * 2 ** 32));
      if (next() < 0.3) view.setUint16(0, view.getUint16(0) & 0x800f); // subnormal
      const f = view.getFloat64(0);
      if (Number.isFinite(f)) return f;
    }
  };
  const palette = ['a', '"', '\\', '/', '\u0000', '\u0001', '\b', '\f', '\n', '\r', '\t', '\u001f', '\u007f', 'é', '中', '\u2028', '\u2029', '\ufeff', '😀', '𝄞', '\u{10ffff}', '👨\u200d👩'];
  const string = () => Array.from({ length: Math.floor(next() * 10) }, () => palette[Math.floor(next() * palette.length)]).join('');
  const edges = [9.710932949418186e-20, -9.068346387644875e23, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 0.30000000000000004, 1e21, 1e-7, -0, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER, -(2 ** 63), 2 ** 64, 123456789012345680000];
  const value = (depth) => {
    const kind = Math.floor(next() * (depth > 1 ? 7 : 5));
    if (kind === 0) return [null, true, false][Math.floor(next() * 3)];
    if (kind === 1 || kind === 2) return double();
    if (kind === 3) return edges[Math.floor(next() * edges.length)];
    if (kind === 4) return string();
    if (kind === 5) return Array.from({ length: Math.floor(next() * 4) }, () => value(depth - 1));
    return Object.fromEntries(Array.from({ length: Math.floor(next() * 4) }, () => [string(), value(depth - 1)]));
  };
  const values = [...edges];
  // The payload object is one level of the 32 allowed.
  let nested = 9.710932949418186e-20;
  for (let d = 1; d < 31; d++) nested = [nested];
  values.push(nested);
  while (values.length < 150) values.push(value(5));
  return values;
}

/** Every double in `got` is the one in `want` (-0 aside: JSON writes it as 0). */
function sameNumbers(got, want, path = 'v') {
  if (typeof want === 'number') {
    assert.ok(Object.is(got, want) || (want === 0 && got === 0), `${path}: got ${got}, wrote ${want}`);
  } else if (Array.isArray(want)) {
    assert.equal(got.length, want.length, path);
    want.forEach((w, i) => sameNumbers(got[i], w, `${path}[${i}]`));
  } else if (want && typeof want === 'object') {
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), path);
    for (const k of Object.keys(want)) sameNumbers(got[k], want[k], `${path}.${JSON.stringify(k)}`);
  } else {
    assert.equal(got, want, path);
  }
}

test('every value comes back exactly: replicas equal the server, and a retry is a duplicate', { skip }, async () => {
  const tenant = 'exact';
  const seed = Number(process.env.BS_TEST_SEED ?? Date.now() % 2 ** 32);
  const values = exactCorpus(seed);
  const { c: a, storage: sa } = client(tenant, { actor: 'writer' });
  const sent = [];
  for (const [i, v] of values.entries()) {
    const id = `e${String(i).padStart(3, '0')}`;
    sent.push(await a.applyChange('todo', { type: 'insert', id, value: { id, v } }));
  }
  await a.connect();
  await a.drain();
  const { c: b, storage: sb } = client(tenant, { actor: 'reader' });
  await b.connect();
  await converged(tenant, [sa, sb]);

  const rows = await serverRows(tenant);
  for (const [i, v] of values.entries()) {
    const id = `e${String(i).padStart(3, '0')}`;
    sameNumbers(rows[id].value.v, v, `seed ${seed} ${id}`);
  }
  const pulled = await call(tenant, 'GET', '/pull?limit=1000');
  for (const ch of pulled.body.changes) sameNumbers(ch.payload.v, values[Number(ch.pk.slice(1))], `pull ${ch.pk}`);

  // The outbox's retry after a lost answer: every change a duplicate.
  const retry = await call(tenant, 'POST', '/push', { client_id: 'writer', changes: sent });
  assert.equal(retry.status, 200, JSON.stringify(retry.body));
  assert.ok(retry.body.results.every((r) => r.duplicate), JSON.stringify(retry.body.results.filter((r) => !r.duplicate)));
});

/** One sample of a Prometheus text exposition: the sum over its label sets. */
function sample(text, name, labels = '') {
  let sum = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+|NaN)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) {
      sum += Number(m[3]);
      seen = true;
    }
  }
  return seen ? sum : null;
}

test('the example serves the engine metrics at /metrics and they move with traffic', { skip }, async () => {
  const scrape = async () => {
    const res = await fetch(`${server.baseUrl}/metrics`);
    assert.equal(res.status, 200);
    return res.text();
  };
  const tenant = 'metrics';
  const { c } = client(tenant, { actor: 'metrics-writer' });
  await c.applyChange('todo', { type: 'insert', id: 'm0', value: { title: 'warm up' } });
  await c.connect();
  await c.drain();
  const before = await scrape();
  for (let i = 1; i <= 3; i++) await c.applyChange('todo', { type: 'insert', id: `m${i}`, value: { title: `n${i}` } });
  await c.drain();
  const refused = await call(tenant, 'POST', '/push', { changes: [{ op_id: 'bad', model: 'nope', pk: '1', op: 'insert', payload: {}, updated_at: new Date().toISOString() }] });
  assert.equal(refused.status, 422);
  const pulled = await call(tenant, 'GET', '/pull');
  assert.equal(pulled.status, 200);
  const after = await scrape();
  const moved = (name, labels) => {
    const a = sample(before, name, labels) ?? 0;
    const b = sample(after, name, labels);
    assert.ok(b !== null && b > a, `${name}${labels ?? ''}: ${a} -> ${b}`);
  };
  moved('better_sync_changes_committed_total');
  moved('better_sync_push_seconds_count', 'outcome="ok"');
  moved('better_sync_commit_groups_total');
  moved('better_sync_commit_group_changes_count');
  moved('better_sync_push_changes_refused_total', 'code="SYNC:UNKNOWN_MODEL"');
  moved('better_sync_errors_total', 'code="SYNC:UNKNOWN_MODEL"');
  moved('better_sync_pulls_total');
  moved('better_sync_pulled_changes_total');
  assert.ok(sample(after, 'better_sync_log_head') >= 4);
  // The health route answers without credentials.
  const health = await fetch(`${server.baseUrl}/api/sync/health`);
  assert.equal(health.status, 200);
  const body = await health.json();
  assert.equal(body.status, 'ok');
  assert.equal(body.checks.database.ok, true);
  const live = await (await fetch(`${server.baseUrl}/api/sync/health?probe=live`)).json();
  assert.deepEqual(live, { status: 'ok', probe: 'live' });
});

test('the client reports its true state: auth failed, retrying with a delay, outbox size, then recovery', { skip }, async () => {
  const tenant = 'state';
  let jwt = 'not-a-token';
  const c = createSyncClient({
    baseUrl: server.baseUrl,
    storage: memory(),
    transport: rpc({ longPollSecs: 1 }),
    auth: { headers: () => ({ Authorization: `Bearer ${jwt}` }) },
    conflict: 'lww',
  });
  clients.add(c);
  const events = [];
  for (const type of ['auth', 'retry', 'outbox', 'status']) c.on(type, (e) => events.push(e));
  await c.applyChange('todo', { type: 'insert', id: 's1', value: { title: 'kept' } });
  assert.deepEqual(events.find((e) => e.type === 'outbox'), { type: 'outbox', queued: 1 });
  await c.connect();
  await waitFor(() => events.some((e) => e.type === 'auth' && !e.ok), { what: 'an auth failure event' });
  let stats = await c.getQueueStats();
  assert.equal(stats.authFailed, true);
  assert.equal(stats.online, true, 'the server answered: not offline');
  assert.equal(stats.queued, 1, 'the change stays queued');
  await waitFor(() => events.some((e) => e.type === 'retry'), { what: 'a retry event' });
  const retry = events.find((e) => e.type === 'retry');
  assert.ok(retry.delayMs > 0 && retry.attempt >= 1 && retry.error.code === 'SYNC:UNAUTHORIZED', JSON.stringify(retry));
  // A renewed token: the next attempt succeeds and says so.
  jwt = token(tenant);
  await c.drain();
  await waitFor(() => events.some((e) => e.type === 'auth' && e.ok), { what: 'the auth recovery event' });
  stats = await c.getQueueStats();
  assert.equal(stats.authFailed, false);
  assert.equal(stats.queued, 0);
  assert.ok(events.some((e) => e.type === 'outbox' && e.queued === 0));
  assert.deepEqual(Object.keys(await serverRows(tenant)), ['s1']);
});

test('a client announces its model versions; one the server cannot serve is reported and keeps its queue', { skip }, async () => {
  const tenant = 'versions';
  const jwt = token(tenant);
  const make = (versions, transport) => {
    const c = createSyncClient({
      baseUrl: server.baseUrl,
      storage: memory(),
      transport,
      auth: { headers: () => ({ Authorization: `Bearer ${jwt}` }) },
      versions,
    });
    clients.add(c);
    return c;
  };
  assert.throws(() => make({ todo: 0 }), /versions\.todo/);
  assert.throws(() => make(['todo']), /versions/);
  const meta = await (await fetch(`${server.baseUrl}/api/sync/sync.json`)).json();
  assert.deepEqual(meta.versions, { todo: { current: 1, oldest: 1 } });

  const newer = make({ todo: 2 }, rpc({ longPollSecs: 1 }));
  const events = [];
  newer.on('version', (e) => events.push(e));
  await newer.applyChange('todo', { type: 'insert', id: 'v1', value: { title: 'from a newer app' } });
  await newer.connect();
  await waitFor(() => events.some((e) => !e.ok), { what: 'a version event' });
  const refusal = events.find((e) => !e.ok).error;
  assert.equal(refusal.code, 'SYNC:VERSION_UNSUPPORTED');
  assert.equal(refusal.status, 409);
  assert.deepEqual(refusal.meta, { model: 'todo', version: 2, current: 1, oldest: 1 });
  const stats = await newer.getQueueStats();
  assert.equal(stats.versionUnsupported, true);
  assert.equal(stats.queued, 1, 'the change stays queued');
  assert.deepEqual(await serverRows(tenant), {});

  // The current version syncs, over HTTP and over the WebSocket (the
  // versions ride in its URL).
  const current = make({ todo: 1 }, hasWebSocket ? ws() : rpc({ longPollSecs: 1 }));
  await current.connect();
  await current.applyChange('todo', { type: 'insert', id: 'v2', value: { title: 'current' } });
  await current.drain();
  assert.deepEqual(Object.keys(await serverRows(tenant)), ['v2']);
  assert.equal((await current.getQueueStats()).versionUnsupported, false);
});

test('a client reports its queue, cursor and last error to an inspector page of the same origin', { skip: typeof BroadcastChannel !== 'function' && 'no BroadcastChannel' }, async () => {
  const tenant = 'inspected';
  const inspector = new BroadcastChannel('better-sync-inspector');
  const reports = [];
  inspector.onmessage = ({ data }) => reports.push(data);
  try {
    const { c } = client(tenant, { actor: 'inspected-device' });
    await c.applyChange('todo', { type: 'insert', id: 'i1', value: { title: 'watched' } });
    await c.connect();
    await c.drain();
    await waitFor(() => reports.some((r) => r.type === 'stats' && r.actor === 'inspected-device' && r.stats.queued === 0 && r.stats.cursor), { what: 'a report after the drain' });
    // An inspector that opens later asks, and every client answers at once.
    reports.length = 0;
    inspector.postMessage({ type: 'ping' });
    await waitFor(() => reports.some((r) => r.type === 'stats' && r.actor === 'inspected-device'), { what: 'an answer to the ping' });
    const { stats } = reports.find((r) => r.actor === 'inspected-device');
    assert.equal(stats.online, true);
    assert.equal(stats.authFailed, false);
    assert.equal(typeof stats.cursor, 'string');
  } finally {
    inspector.close();
  }
});

test('a refused token is renewed by the auth refresh hook, once for concurrent requests, and nothing is reported as failed', { skip }, async () => {
  const tenant = 'refresh';
  let jwt = 'expired-token';
  let refreshes = 0;
  const c = createSyncClient({
    baseUrl: server.baseUrl,
    storage: memory(),
    transport: rpc({ longPollSecs: 1 }),
    auth: {
      headers: () => ({ Authorization: `Bearer ${jwt}` }),
      refresh: async () => {
        refreshes++;
        await new Promise((r) => setTimeout(r, 100)); // a slow identity provider
        jwt = token(tenant);
      },
    },
    conflict: 'lww',
  });
  clients.add(c);
  const authEvents = [];
  c.on('auth', (e) => authEvents.push(e));
  for (let i = 0; i < 3; i++) await c.applyChange('todo', { type: 'insert', id: `r${i}`, value: { n: i } });
  await c.connect();
  await c.drain();
  assert.equal(refreshes, 1, 'the push and the sync round shared one refresh');
  assert.deepEqual(authEvents, [], 'renewed before anything failed');
  assert.equal((await c.getQueueStats()).authFailed, false);
  assert.deepEqual(Object.keys(await serverRows(tenant)).sort(), ['r0', 'r1', 'r2']);
});

test('a client behind the compacted log bootstraps again and keeps its queue', { skip: skip || (!hasAdmin() && `no admin binary at ${ADMIN_BIN} (cargo build -p better-sync-admin)`) }, async () => {
  const tenant = 'compacted';
  const { c: w, storage: sw } = client(tenant, { actor: 'writer' });
  const { c: r, storage: sr } = client(tenant, { actor: 'reader' });
  for (let i = 0; i < 5; i++) await w.applyChange('todo', { type: 'insert', id: `b${i}`, value: { n: i } });
  await w.connect();
  await w.drain();
  await r.connect();
  await converged(tenant, [sw, sr]);
  await r.disconnect();

  // Offline: the reader queues changes while the others write on, delete a
  // row, and the operator compacts the log past the reader's cursor.
  await r.applyChange('todo', { type: 'insert', id: 'mine', value: { by: 'reader' } });
  await r.applyChange('todo', { type: 'update', id: 'b1', patch: { n: 100 } });
  for (let i = 0; i < 20; i++) await w.applyChange('todo', { type: 'update', id: `b${i % 5}`, patch: { m: i } });
  await w.applyChange('todo', { type: 'delete', id: 'b4' });
  await w.drain();
  const report = await admin(dbPath, ['compact', '--keep-last', '3', '--tombstones', '0s']);
  assert.ok(report.logDeleted > 0, JSON.stringify(report));
  const stale = await call(tenant, 'GET', '/pull');
  assert.equal(stale.status, 409);
  assert.equal(stale.body.error.code, 'SYNC:CURSOR_STALE');

  const resyncs = [];
  r.on('resync', (e) => resyncs.push(e.reason));
  await r.connect();
  await r.drain();
  await converged(tenant, [sw, sr]);
  const rows = Object.fromEntries((await r.query({ model: 'todo' })).map((row) => [row.id, row]));
  assert.deepEqual(rows.mine, { id: 'mine', by: 'reader' }, 'the queued insert arrived');
  assert.equal(rows.b1.n, 100, 'the queued update arrived');
  assert.equal(rows.b4, undefined, 'the delete it missed shows');
  assert.equal(Object.keys(rows).length, 5);
  assert.ok(resyncs.includes('SYNC:CURSOR_STALE'), `resync reasons: ${resyncs}`);
  assert.equal((await r.getQueueStats()).queued, 0);
});

test('a token that expires mid-stream on the WebSocket is renewed and no change is missed', { skip: skip || (!hasWebSocket && 'this Node has no global WebSocket') }, async () => {
  // A server of its own that accepts no token after its exp.
  const strict = await startServer({ port: await freePort(), dbPath: join(dir, 'expiry.db'), secret: SECRET, leewaySecs: 0 });
  try {
    const tenant = 'expiry';
    const now = () => Math.floor(Date.now() / 1000);
    let jwt = signToken(SECRET, { sub: 'reader', tenant, exp: now() + 3 });
    let refreshes = 0;
    const reader = createSyncClient({
      baseUrl: strict.baseUrl,
      storage: memory(),
      transport: ws(),
      auth: {
        headers: () => ({ Authorization: `Bearer ${jwt}` }),
        refresh: async () => {
          refreshes += 1;
          jwt = signToken(SECRET, { sub: 'reader', tenant, exp: now() + 3600 });
        },
      },
      conflict: 'lww',
    });
    clients.add(reader);
    const writer = createSyncClient({
      baseUrl: strict.baseUrl,
      storage: memory(),
      transport: rpc({ longPollSecs: 1 }),
      auth: { headers: () => ({ Authorization: `Bearer ${token(tenant)}` }) },
      conflict: 'lww',
    });
    clients.add(writer);
    await reader.connect();
    await writer.connect();
    // Writes across the reader's token expiry, 3 s from now.
    for (let i = 0; i < 24; i++) {
      await writer.applyChange('todo', { type: 'insert', id: `w${i}`, value: { i } });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await writer.drain();
    await waitFor(async () => (await reader.query({ model: 'todo' })).length === 24, {
      timeoutMs: 30_000,
      what: 'every change, across the expiry',
    });
    assert.ok(refreshes >= 1, 'the expired token was renewed through the refresh hook');
  } finally {
    await strict.stop();
  }
});
