// The todo example in real headless Chromium (Debian's package, driven by
// playwright-core): two browsers converge, a browser edits offline and
// catches up, a reload keeps the data, concurrent edits of one todo converge.
// A failing test saves a screenshot of each page under target/e2e/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SERVER = process.env.TODO_BIN ?? join(ROOT, 'target/debug/examples/todo');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = join(ROOT, 'target/e2e');
const TIMEOUT = 20_000; // a safety limit, not a speed assertion

let server;
let browser;
let dir;
let base;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function startServer({ port, secret = 'e2e-secret-e2e-secret-e2e-secret-e2e', db = 'todo.db' } = {}) {
  port ??= await freePort();
  const child = spawn(SERVER, [], {
    env: {
      ...process.env,
      BIND: `127.0.0.1:${port}`,
      DATABASE_URL: `sqlite://${join(dir, db)}?mode=rwc`,
      JWT_SECRET: secret,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('open http://')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`todo server exited with ${code}: ${out}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

before(async () => {
  assert.ok(existsSync(SERVER), `missing ${SERVER}: run cargo build --example todo`);
  assert.ok(existsSync(CHROMIUM), `missing ${CHROMIUM}: apt-get install chromium`);
  dir = mkdtempSync(join(tmpdir(), 'bs-e2e-'));
  ({ child: server, url: base } = await startServer());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
});

/** A fresh browser profile (its own IndexedDB) with the app open and connected. */
async function openBrowser(user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(user ? `${base}/?user=${user}` : base);
  await page.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
  return { context, page };
}

/** Run `body` with pages; on failure, screenshot every page first. */
async function withPages(name, body) {
  const pages = [];
  const open = async (user) => {
    const b = await openBrowser(user);
    pages.push(b);
    return b;
  };
  try {
    await body(open);
  } catch (e) {
    mkdirSync(SHOTS, { recursive: true });
    for (const [i, { page }] of pages.entries()) {
      await page.screenshot({ path: join(SHOTS, `${name}-${i}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    for (const { context } of pages) await context.close().catch(() => {});
  }
}

/** Add a todo and wait until the page shows it (the write is local, the render async). */
async function addTodo(page, title) {
  await page.fill('#new', title);
  await page.click('#add button');
  await page.waitForFunction(
    (title) => [...document.querySelectorAll('#list li input.title')].some((e) => e.value === title),
    title,
    { timeout: TIMEOUT },
  );
}

function titles(page) {
  return page.$$eval('#list li input.title', (els) => els.map((e) => e.value));
}

async function waitForTitles(page, expected) {
  const want = [...expected].sort();
  await page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll('#list li input.title')].map((e) => e.value).sort();
      return JSON.stringify(got) === JSON.stringify(want);
    },
    want,
    { timeout: TIMEOUT },
  );
}

/** Edit a todo's title the way a user does: change the input, commit it. */
async function setTitle(page, from, to) {
  await page.evaluate(({ from, to }) => {
    const el = [...document.querySelectorAll('#list li input.title')].find((e) => e.value === from);
    if (!el) throw new Error(`no todo titled ${from}`);
    el.value = to;
    el.dispatchEvent(new Event('change'));
  }, { from, to });
}

test('two browsers converge live', async () => {
  await withPages('converge', async (open) => {
    const a = await open();
    const b = await open();
    await addTodo(a.page, 'buy milk');
    await addTodo(b.page, 'walk the dog');
    await waitForTitles(a.page, ['buy milk', 'walk the dog']);
    await waitForTitles(b.page, ['buy milk', 'walk the dog']);
    // Complete one in B, delete the other in A: both see both.
    await b.page.locator('#list li', { has: b.page.locator('input.title') }).first().locator('input.done').check();
    await a.page.waitForFunction(() => document.querySelectorAll('#list li.done').length === 1, null, { timeout: TIMEOUT });
    await a.page.evaluate(() => {
      const li = [...document.querySelectorAll('#list li')].find((l) => !l.classList.contains('done'));
      li.querySelector('button.delete').click();
    });
    await b.page.waitForFunction(() => document.querySelectorAll('#list li').length === 1, null, { timeout: TIMEOUT });
    assert.equal((await titles(a.page)).length, 1);
    // The server's own table (materialized in each commit, counted by its
    // GET /stats with plain SeaORM) agrees with what the page shows.
    await a.page.waitForFunction(() => {
      const c = document.getElementById('counts').dataset;
      const done = document.querySelectorAll('#list li.done').length;
      const open = document.querySelectorAll('#list li').length - done;
      return c.open === String(open) && c.done === String(done);
    }, null, { timeout: TIMEOUT });
  });
});

