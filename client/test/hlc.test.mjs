// The hybrid logical clock: the same acceptance, canonical form, order and
// generator semantics as src/hlc.rs (its tests are ported case by case).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHlc, formatHlc, canonicalHlc, compareHlc, HlcClock, MAX_COUNTER } from '../better-sync.js';

test('parses plain ISO and canonical forms (hlc.rs parses_plain_and_canonical_forms)', () => {
  const cases = [
    ['2026-11-25T10:00:00Z', '2026-11-25T10:00:00.000Z-0000'],
    ['2026-11-25T10:00:00.123Z', '2026-11-25T10:00:00.123Z-0000'],
    ['2026-11-25T10:00:00.123456Z', '2026-11-25T10:00:00.123Z-0000'],
    ['2026-11-25T11:00:00.5+01:00', '2026-11-25T10:00:00.500Z-0000'],
    ['2026-11-25T09:00:00.000-01:00', '2026-11-25T10:00:00.000Z-0000'],
    ['2026-11-25T10:00:00.123Z-00ff', '2026-11-25T10:00:00.123Z-00ff'],
    ['2026-11-25T10:00:00.123Z-1', '2026-11-25T10:00:00.123Z-0001'],
    // Also accepted by chrono's RFC 3339 parser.
    ['2026-11-25 10:00:00.000Z', '2026-11-25T10:00:00.000Z-0000'],
    ['2026-11-25t10:00:00.999z', '2026-11-25T10:00:00.999Z-0000'],
    ['2026-11-25T10:00:00.123Z-00FF', '2026-11-25T10:00:00.123Z-00ff'],
    ['2026-11-25T10:00:00.9999999999Z', '2026-11-25T10:00:00.999Z-0000'],
    ['2026-12-31T23:59:60.500Z', '2027-01-01T00:00:00.500Z-0000'],
    ['2024-02-29T00:00:00+23:59', '2024-02-28T00:01:00.000Z-0000'],
    ['0001-01-01T00:00:00Z', '0001-01-01T00:00:00.000Z-0000'],
  ];
  for (const [input, canonical] of cases) {
    assert.equal(canonicalHlc(input), canonical, input);
    assert.deepEqual(parseHlc(canonical), parseHlc(input), input);
  }
  // A browser's toISOString() is a valid clock with counter 0.
  const now = new Date();
  assert.deepEqual(parseHlc(now.toISOString()), { millis: now.getTime(), counter: 0 });
});

test('rejects what the server rejects (hlc.rs rejects_garbage)', () => {
  for (const input of [
    '',
    'yesterday',
    '2026-11-25',
    '2026-13-25T10:00:00Z',
    '2026-11-25T10:00:00Z-zzzz',
    '2026-11-25T10:00:00Z-00001',
    '2026-11-25T10:00:00Z-',
    '2026-11-25T10:00:00',
    '２０２６-11-25T10:00:00Z',
    // More of the documented rules.
    '2026-11-25T10:00:00+01:00-0001',
    '2026-11-25T10:00:00z-0001',
    '2026-02-29T10:00:00Z',
    '2026-11-25T24:00:00Z',
    '2026-11-25T10:00:00.Z',
    '2026-11-25T10:00:00+24:00',
    '2026-11-25T10:00:00+01:60',
    '2026-11-25T10:00:00+0100',
    `2026-11-25T10:00:00.${'1'.repeat(60)}Z`,
  ]) {
    assert.throws(() => parseHlc(input), { code: 'SYNC:INVALID_CHANGE' }, JSON.stringify(input));
  }
});

test('canonical text sorts like clocks (hlc.rs canonical_text_sorts_like_clocks)', () => {
  const clocks = [
    { millis: 1_700_000_000_000, counter: 3 },
    { millis: 1_700_000_000_000, counter: 0 },
    { millis: 1_700_000_000_001, counter: 0 },
    { millis: 1_699_999_999_999, counter: 0xffff },
    { millis: 1_700_000_000_000, counter: 0x10 },
  ];
  const texts = clocks.map(formatHlc).sort();
  const sorted = [...clocks].sort(compareHlc).map(formatHlc);
  assert.deepEqual(texts, sorted);
  assert.ok(compareHlc('2026-11-25T10:00:00.000Z', '2026-11-25T10:00:00.000Z-0001') < 0);
  assert.equal(compareHlc('2026-11-25T10:00:00Z', '2026-11-25T10:00:00.000Z-0000'), 0);
});

test('the clock is monotonic and observes remote clocks (hlc.rs clock_is_monotonic_and_observes_remote)', () => {
  const clock = new HlcClock();
  const a = clock.tick(1000);
  const b = clock.tick(1000);
  const c = clock.tick(999);
  assert.ok(compareHlc(a, b) < 0 && compareHlc(b, c) < 0);
  clock.observe({ millis: 5000, counter: 7 });
  assert.equal(clock.tick(1000), formatHlc({ millis: 5000, counter: 8 }));
  assert.equal(clock.tick(6000), formatHlc({ millis: 6000, counter: 0 }));
  clock.observe({ millis: 6000, counter: MAX_COUNTER });
  assert.equal(clock.tick(6000), formatHlc({ millis: 6001, counter: 0 }));
  // Observing an older clock changes nothing; a persisted reading is continued.
  clock.observe('1970-01-01T00:00:01.000Z-0000');
  assert.equal(clock.last, '1970-01-01T00:00:06.001Z-0000');
  const resumed = new HlcClock(clock.last);
  assert.equal(resumed.tick(0), '1970-01-01T00:00:06.001Z-0001');
  // Real ticks are canonical and strictly increasing.
  const live = new HlcClock();
  const ticks = Array.from({ length: 50 }, () => live.tick());
  for (let k = 1; k < ticks.length; k++) assert.ok(ticks[k - 1] < ticks[k]);
  assert.match(ticks[0], /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z-[0-9a-f]{4}$/);
});

test('offsets cannot carry a clock out of the years 0000-9999 (hlc.rs canonical_text_is_chronos_in_every_accepted_year)', () => {
  for (const edge of ['0000-01-01T00:00:00+01:00', '9999-12-31T23:30:00-01:00']) {
    assert.throws(() => parseHlc(edge), { code: 'SYNC:INVALID_CHANGE' }, edge);
  }
  assert.equal(canonicalHlc('0000-01-01T00:00:00-01:00'), '0000-01-01T01:00:00.000Z-0000');
});
