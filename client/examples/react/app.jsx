// A React app on the better-sync browser client: the todo list as a live
// query (`useQuery`), the connection as a live status (`useSyncStatus`).
// Built by `node examples/react/build.mjs` (esbuild: JSX and React bundled).
import { useState } from 'react';
import { createRoot } from 'react-dom/client';
import { createSyncClient, idb, ws, uuidv7 } from '../../better-sync.js';
import { useQuery, useSyncStatus } from '../../react.js';

// The sync server and the token, from the URL's hash (never sent to a
// server): #server=http://127.0.0.1:3000&token=<JWT>. The example servers
// print a development token when they start.
const config = new URLSearchParams(location.hash.slice(1));
const server = config.get('server') || 'http://127.0.0.1:3000';
const token = config.get('token') || '';

const sync = createSyncClient({
  baseUrl: server,
  storage: idb({ dbName: `react-example-${server}` }),
  transport: ws({ baseUrl: server }),
  auth: { headers: () => ({ Authorization: `Bearer ${token}` }) },
});
window.sync = sync;
sync.connect();

function Status() {
  const s = useSyncStatus(sync);
  if (!s) return <p id="status">starting…</p>;
  const state = !s.online ? 'offline' : s.authFailed ? 'auth failed' : s.retrying ? 'reconnecting' : 'online';
  return (
    <p id="status" data-state={state} data-queued={s.queued}>
      {state} · {s.queued} queued change{s.queued === 1 ? '' : 's'}
      {state !== 'online' && s.lastError ? ` · last error: ${s.lastError.code}` : ''}
    </p>
  );
}

function Todo({ todo }) {
  return (
    <li data-id={todo.id} className={todo.done ? 'done' : ''}>
      <input
        type="checkbox"
        checked={!!todo.done}
        onChange={(e) => sync.applyChange('todo', { type: 'update', id: todo.id, patch: { done: e.target.checked } })}
      />
      <span className="title">{todo.title}</span>
      <button title="Delete" onClick={() => sync.applyChange('todo', { type: 'delete', id: todo.id })}>✕</button>
    </li>
  );
}

function Todos() {
  // Re-renders when (and only when) the rows of the query change: a local
  // write, another device's change arriving, another tab's.
  const todos = useQuery(sync, { model: 'todo' });
  const [title, setTitle] = useState('');
  const add = async (e) => {
    e.preventDefault();
    const id = uuidv7();
    await sync.applyChange('todo', { type: 'insert', id, value: { id, title, done: false, created_at: new Date().toISOString() } });
    setTitle('');
  };
  const sorted = [...(todos ?? [])].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)) || a.id.localeCompare(b.id));
  return (
    <>
      <form id="add" onSubmit={add}>
        <input id="new" value={title} onChange={(e) => setTitle(e.target.value)} placeholder="What needs doing?" required />
        <button>Add</button>
      </form>
      {todos === undefined ? <p>loading…</p> : (
        <ul id="list" data-count={sorted.length}>
          {sorted.map((t) => <Todo key={t.id} todo={t} />)}
        </ul>
      )}
    </>
  );
}

createRoot(document.getElementById('root')).render(
  <>
    <h1>Todos (React)</h1>
    <Todos />
    <Status />
  </>,
);
