// The framework bindings over a real client (memory storage, local writes):
// the React hooks rendered into a DOM (happy-dom) with react-dom, and the
// Svelte stores checked with Svelte's own `get` and `derived`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Window } from 'happy-dom';
import { createSyncClient, memory } from '../better-sync.js';

/** A client that is never connected: every write is local and queued. */
function offlineClient() {
  return createSyncClient({
    baseUrl: 'http://127.0.0.1:9',
    storage: memory(),
    auth: { headers: () => ({}) },
    conflict: 'lww',
    actor: 'tester',
  });
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

let window;
before(() => {
  window = new Window({ url: 'http://localhost/' });
  globalThis.window = window;
  globalThis.document = window.document;
  if (typeof navigator === 'undefined') globalThis.navigator = window.navigator;
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
});
after(async () => {
  await window.happyDOM.close();
});

test('useQuery renders the live rows and re-renders on change, and unmounting stops listening', async () => {
  const React = await import('react');
  const { createRoot } = await import('react-dom/client');
  const { useQuery, useSyncStatus } = await import('../react.js');
  const sync = offlineClient();
  let renders = 0;
  function Todos() {
    renders += 1;
    // A new spec object every render: the subscription is kept.
    const rows = useQuery(sync, { model: 'todo', where: { done: false } });
    const status = useSyncStatus(sync);
    return React.createElement(
      'div',
      null,
      React.createElement('p', { id: 'queued' }, status ? String(status.queued) : 'reading'),
      rows === undefined
        ? React.createElement('p', { id: 'loading' }, 'loading')
        : React.createElement('ul', null, rows.map((r) => React.createElement('li', { key: r.id }, r.title))),
    );
  }
  const container = document.createElement('div');
  document.body.appendChild(container);
  const root = createRoot(container);
  await React.act(async () => root.render(React.createElement(Todos)));
  await React.act(settle);
  const items = () => [...container.querySelectorAll('li')].map((li) => li.textContent);
  assert.deepEqual(items(), []);
  assert.equal(container.querySelector('#queued').textContent, '0');

  await React.act(async () => {
    await sync.applyChange('todo', { type: 'insert', id: 'a', value: { title: 'write tests', done: false } });
    await sync.applyChange('todo', { type: 'insert', id: 'b', value: { title: 'ship it', done: true } });
    await settle();
  });
  assert.deepEqual(items(), ['write tests'], 'filtered by the query');
  assert.equal(container.querySelector('#queued').textContent, '2', 'the status follows the outbox');

  await React.act(async () => {
    await sync.applyChange('todo', { type: 'update', id: 'b', patch: { done: false } });
    await settle();
  });
  assert.deepEqual(items(), ['write tests', 'ship it']);

  await React.act(async () => root.unmount());
  const before = renders;
  await sync.applyChange('todo', { type: 'insert', id: 'c', value: { title: 'after', done: false } });
  await settle();
  assert.equal(renders, before, 'nothing renders after unmounting');
  await sync.close();
});

test('queryStore and statusStore follow the Svelte store contract', async () => {
  const { get, derived } = await import('svelte/store');
  const { queryStore, statusStore } = await import('../svelte.js');
  const sync = offlineClient();
  const todos = queryStore(sync, { model: 'todo' });

  // Called at once on subscribe, then on every change; the last
  // unsubscribe stops listening.
  const seen = [];
  const stop = todos.subscribe((rows) => seen.push(rows?.map((r) => r.id)));
  assert.equal(seen.length, 1, 'called at once');
  await settle();
  assert.deepEqual(seen.at(-1), []);
  await sync.applyChange('todo', { type: 'insert', id: 'x', value: { title: 'one' } });
  await settle();
  assert.deepEqual(seen.at(-1), ['x']);

  // `get` subscribes and unsubscribes; `derived` composes.
  const count = derived(todos, (rows) => rows?.length ?? 0);
  const counts = [];
  const stopCount = count.subscribe((n) => counts.push(n));
  await sync.applyChange('todo', { type: 'insert', id: 'y', value: { title: 'two' } });
  await settle();
  assert.equal(counts.at(-1), 2);
  assert.equal(get(count), 2);
  stopCount();
  stop();
  const calls = seen.length;
  await sync.applyChange('todo', { type: 'insert', id: 'z', value: { title: 'three' } });
  await settle();
  assert.equal(seen.length, calls, 'no calls after the last unsubscribe');

  const status = statusStore(sync);
  const stats = [];
  const stopStatus = status.subscribe((s) => stats.push(s));
  await settle();
  assert.equal(stats.at(-1)?.queued, 3);
  await sync.applyChange('todo', { type: 'delete', id: 'x' });
  await settle();
  assert.equal(stats.at(-1)?.queued, 4);
  stopStatus();
  await sync.close();
});