test('offline edits are queued and reach the other browser when back online', async () => {
  await withPages('offline', async (open) => {
    const a = await open();
    const b = await open();
    const before = await titles(a.page);
    await a.context.setOffline(true);
    await addTodo(a.page, 'offline one');
    await addTodo(a.page, 'offline two');
    await setTitle(a.page, 'offline two', 'offline two, edited');
    // Written locally at once, queued, not yet on the other browser.
    await waitForTitles(a.page, [...before, 'offline one', 'offline two, edited']);
    await a.page.waitForSelector('#status[data-online="false"]', { timeout: TIMEOUT });
    await a.page.waitForFunction(() => Number(document.querySelector('#status').dataset.queued) >= 3, null, { timeout: TIMEOUT });
    assert.deepEqual((await titles(b.page)).sort(), [...before].sort());
    await a.context.setOffline(false);
    await waitForTitles(b.page, [...before, 'offline one', 'offline two, edited']);
    await a.page.waitForSelector('#status[data-queued="0"]', { timeout: TIMEOUT });
  });
});

test('a reload keeps the data', async () => {
  await withPages('reload', async (open) => {
    const a = await open();
    await addTodo(a.page, 'survives reload');
    const all = await titles(a.page);
    await a.page.waitForSelector('#status[data-queued="0"]', { timeout: TIMEOUT });
    await a.page.reload();
    await waitForTitles(a.page, all);
    // The rows are in this browser's IndexedDB, not only on the server.
    const stored = await a.page.evaluate(async () => (await window.sync.query({ model: 'todo' })).map((t) => t.title));
    assert.ok(stored.includes('survives reload'), JSON.stringify(stored));
  });
});

test('concurrent edits of one todo converge in both browsers', async () => {
  await withPages('concurrent', async (open) => {
    const a = await open();
    const b = await open();
    await addTodo(a.page, 'contested');
    await waitForTitles(b.page, await titles(a.page));
    await a.context.setOffline(true);
    await b.context.setOffline(true);
    await setTitle(a.page, 'contested', 'edited by A');
    await new Promise((r) => setTimeout(r, 50));
    await setTitle(b.page, 'contested', 'edited by B (later)');
    // Also a different field in A: both edits must survive.
    await a.page.evaluate(() => {
      const li = [...document.querySelectorAll('#list li')].find((l) => l.querySelector('input.title').value === 'edited by A');
      const box = li.querySelector('input.done');
      box.checked = true;
      box.dispatchEvent(new Event('change'));
    });
    await a.context.setOffline(false);
    await b.context.setOffline(false);
    for (const { page } of [a, b]) {
      await page.waitForFunction(() => {
        const li = [...document.querySelectorAll('#list li')].find((l) => l.querySelector('input.title').value.startsWith('edited by'));
        return li && li.querySelector('input.title').value === 'edited by B (later)' && li.classList.contains('done');
      }, null, { timeout: TIMEOUT });
    }
  });
});

test('a server restarted with a new secret: the page renews its token and nothing is lost', async () => {
  await withPages('new-secret', async (open) => {
    const a = await open();
    await a.page.evaluate(() => {
      window.authEvents = [];
      window.sync.on('auth', (e) => window.authEvents.push(e.ok));
    });
    // SIGTERM: the server drains and exits; a new one takes the port with
    // another secret, so the page's token is refused.
    const port = Number(new URL(base).port);
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
    ({ child: server } = await startServer({ port, secret: 'another-secret-another-secret-another' }));
    await addTodo(a.page, 'after the restart');
    // The push was refused, the page fetched a new token, the push went through.
    await a.page.waitForFunction(() => (window.tokenRefreshes ?? 0) >= 1, null, { timeout: TIMEOUT });
    await a.page.waitForSelector('#status[data-queued="0"][data-state="online"]', { timeout: TIMEOUT });
    // Renewed before anything was reported as failed, or recovered since.
    const events = await a.page.evaluate(() => window.authEvents);
    assert.ok(events.length === 0 || events.at(-1) === true, JSON.stringify(events));
    // The change is on the server: a fresh browser sees it.
    const b = await open();
    await waitForTitles(b.page, await titles(a.page));
    assert.ok((await titles(b.page)).includes('after the restart'));
  });
});

test('typing into a title while another browser adds and edits todos loses no keystroke and keeps focus', async () => {
  await withPages('typing', async (open) => {
    const a = await open();
    const b = await open();
    const earlier = await titles(a.page);
    await addTodo(a.page, 'typing target');
    await addTodo(a.page, 'neighbour');
    await waitForTitles(b.page, await titles(a.page));
    // Focus the target's title (the oldest todo of this page) at its end.
    const handle = await a.page.evaluateHandle(() =>
      [...document.querySelectorAll('#list li input.title')].find((e) => e.value === 'typing target'));
    await handle.asElement().click();
    await a.page.keyboard.press('End');
    await a.page.keyboard.type(' one', { delay: 20 });
    // Meanwhile the other browser adds todos and edits the neighbour.
    await addTodo(b.page, 'added while typing 1');
    await setTitle(b.page, 'neighbour', 'neighbour, edited');
    await addTodo(b.page, 'added while typing 2');
    await waitForTitles(a.page, [...earlier, 'typing target one', 'neighbour, edited', 'added while typing 1', 'added while typing 2']);
    assert.ok(await a.page.evaluate((el) => document.activeElement === el, handle), 'focus stayed in the title');
    await a.page.keyboard.type(' two', { delay: 20 });
    await a.page.keyboard.press('Tab'); // commits the edit
    await waitForTitles(b.page, [...earlier, 'typing target one two', 'neighbour, edited', 'added while typing 1', 'added while typing 2']);
    assert.ok((await titles(a.page)).includes('typing target one two'));
  });
});

