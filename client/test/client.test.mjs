// The client against local storage and an in-process fake server: local
// writes and live queries, the persistent outbox (fake-indexeddb), bootstrap,
// batching and the handling of refused changes.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { indexedDB } from 'fake-indexeddb';
import { createSyncClient, memory, idb, rpc, ws, SyncError } from '../better-sync.js';
import { FakeServer, waitFor } from '../testing/fake-server.mjs';

const BASE = 'http://fake.test';

/** Clients of the running test, closed after it whatever happened. */
const clients = new Set();
afterEach(async () => {
  await Promise.all([...clients].map((c) => c.close()));
  clients.clear();
});

/** createSyncClient, closed after the test. */
function make(options) {
  const c = createSyncClient(options);
  clients.add(c);
  return c;
}

/** A client on memory storage talking to `server` (or to nothing). */
function client(server, extra = {}) {
  return make({
    baseUrl: BASE,
    storage: memory(),
    transport: rpc({ fetch: server?.fetch ?? (() => Promise.reject(new TypeError('offline'))), longPollSecs: 1 }),
    conflict: 'lww',
    ...extra,
  });
}

/** Records every callback of a live query. */
function recorder() {
  const calls = [];
  const fn = (rows) => calls.push(rows);
  fn.calls = calls;
  fn.last = () => calls[calls.length - 1];
  return fn;
}

test('applyChange writes locally at once and subscribeQuery follows every change that matters', async () => {
  const c = client(null, { actor: 'device-1' });
  const open = recorder();
  const stopOpen = c.subscribeQuery({ model: 'todo', where: { done: false } }, open);
  await waitFor(() => open.calls.length === 1, { what: 'the first emission' });
  assert.deepEqual(open.last(), []);

  const change = await c.applyChange('todo', { type: 'insert', id: '1', value: { id: '1', title: 'a', done: false } });
  assert.match(change.op_id, /^[0-9a-f-]{36}$/);
  assert.match(change.updated_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z-[0-9a-f]{4}$/);
  assert.deepEqual({ ...change, op_id: 0, updated_at: 0 }, {
    op_id: 0, updated_at: 0, model: 'todo', pk: '1', op: 'insert', payload: { id: '1', title: 'a', done: false }, actor: 'device-1',
  });
  assert.deepEqual(open.last(), [{ id: '1', title: 'a', done: false }]);

  const titles = recorder();
  const stopTitles = c.subscribeQuery({ model: 'todo', where: (row) => row.title.startsWith('a'), select: ['title'] }, titles);
  await waitFor(() => titles.calls.length === 1);
  assert.deepEqual(titles.last(), [{ title: 'a' }]);

  // A row that does not match: no emission for the open-todo query.
  const before = open.calls.length;
  await c.applyChange('todo', { type: 'insert', id: '2', value: { title: 'b', done: true } });
  assert.equal(open.calls.length, before);
  await c.applyChange('todo', { type: 'update', id: '2', patch: { done: false } });
  assert.deepEqual(open.last(), [{ id: '1', title: 'a', done: false }, { id: '2', title: 'b', done: false }]);
  await c.applyChange('todo', { type: 'update', id: '1', patch: { done: true } });
  assert.deepEqual(open.last(), [{ id: '2', title: 'b', done: false }]);
  await c.applyChange('todo', { type: 'delete', id: '2' });
  assert.deepEqual(open.last(), []);
  // An update of a deleted row does not bring it back.
  await c.applyChange('todo', { type: 'update', id: '2', patch: { done: false } });
  assert.deepEqual(open.last(), []);
  assert.deepEqual(titles.last(), [{ title: 'a' }]);

  // Emitted rows are copies: mutating them does not touch the store.
  titles.last()[0].title = 'mutated';
  assert.deepEqual(await c.query({ model: 'todo' }), [{ id: '1', title: 'a', done: true }]);

  stopOpen();
  const after = open.calls.length;
  await c.applyChange('todo', { type: 'insert', id: '3', value: { title: 'c', done: false } });
  assert.equal(open.calls.length, after, 'no emission after unsubscribe');
  stopTitles();

  const stats = await c.getQueueStats();
  assert.equal(stats.queued, 7);
  assert.equal(stats.inFlight, 0);
  assert.equal(stats.online, false);
  assert.equal(stats.cursor, null);
});

