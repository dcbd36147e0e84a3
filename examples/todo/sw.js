// The todo page's service worker: the page works from a cold reload while
// offline. It keeps the app shell (the page, its config, the client
// modules) and serves it network-first: online, every load is fresh (a new
// server's page, a new token); offline, or with the server down, the last
// copy. The sync routes (push, pull, snapshot, WebSocket) are never
// touched: the client's outbox and IndexedDB do the offline part there.
const CACHE = 'todo-shell-v2';
const BASE = '/api/sync';
const MODULES = ['client', 'conflict', 'errors', 'hlc', 'ids', 'query', 'shapes', 'storage', 'transport', 'util'];
const SHELL = ['/', '/config.json', `${BASE}/client.js`, ...MODULES.map((m) => `${BASE}/lib/${m}.js`)];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  // Each user's config (`/config.json?user=alice`) is kept apart.
  const key = url.pathname === '/config.json' ? url.pathname + url.search : url.pathname;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)));
        }
        return response;
      })
      .catch(async () => (await caches.match(key)) ?? Response.error()),
  );
});
