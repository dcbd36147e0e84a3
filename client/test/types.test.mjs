// The models' TypeScript declarations a server generates (GET B/models.d.ts)
// compile under `tsc --strict` and type an app's rows: taken from the todo
// example, whose todo is a typed model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startServer, TODO_BIN } from '../testing/server.mjs';

const skip = existsSync(TODO_BIN) ? false : `no todo example at ${TODO_BIN} (cargo build --examples)`;
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

let dir;
let server;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'better-sync-types-'));
  server = await startServer({ port: await freePort(), dbPath: join(dir, 't.db'), secret: 'types-test-secret', bin: TODO_BIN, ready: 'open http://' });
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the server declares its typed models for TypeScript, and they type rows', { skip }, async () => {
  const res = await fetch(`${server.baseUrl}/api/sync/models.d.ts`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /typescript/);
  const text = await res.text();
  assert.match(text, /export interface Todo \{/);
  assert.doesNotMatch(text, /tenant_id/, 'the server-filled field is not the client\'s');
  writeFileSync(join(dir, 'models.d.ts'), text);
  writeFileSync(
    join(dir, 'app.ts'),
    `import type { Todo, Models } from './models';
import { modelVersions } from './models';
export const todo: Todo = { id: 'a', title: 'milk', done: false, created_at: '2026-12-03T00:00:00Z' };
export const byName: Models['todo'] = todo;
export const version: 1 = modelVersions.todo;
// @ts-expect-error: done is a boolean
export const wrongType: Todo = { id: 'a', title: 'milk', done: 'no', created_at: '' };
// @ts-expect-error: title is required
export const missing: Todo = { id: 'a', done: false, created_at: '' };
// @ts-expect-error: no such field
export const unknown: Todo = { id: 'a', title: 'milk', done: false, created_at: '', colour: 'red' };
`,
  );
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'esnext', '--moduleResolution', 'bundler', join(dir, 'app.ts')], { encoding: 'utf8' });
  } catch (e) {
    assert.fail(`tsc refused the declarations:\n${e.stdout}\n${e.stderr}\n--- models.d.ts ---\n${text}`);
  }
});