test('applyChange refuses what the server would refuse, before queueing it', async () => {
  const c = client(null, { models: ['todo'] });
  const refuse = (model, change, code = 'SYNC:INVALID_CHANGE') =>
    assert.rejects(c.applyChange(model, change), (e) => e instanceof SyncError && e.code === code);
  await refuse('to do', { type: 'insert', id: '1', value: {} });
  await refuse('note', { type: 'insert', id: '1', value: {} }, 'SYNC:UNKNOWN_MODEL');
  await refuse('todo', { type: 'insert', id: '', value: {} });
  await refuse('todo', { type: 'insert', id: 'a\nb', value: {} });
  await refuse('todo', { type: 'insert', id: 'x'.repeat(256), value: {} });
  await refuse('todo', { type: 'insert', id: '1', value: [] });
  await refuse('todo', { type: 'insert', id: '1', value: { id: '2' } });
  await refuse('todo', { type: 'update', id: '1', patch: {} });
  await refuse('todo', { type: 'upsert', id: '1', value: {} });
  await refuse('todo', { type: 'insert', id: '1', value: { big: 'x'.repeat(262_144) } });
  let deep = 1;
  for (let k = 0; k < 32; k++) deep = { d: deep };
  await refuse('todo', { type: 'insert', id: '1', value: deep });
  const cyclic = {};
  cyclic.self = cyclic;
  await refuse('todo', { type: 'insert', id: '1', value: cyclic });
  // A numeric id equal to the pk is fine, as on the server.
  await c.applyChange('todo', { type: 'insert', id: '5', value: { id: 5 } });
  assert.equal((await c.getQueueStats()).queued, 1);
});

test('the outbox and rows persist in IndexedDB across client re-creation', async () => {
  const dbName = `persist-${Date.now()}`;
  const reopen = () => make({ baseUrl: BASE, storage: idb({ dbName, indexedDB }), transport: rpc({ fetch: () => Promise.reject(new TypeError('offline')) }), conflict: 'lww' });
  const a = reopen();
  const changes = [];
  changes.push(await a.applyChange('todo', { type: 'insert', id: '1', value: { title: 'one' } }));
  changes.push(await a.applyChange('todo', { type: 'insert', id: '2', value: { title: 'two' } }));
  changes.push(await a.applyChange('todo', { type: 'update', id: '1', patch: { title: 'uno' } }));
  const actor = a.actor;
  await a.close();

  const b = reopen();
  assert.equal((await b.getQueueStats()).queued, 3);
  assert.deepEqual(await b.query({ model: 'todo' }), [{ id: '1', title: 'uno' }, { id: '2', title: 'two' }]);
  const next = await b.applyChange('todo', { type: 'delete', id: '2' });
  assert.equal(b.actor, actor, 'the actor id is kept');
  assert.ok(next.updated_at > changes[2].updated_at, 'the clock continues after the stored one');

  // The stored row carries its merge state exactly as RowState (t, i, f).
  const rows = await new Promise((resolve, reject) => {
    const open = indexedDB.open(dbName);
    open.onsuccess = () => {
      const req = open.result.transaction('rows').objectStore('rows').get(['todo', '1']);
      req.onsuccess = () => {
        resolve(req.result);
        open.result.close();
      };
      req.onerror = () => reject(req.error);
    };
  });
  assert.deepEqual(rows, {
    model: 'todo',
    id: '1',
    deleted: false,
    value: { title: 'uno' },
    clocks: { t: null, i: [changes[0].updated_at, actor, changes[0].op_id], f: { title: [changes[2].updated_at, actor, changes[2].op_id] } },
  });
  await b.close();
});

