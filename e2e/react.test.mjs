// The React example (client/examples/react, bundled by esbuild) in headless
// Chromium against the axum example server: useQuery shows the rows and
// follows local writes and another device's changes live; useSyncStatus
// shows the connection and the queue.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, signToken, startServer, SERVER_BIN } from '../client/testing/server.mjs';
import { serve } from '../client/examples/react/build.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = 20_000; // a safety limit, not a speed assertion
const SECRET = 'react-example-secret-react-example';

let dir;
let server;
let page;
let browser;

before(async () => {
  assert.ok(existsSync(SERVER_BIN), `missing ${SERVER_BIN}: run cargo build --examples`);
  assert.ok(existsSync(CHROMIUM), `missing ${CHROMIUM}: apt-get install chromium`);
  dir = mkdtempSync(join(tmpdir(), 'bs-react-'));
  server = await startServer({ port: await freePort(), dbPath: join(dir, 'r.db'), secret: SECRET });
  page = await serve(0);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  await browser?.close();
  await page?.stop();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
});

const token = () => signToken(SECRET, { sub: 'react-user', tenant: 'react', exp: Math.floor(Date.now() / 1000) + 3600 });

test('the React example renders live rows and status through the hooks', async () => {
  const context = await browser.newContext();
  try {
    const tab = await context.newPage();
    const errors = [];
    tab.on('pageerror', (e) => errors.push(e.message));
    await tab.goto(`${page.url}/#server=${encodeURIComponent(server.baseUrl)}&token=${token()}`);
    await tab.waitForSelector('#status[data-state="online"]', { timeout: TIMEOUT });
    await tab.waitForSelector('#list[data-count="0"]', { state: 'attached', timeout: TIMEOUT });

    // A local write renders at once and reaches the server.
    await tab.fill('#new', 'written in React');
    await tab.click('#add button');
    await tab.waitForSelector('#list li .title:text("written in React")', { timeout: TIMEOUT });
    await tab.waitForSelector('#status[data-queued="0"]', { timeout: TIMEOUT });
    const auth = { authorization: `Bearer ${token()}` };
    const snapshot = await (await fetch(`${server.baseUrl}/api/sync/snapshot?model=todo`, { headers: auth })).json();
    assert.deepEqual(snapshot.rows.map((r) => r.value.title), ['written in React']);

    // Another device's change arrives live and re-renders the row.
    const id = snapshot.rows[0].id;
    const push = await fetch(`${server.baseUrl}/api/sync/push`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        client_id: 'other-device',
        changes: [{ op_id: 'other-1', model: 'todo', pk: id, op: 'update', payload: { done: true }, updated_at: new Date().toISOString(), actor: 'other' }],
      }),
    });
    assert.equal(push.status, 200, await push.text());
    await tab.waitForSelector(`#list li.done[data-id="${id}"]`, { timeout: TIMEOUT });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
