/**
 * Errors: `SyncError` with the server's `SYNC:*` codes.
 *
 * Part of the better-sync browser client (`client/better-sync.js`).
 * @module better-sync/errors
 */
/**
 * An error of the sync client. `code` is the server's `SYNC:*` code when the
 * server answered with one, or one of the client's own codes:
 * `NETWORK` (server unreachable, timeout, socket failure), `BAD_RESPONSE`
 * (an answer that is not the protocol), `ABORTED` (the client disconnected),
 * `CLIENT_ERROR` (an unexpected local failure, e.g. of storage).
 * Local validation failures of {@link SyncClient.applyChange} use the server's
 * codes `SYNC:INVALID_CHANGE` and `SYNC:UNKNOWN_MODEL` with `status` 0.
 */
export class SyncError extends Error {
  /**
   * @param {string} code machine-readable code
   * @param {string} message human-readable explanation
   * @param {{ status?: number, meta?: Record<string, unknown> | null, retryAfterMs?: number | null, cause?: unknown }} [init]
   */
  constructor(code, message, init = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'SyncError';
    /** @type {string} */
    this.code = code;
    /** HTTP status of the answer, 0 when there was none. @type {number} */
    this.status = init.status ?? 0;
    /** The answer's `meta` (`index`, `op_id`, `field`, `max`, `retryAfterMs`). @type {Record<string, unknown> | null} */
    this.meta = init.meta ?? null;
    /** Delay the server asked for before retrying, in ms. @type {number | null} */
    this.retryAfterMs = init.retryAfterMs ?? null;
  }
}

/** @param {unknown} e @returns {SyncError} */
export function asSyncError(e) {
  if (e instanceof SyncError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new SyncError('CLIENT_ERROR', message, { cause: e });
}