test('a local write is atomic: when the outbox write fails, the row is not written either', async () => {
  const storage = idb({ dbName: `atomic-${Date.now()}`, indexedDB });
  const failing = {
    ...storage,
    transaction: (mode, fn) =>
      storage.transaction(mode, (tx) =>
        fn({ ...tx, addOutbox: async (entry) => { await tx.addOutbox(entry); throw new Error('disk full'); } }),
      ),
  };
  const c = make({ baseUrl: BASE, storage: failing, transport: rpc({ fetch: () => Promise.reject(new TypeError('offline')) }) });
  await assert.rejects(c.applyChange('todo', { type: 'insert', id: '1', value: { title: 'x' } }), /disk full/);
  assert.deepEqual(await c.query({ model: 'todo' }), []);
  assert.equal((await c.getQueueStats()).queued, 0);
});

test('bootstrap reads every snapshot page, keeps the first page cursor, and merges pulls by the rules', async () => {
  const server = new FakeServer({ models: ['todo', 'note'], snapshotLimit: 2 });
  const T = (s) => `2026-11-25T10:00:${String(s).padStart(2, '0')}.000Z`;
  server.commit([
    { op_id: 'o1', model: 'todo', pk: '1', op: 'insert', payload: { id: '1', title: 'a' }, updated_at: T(1), actor: 'x' },
    { op_id: 'o2', model: 'todo', pk: '2', op: 'insert', payload: { id: '2', title: 'b' }, updated_at: T(1), actor: 'x' },
    { op_id: 'o3', model: 'todo', pk: '3', op: 'insert', payload: { id: '3', title: 'c' }, updated_at: T(1), actor: 'x' },
    { op_id: 'o4', model: 'todo', pk: '7', op: 'insert', payload: { id: '7' }, updated_at: T(1), actor: 'x' },
    { op_id: 'o5', model: 'todo', pk: '7', op: 'delete', payload: null, updated_at: T(10), actor: 'x' },
    { op_id: 'o6', model: 'note', pk: 'n', op: 'insert', payload: { text: 'hi' }, updated_at: T(2), actor: 'x' },
  ]);
  const c = client(server);
  const todos = recorder();
  c.subscribeQuery({ model: 'todo' }, todos);
  const synced = [];
  c.on('synced', (e) => synced.push(e.cursor));
  await c.connect();

  const snapshots = server.requests.filter((r) => r.route === '/snapshot');
  assert.deepEqual(snapshots.map((r) => [r.query.model, r.query.after]), [['todo', undefined], ['todo', '2'], ['note', undefined]]);
  const pulls = server.requests.filter((r) => r.route === '/pull');
  assert.equal(pulls[0].query.cursor, 'c6', 'pull starts from the first snapshot page cursor');
  assert.deepEqual(synced, ['c6']);
  assert.deepEqual(todos.last().map((r) => r.id), ['1', '2', '3']);
  assert.deepEqual(await c.query({ model: 'note' }), [{ id: 'n', text: 'hi' }]);

  // An old insert of the deleted row 7 (offline device) loses to the tombstone;
  // a newer one re-creates it; a late update of row 1 wins its field.
  server.commit([
    { op_id: 'o7', model: 'todo', pk: '7', op: 'insert', payload: { id: '7', title: 'stale' }, updated_at: T(8), actor: 'y' },
    { op_id: 'o8', model: 'todo', pk: '1', op: 'update', payload: { title: 'A' }, updated_at: T(5), actor: 'y' },
  ]);
  await waitFor(() => todos.last()[0].title === 'A', { what: 'the pulled update' });
  assert.deepEqual(todos.last().map((r) => r.id), ['1', '2', '3']);
  server.commit([{ op_id: 'o9', model: 'todo', pk: '7', op: 'insert', payload: { id: '7', done: true }, updated_at: T(11), actor: 'y' }]);
  await waitFor(() => todos.last().length === 4, { what: 'the re-created row' });
  assert.deepEqual(todos.last()[3], { id: '7', done: true });
  const stats = await c.getQueueStats();
  assert.equal(stats.cursor, 'c9');
  assert.equal(stats.online, true);
  assert.equal(stats.live, 'long-poll');
});

