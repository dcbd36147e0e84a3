//! What the client reports: events for a metrics hook, and queue statistics.

use std::time::Duration;

use better_sync_core::protocol::Change as WireChange;

use crate::error::ClientError;

/// How live changes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveMode {
    /// A WebSocket subscription.
    WebSocket,
    /// HTTP long-poll (`GET B/pull?wait=S`).
    LongPoll,
}

/// Where pulled changes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullSource {
    /// `GET B/pull`.
    Http,
    /// A WebSocket `changes` message.
    WebSocket,
    /// `GET B/snapshot` pages (bootstrap).
    Snapshot,
}

/// One thing that happened, for the hook set with
/// [`crate::ClientBuilder::on_event`]: feed it to metrics or logs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A batch of the outbox was acknowledged by the server.
    Push {
        /// Changes in the batch.
        changes: usize,
        /// Of those, how many the server had already applied (replays).
        duplicates: usize,
        /// Round trip of the push request.
        duration: Duration,
    },
    /// Remote changes (or snapshot rows) were folded into local state.
    Pull {
        /// Changes (or rows) received.
        changes: usize,
        /// How they arrived.
        source: PullSource,
    },
    /// A remote change of another replica arrived for a row with local
    /// changes still queued: both are kept field by field, last writer wins.
    Conflict {
        /// The row's model.
        model: String,
        /// The row's primary key.
        pk: String,
        /// The remote change's op id.
        op_id: String,
        /// Whether the remote change lost on every field it wrote.
        remote_lost: bool,
    },
    /// An operation failed and will be retried after `delay`.
    Retry {
        /// `"push"` or `"sync"`.
        operation: &'static str,
        /// Consecutive failures so far.
        attempt: u32,
        /// Wait before the next attempt.
        delay: Duration,
        /// The failure.
        error: ClientError,
    },
    /// The server refused a queued change for good; it left the outbox, and
    /// the next sync round (at once when connected) rebuilds local state
    /// without it (see [`crate::SyncClient::rejected`]).
    Rejected {
        /// The change.
        change: WireChange,
        /// The server's answer.
        error: ClientError,
    },
    /// The client caught up with the server (every change up to `cursor`).
    Synced {
        /// The position.
        cursor: String,
    },
    /// Live changes now arrive this way.
    Live(LiveMode),
    /// The server became reachable (`true`) or unreachable (`false`).
    Online(bool),
    /// The server refused the credentials (`ok: false`: renew the token;
    /// queued changes stay queued), or took them again (`ok: true`).
    Auth {
        /// Whether requests are accepted again.
        ok: bool,
        /// The refusal, when `ok` is false.
        error: Option<ClientError>,
    },
    /// The cursor is not valid at the server any more (its data was reset
    /// or compacted): local state is rebuilt from snapshots, the outbox kept.
    Resync {
        /// The `SYNC:*` code that said so.
        reason: String,
    },
    /// The server cannot serve the model versions this client announced
    /// (`SYNC:VERSION_UNSUPPORTED`): the app (or the server) needs an
    /// update. Syncing keeps trying with back-off; the queue is kept.
    VersionUnsupported {
        /// The server's answer (`meta`: model, version, current, oldest).
        error: ClientError,
    },
    /// The outbox changed size.
    Outbox {
        /// Changes queued now.
        queued: usize,
    },
    /// A shape subscription caught up: every row it holds now is in
    /// local state (after a subscription, a reconnection, or a reset).
    ShapeSynced {
        /// The shape's name.
        name: String,
        /// Its parameters.
        params: serde_json::Value,
    },
    /// The server refused a shape subscription (an unknown shape, missing
    /// or mistyped parameters): it was dropped, with the rows only it held.
    ShapeRefused {
        /// The shape's name.
        name: String,
        /// Its parameters.
        params: serde_json::Value,
        /// What the server said (`SYNC:UNKNOWN_SHAPE`,
        /// `SYNC:INVALID_SHAPE_PARAMS`).
        error: ClientError,
    },
}

/// The outbox and connection, as [`crate::SyncClient::queue_stats`] reports them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Changes waiting in the outbox (including those in flight).
    pub queued: usize,
    /// Changes in the push request under way.
    pub in_flight: usize,
    /// Changes the server refused for good (kept, the last 100).
    pub rejected: usize,
    /// Whether the last request reached the server.
    pub online: bool,
    /// The cursor local state is at.
    pub cursor: Option<String>,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<ClientError>,
    /// How live changes arrive, while connected.
    pub live: Option<LiveMode>,
    /// The server refused the credentials and no request has succeeded since.
    pub auth_failed: bool,
    /// The server cannot serve this client's model versions and no request
    /// has succeeded since.
    pub version_unsupported: bool,
}
