// The npm package: what `npm pack` would publish, and that every export
// resolves to a file in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

test('the package is publishable and ships the client, its types and the bindings', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.private, undefined, 'not private');
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: new URL('..', import.meta.url),
    encoding: 'utf8',
  }));
  const files = new Set(packed.files.map((f) => f.path));
  for (const [name, target] of Object.entries(pkg.exports)) {
    for (const file of typeof target === 'string' ? [target] : Object.values(target)) {
      assert.ok(files.has(file.replace(/^\.\//, '')), `${name}: ${file} is not in the package`);
    }
  }
  for (const file of ['README.md', 'lib/client.js', 'lib/live.js']) assert.ok(files.has(file), file);
  assert.ok(![...files].some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), 'no tests or dependencies');
});
