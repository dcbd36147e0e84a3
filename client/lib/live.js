// Live values over a sync client, for the framework bindings: a query's
// rows and the client's status, each as a subscribable source that starts
// listening with its first subscriber and stops with its last.

/** Events after which the queue statistics may have changed. */
const STATUS_EVENTS = ['status', 'auth', 'version', 'retry', 'outbox', 'live', 'synced', 'error', 'resync', 'rejected'];

/**
 * A source of values: `subscribe(listener)` returns an unsubscribe
 * function, `current()` the latest value (`undefined` until the first).
 * @template T
 * @param {(set: (value: T) => void) => () => void} start begins listening; returns how to stop
 */
function source(start) {
  /** @type {T | undefined} */
  let value;
  /** @type {Set<(value: T) => void>} */
  const listeners = new Set();
  /** @type {(() => void) | null} */
  let stop = null;
  /** @param {T} next */
  const set = (next) => {
    value = next;
    for (const listener of [...listeners]) listener(next);
  };
  return {
    current: () => value,
    /** @param {(value: T) => void} listener */
    subscribe(listener) {
      listeners.add(listener);
      if (listeners.size === 1) stop = start(set);
      return () => {
        if (!listeners.delete(listener) || listeners.size > 0) return;
        stop?.();
        stop = null;
      };
    },
  };
}

/**
 * The rows of a live query (what `subscribeQuery` reports).
 * @param {import('../better-sync.js').SyncClient} sync
 * @param {import('../better-sync.js').QuerySpec} spec
 */
export function querySource(sync, spec) {
  return source((set) => sync.subscribeQuery(spec, set));
}

/**
 * The client's queue statistics (`getQueueStats()`), read again after every
 * event that may change them.
 * @param {import('../better-sync.js').SyncClient} sync
 */
export function statusSource(sync) {
  return source((set) => {
    let stopped = false;
    // Reads may finish out of order: only the latest one is reported.
    let asked = 0;
    const read = () => {
      const n = ++asked;
      sync.getQueueStats().then(
        (stats) => {
          if (!stopped && n === asked) set(stats);
        },
        () => {},
      );
    };
    const offs = STATUS_EVENTS.map((type) => sync.on(type, read));
    read();
    return () => {
      stopped = true;
      for (const off of offs) off();
    };
  });
}