test('the outbox is pushed in batches of at most 1000 changes and 256 KiB', async () => {
  const server = new FakeServer();
  const c = client(server);
  for (let k = 0; k < 1500; k++) await c.applyChange('todo', { type: 'insert', id: `s${k}`, value: { n: k } });
  for (let k = 0; k < 300; k++) await c.applyChange('todo', { type: 'insert', id: `b${k}`, value: { text: 'x'.repeat(2000) } });
  await c.connect();
  await c.drain();
  const pushes = server.requests.filter((r) => r.route === '/push');
  const sizes = pushes.map((r) => r.body.changes.length);
  assert.equal(sizes[0], 1000);
  assert.equal(sizes.reduce((a, b) => a + b, 0), 1800);
  for (const p of pushes) {
    assert.ok(p.body.changes.length <= 1000);
    assert.ok(new TextEncoder().encode(JSON.stringify(p.body.changes)).length <= 256 * 1024);
  }
  // Order is kept: the log has the changes in the order they were made.
  assert.deepEqual(server.log.slice(0, 3).map((ch) => ch.pk), ['s0', 's1', 's2']);
  assert.equal(server.log.length, 1800);
  const stats = await c.getQueueStats();
  assert.equal(stats.queued, 0);
});

test('a change the server refuses is quarantined, the rest is pushed, and its local effect is undone', async () => {
  const server = new FakeServer();
  server.commit([{ op_id: 'o1', model: 'todo', pk: '1', op: 'insert', payload: { title: 'server' }, updated_at: '2026-11-25T10:00:00Z', actor: 'x' }]);
  // Refuse any change whose payload says "forbidden", naming it by meta.index (like can_write).
  server.rejectPush = (changes) => {
    const index = changes.findIndex((ch) => ch.payload?.title === 'forbidden');
    return index < 0 ? null : { status: 403, code: 'SYNC:FORBIDDEN', meta: { index, op_id: changes[index].op_id, field: 'pk' } };
  };
  const c = client(server);
  const rejected = [];
  c.on('rejected', (e) => rejected.push(e));
  await c.connect();
  await c.disconnect();
  // Queued offline, so that the three go in one batch.
  await c.applyChange('todo', { type: 'insert', id: '2', value: { title: 'fine' } });
  const bad = await c.applyChange('todo', { type: 'update', id: '1', patch: { title: 'forbidden' } });
  await c.applyChange('todo', { type: 'insert', id: '3', value: { title: 'also fine' } });
  assert.equal((await c.query({ model: 'todo', where: { id: '1' } }))[0].title, 'forbidden', 'optimistic at first');
  await c.connect();
  await c.drain();

  assert.deepEqual(server.log.map((ch) => ch.pk), ['1', '2', '3']);
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0].change.op_id, bad.op_id);
  assert.equal(rejected[0].error.code, 'SYNC:FORBIDDEN');
  const stats = await c.getQueueStats();
  assert.equal(stats.queued, 0);
  assert.equal(stats.rejected, 1);
  assert.equal(stats.lastError.code, 'SYNC:FORBIDDEN');
  const [kept] = await c.getRejected();
  assert.equal(kept.change.op_id, bad.op_id);
  assert.equal(kept.error.meta.index, 1);
  // Local state is rebuilt from the server: the refused title disappears.
  await waitFor(async () => (await c.query({ model: 'todo', where: { id: '1' } }))[0]?.title === 'server', { what: 'the rebuilt row' });
  assert.deepEqual((await c.query({ model: 'todo' })).map((r) => r.title), ['server', 'fine', 'also fine']);
  await c.clearRejected();
  assert.equal((await c.getQueueStats()).rejected, 0);
});

test('a refused batch without meta.index is split until the culprit is alone', async () => {
  const server = new FakeServer();
  server.rejectPush = (changes) =>
    changes.some((ch) => ch.payload?.bad) ? { status: 413, code: 'SYNC:PAYLOAD_TOO_LARGE', meta: { max: 1 } } : null;
  const c = client(server);
  for (let k = 0; k < 10; k++) await c.applyChange('todo', { type: 'insert', id: String(k), value: k === 6 ? { bad: true } : { n: k } });
  await c.drain();
  assert.deepEqual(server.log.map((ch) => ch.pk), ['0', '1', '2', '3', '4', '5', '7', '8', '9']);
  const [kept] = await c.getRejected();
  assert.equal(kept.change.pk, '6');
});

