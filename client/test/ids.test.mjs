// Op ids and row ids: UUID version 7, ordered by creation time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { uuidv7 } from '../better-sync.js';

const FORMAT = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('uuidv7 has the RFC 9562 layout and carries the time', () => {
  const before = Date.now();
  const id = uuidv7();
  const after = Date.now();
  assert.match(id, FORMAT);
  const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
  assert.ok(before <= ms && ms <= after, `${ms} not in [${before}, ${after}]`);
});

test('uuidv7 ids made later sort later, and do not repeat', async () => {
  const ids = [];
  for (let i = 0; i < 5; i++) {
    ids.push(uuidv7());
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.deepEqual([...ids].sort(), ids);
  const many = new Set(Array.from({ length: 10000 }, () => uuidv7()));
  assert.equal(many.size, 10000);
});

test('uuidv7 encodes every byte of a large timestamp', () => {
  const now = Date.now;
  try {
    // 0x0102_0102_0304 ms: the bytes above bit 32 must survive.
    Date.now = () => 2 ** 40 + 2 ** 33 + 0x01020304;
    assert.equal(uuidv7().slice(0, 13), '01020102-0304');
  } finally {
    Date.now = now;
  }
});