test('a cold reload works with the server down, through the service worker, and what is written then arrives', async () => {
  const port = await freePort();
  let own = await startServer({ port, db: 'cold-reload.db' });
  const stop = async () => {
    const exited = new Promise((resolve) => own.child.once('exit', resolve));
    own.child.kill();
    await exited;
  };
  const context = await browser.newContext();
  const other = await browser.newContext();
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error('page error:', e.message));
    await page.goto(own.url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
    // The worker is installed (the shell cached) and controls the page.
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: TIMEOUT });
    await addTodo(page, 'before the outage');
    await page.waitForSelector('#status[data-queued="0"]', { timeout: TIMEOUT });

    // The server is gone: a reload still shows the page and the data.
    await stop();
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
    await waitForTitles(page, ['before the outage']);
    await page.waitForSelector('#status[data-online="false"]', { timeout: TIMEOUT });
    await addTodo(page, 'written while down');
    await page.waitForFunction(() => Number(document.querySelector('#status').dataset.queued) >= 1, null, { timeout: TIMEOUT });

    // Back: the queued write goes out and another browser sees both.
    own = await startServer({ port, db: 'cold-reload.db' });
    await page.waitForSelector('#status[data-queued="0"]', { timeout: TIMEOUT });
    const second = await other.newPage();
    await second.goto(own.url);
    await second.waitForSelector('body[data-ready="true"]', { timeout: TIMEOUT });
    await waitForTitles(second, ['before the outage', 'written while down']);
  } catch (e) {
    mkdirSync(SHOTS, { recursive: true });
    for (const [i, p] of [...context.pages(), ...other.pages()].entries()) {
      await p.screenshot({ path: join(SHOTS, `cold-reload-${i}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    await context.close().catch(() => {});
    await other.close().catch(() => {});
    own.child.kill();
  }
});

/** The names of the lists a page shows. */
function listNames(page) {
  return page.$$eval('#lists li button.open', (els) => els.map((e) => e.textContent).sort());
}

async function waitForLists(page, expected) {
  const want = [...expected].sort();
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('#lists li button.open')].map((e) => e.textContent).sort()) === JSON.stringify(want),
    want,
    { timeout: TIMEOUT },
  );
}

/** Open a list by its name. */
async function openList(page, name) {
  // The list's row renders after the write that made it (the query is async).
  await page.waitForFunction((name) => [...document.querySelectorAll('#lists li button.open')].some((e) => e.textContent === name), name, { timeout: TIMEOUT });
  await page.evaluate((name) => [...document.querySelectorAll('#lists li button.open')].find((e) => e.textContent === name).click(), name);
  await page.waitForFunction((name) => document.getElementById('list-name').textContent === name, name, { timeout: TIMEOUT });
}

test('a list shared with a member appears on their screen, and removing them takes it away live', async () => {
  await withPages('sharing', async (open) => {
    const { page: alice } = await open('alice');
    const { page: bob } = await open('bob');
    await waitForLists(alice, ['Inbox']);
    await waitForLists(bob, ['Inbox']);
    // Alice makes a list, fills it and shares it with bob.
    await alice.fill('#new-list', 'Groceries');
    await alice.click('#add-list button');
    await openList(alice, 'Groceries');
    await addTodo(alice, 'milk');
    await alice.fill('#share-user', 'bob');
    await alice.click('#share button');
    // Bob sees it, and its todo, and writes into it.
    await waitForLists(bob, ['Groceries', 'Inbox']);
    await openList(bob, 'Groceries');
    await waitForTitles(bob, ['milk']);
    await addTodo(bob, 'bread');
    await waitForTitles(alice, ['bread', 'milk']);
    await alice.waitForFunction(() => [...document.querySelectorAll('#members li')].map((e) => e.dataset.user).join(',') === 'alice,bob', null, { timeout: TIMEOUT });
    // Alice's inbox never reaches bob, nor bob's alice.
    await alice.evaluate(() => window.sync.applyChange('todo', { type: 'insert', id: 'private-a', value: { id: 'private-a', title: 'alice only', done: false, created_at: new Date().toISOString(), list_id: 'inbox-alice' } }));
    await alice.evaluate(() => window.sync.drain());
    // Removing bob takes the list off his screen, live, and its rows out of his store.
    await alice.click('#members li[data-user="bob"] button.remove-member');
    await waitForLists(bob, ['Inbox']);
    await bob.waitForFunction(() => document.getElementById('list-name').textContent === 'Inbox', null, { timeout: TIMEOUT });
    await bob.waitForFunction(
      async () => (await window.sync.query({ model: 'todo' })).every((t) => t.list_id === 'inbox-bob') && (await window.sync.query({ model: 'list' })).length === 1,
      null,
      { timeout: TIMEOUT },
    );
    assert.deepEqual(await listNames(alice), ['Groceries', 'Inbox'], 'alice keeps her list');
    await waitForTitles(alice, ['bread', 'milk']);
  });
});
