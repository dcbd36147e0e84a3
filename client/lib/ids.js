/**
 * Time-ordered ids (UUID v7) for op ids and row ids.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/ids
 */
/**
 * A new UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then
 * random bits. Ids made later sort later, so the server's indexes take
 * them near one end instead of all over: the client uses them for op ids,
 * and they make good row ids too (a commit of changes with random keys
 * writes a page of the index per change; measured in docs/PERFORMANCE.md).
 *
 * @returns {string} e.g. `0192f1c4-5a3e-7b2c-9d10-3f6a2b8e4c71`
 */
export function uuidv7() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  const ms = Date.now();
  for (let i = 0; i < 6; i++) b[i] = Math.floor(ms / 2 ** (8 * (5 - i))) & 0xff;
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
