// The module in a real browser (headless Chromium, when installed) against the
// real server: native IndexedDB transactions, the WebSocket with its
// access_token, CORS, and change notifications between tabs sharing a
// database. The page reports its results back to a small local HTTP server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasServer, freePort, signToken, startServer, SERVER_BIN } from '../testing/server.mjs';

const SECRET = 'browser-test-secret';

function findChromium() {
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    try {
      return execFileSync('which', [name], { encoding: 'utf8' }).trim();
    } catch {
      // not this one
    }
  }
  return null;
}

const chromium = findChromium();
const skip = !hasServer()
  ? `no server binary at ${SERVER_BIN} (cargo build --examples)`
  : !chromium && 'no Chromium installed (apt-get install chromium) to run the module in a browser';

/** The page: two devices on their own databases, and a second tab of device A. */
const PAGE = (apiBase, token) => `<!doctype html><meta charset="utf-8"><script type="module">
import { createSyncClient, idb, ws } from '/better-sync.js';
const report = (result) => fetch('/result', { method: 'POST', body: JSON.stringify(result) });
// Rows compare by content, whatever order their fields arrived in.
const same = (rows, want) => JSON.stringify((rows ?? []).map((r) => Object.fromEntries(Object.entries(r).sort()))) === want;
const waitFor = async (check, what) => {
  const deadline = Date.now() + 15000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 25));
  }
};
try {
  const run = Date.now();
  const make = (dbName) => createSyncClient({
    baseUrl: ${JSON.stringify(apiBase)},
    storage: idb({ dbName }),
    transport: ws(),
    auth: { headers: () => ({ Authorization: 'Bearer ${token}' }) },
    conflict: 'lww',
  });
  const a = make('device-a-' + run);
  const b = make('device-b-' + run);
  const tab = make('device-a-' + run); // another tab of device A: same database, not connected
  window.clients = [a, b, tab];
  const tabRows = [];
  tab.subscribeQuery({ model: 'todo' }, (rows) => tabRows.push(rows));
  await a.applyChange('todo', { type: 'insert', id: '1', value: { id: '1', title: 'from a', done: false } });
  await waitFor(() => tabRows.at(-1)?.length === 1, 'the other tab to see the local write');
  await Promise.all([a.connect(), b.connect()]);
  await a.drain();
  await waitFor(async () => (await b.query({ model: 'todo' })).length === 1, 'b to receive the row');
  await b.applyChange('todo', { type: 'update', id: '1', patch: { done: true } });
  await a.applyChange('todo', { type: 'update', id: '1', patch: { title: 'edited by a' } });
  await Promise.all([a.drain(), b.drain()]);
  const want = JSON.stringify([{ done: true, id: '1', title: 'edited by a' }]);
  await waitFor(async () => same(await a.query({ model: 'todo' }), want) && same(await b.query({ model: 'todo' }), want), 'convergence');
  await waitFor(() => same(tabRows.at(-1), want), 'the other tab to follow');
  const stats = [await a.getQueueStats(), await b.getQueueStats()];
  report({ ok: true, rows: await a.query({ model: 'todo' }), live: stats.map((s) => s.live), queued: stats.map((s) => s.queued) });
  await Promise.all([a.close(), b.close(), tab.close()]);
} catch (e) {
  const debug = [];
  for (const c of window.clients ?? []) debug.push({ rows: await c.query({ model: 'todo' }), stats: await c.getQueueStats() });
  report({ ok: false, error: String(e && e.stack || e) + ' ' + JSON.stringify(debug) });
}
</script>`;

let server;
let dir;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'better-sync-browser-'));
  server = await startServer({ port: await freePort(), dbPath: join(dir, 't.db'), secret: SECRET });
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
});

test('the module runs in Chromium: IndexedDB, WebSocket, two devices and two tabs converge', { skip, timeout: 90_000 }, async () => {
  const token = signToken(SECRET, { sub: 'browser-user', tenant: 'browser', exp: Math.floor(Date.now() / 1000) + 3600 });
  // The entry and the modules of lib/ it imports, as the server lays them out.
  const moduleFile = (url) => {
    if (url === '/better-sync.js') return new URL('../better-sync.js', import.meta.url);
    const name = /^\/lib\/([a-z]+\.js)$/.exec(url)?.[1];
    return name ? new URL(`../lib/${name}`, import.meta.url) : null;
  };
  let resolveResult;
  const result = new Promise((resolve) => (resolveResult = resolve));
  const pages = createServer((req, res) => {
    const file = moduleFile(req.url);
    if (file) {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file));
    } else if (req.url === '/result') {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        res.writeHead(204).end();
        resolveResult(JSON.parse(body));
      });
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE(server.baseUrl, token));
    }
  });
  const port = await freePort();
  await new Promise((resolve) => pages.listen(port, '127.0.0.1', resolve));
  const profile = mkdtempSync(join(tmpdir(), 'better-sync-chromium-'));
  const browser = spawn(chromium, ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${profile}`, `http://127.0.0.1:${port}/`], { stdio: 'ignore' });
  try {
    let timer;
    const outcome = await Promise.race([
      result,
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no result from the page within 60 s')), 60_000))),
    ]).finally(() => clearTimeout(timer));
    assert.equal(outcome.ok, true, outcome.error);
    assert.deepEqual(outcome.rows, [{ id: '1', title: 'edited by a', done: true }]);
    assert.deepEqual(outcome.live, ['websocket', 'websocket']);
    assert.deepEqual(outcome.queued, [0, 0]);
  } finally {
    browser.kill('SIGTERM');
    await new Promise((resolve) => (browser.exitCode !== null ? resolve() : browser.once('exit', resolve)));
    await new Promise((resolve) => pages.close(resolve));
    // Chromium's helper processes can still be writing to the profile
    // after the main process exits: retry, and never fail the test over a
    // temporary directory.
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
    } catch (e) {
      console.warn(`left ${profile}: ${e.message}`);
    }
  }
});