test('a body damaged on the way (MALFORMED_JSON) is retried, not set aside; a proxy 413 splits', async () => {
  const server = new FakeServer();
  let garbled = 2;
  server.rejectPush = (changes) => {
    if (garbled > 0) {
      garbled -= 1;
      return { status: 400, code: 'SYNC:MALFORMED_JSON', meta: null };
    }
    return changes.length > 2 ? { status: 413, code: 'PROXY', meta: null } : null;
  };
  const c = client(server);
  for (let k = 0; k < 5; k++) await c.applyChange('todo', { type: 'insert', id: String(k), value: { n: k } });
  await c.drain();
  assert.deepEqual(server.log.map((ch) => ch.pk), ['0', '1', '2', '3', '4']);
  assert.equal((await c.getQueueStats()).rejected, 0);
  assert.deepEqual(await c.getRejected(), []);
});

test('network and server failures keep the outbox and retry with backoff; status events follow', async () => {
  const server = new FakeServer();
  server.down = true;
  const events = [];
  const c = client(server, { onEvent: (e) => e.type === 'status' && events.push(e.online) });
  await c.applyChange('todo', { type: 'insert', id: '1', value: { title: 'queued' } });
  await c.connect(); // the first round fails; connect still resolves
  const stats = await c.getQueueStats();
  assert.equal(stats.online, false);
  assert.equal(stats.lastError.code, 'NETWORK');
  assert.equal(stats.queued, 1);

  // A 503 is retried too, then the server recovers.
  server.down = false;
  let unavailable = 2;
  server.rejectPush = () => (unavailable-- > 0 ? { status: 503, code: 'SYNC:UNAVAILABLE' } : null);
  await c.drain();
  assert.equal(server.log.length, 1);
  assert.equal(events[0], true);
  assert.ok(events.includes(false), 'a 503 counts as offline');
  assert.equal(events.at(-1), true);
  assert.equal((await c.getQueueStats()).online, true);
  await c.disconnect();
  assert.equal(events.at(-1), false, 'disconnected is offline');
});

test('drain() pushes without connect(); disconnect() rejects a pending drain', async () => {
  const server = new FakeServer();
  const c = client(server);
  await c.applyChange('todo', { type: 'insert', id: '1', value: {} });
  await c.drain();
  assert.equal(server.log.length, 1);
  assert.equal(server.requests.filter((r) => r.route === '/pull').length, 0, 'no live sync without connect');

  server.down = true;
  await c.applyChange('todo', { type: 'insert', id: '2', value: {} });
  const pending = c.drain();
  await waitFor(async () => (await c.getQueueStats()).lastError?.code === 'NETWORK');
  await c.disconnect();
  await assert.rejects(pending, { code: 'ABORTED' });
  assert.equal((await c.getQueueStats()).queued, 1);
});

test('a cursor the server no longer knows makes the client bootstrap again', async () => {
  const at = '2026-11-25T10:00:00Z';
  let current = new FakeServer();
  current.commit([
    { op_id: 'o1', model: 'todo', pk: '1', op: 'insert', payload: { title: 'a' }, updated_at: at, actor: 'x' },
    { op_id: 'o2', model: 'todo', pk: '2', op: 'insert', payload: { title: 'b' }, updated_at: at, actor: 'x' },
  ]);
  const c = make({
    baseUrl: BASE,
    storage: memory(),
    transport: rpc({ fetch: (url, init) => current.fetch(url, init), longPollSecs: 1 }),
  });
  await c.connect();
  assert.equal((await c.getQueueStats()).cursor, 'c2');
  await c.disconnect();

  // The server's data is reset: a shorter log with other content.
  current = new FakeServer();
  current.commit([{ op_id: 'n1', model: 'todo', pk: '9', op: 'insert', payload: { title: 'new' }, updated_at: at, actor: 'x' }]);
  const errors = [];
  c.on('error', (e) => errors.push(e.error.code));
  await c.connect();
  await waitFor(async () => (await c.getQueueStats()).cursor === 'c1', { what: 'the new bootstrap' });
  assert.ok(errors.includes('SYNC:CURSOR_AHEAD'));
  assert.deepEqual(await c.query({ model: 'todo' }), [{ id: '9', title: 'new' }]);
});
