//! better-sync's Rust client: local-first rows with a persistent outbox,
//! synced with a better-sync server in the background.
//!
//! Writes go to the local store (SQLite or memory) with an outbox entry, in
//! one transaction, and return at once. A push loop sends the outbox in
//! batches (at most 1,000 changes or 256 KiB) and retries failures with
//! jittered exponential backoff (250 ms up to 30 s). A sync loop bootstraps
//! from snapshots, then follows live changes over a WebSocket (or HTTP
//! long-poll) and folds them in with the server's own field-level
//! last-writer-wins join, so local state equals server state once synced.
//! The outbox, rows, cursor and clock survive restarts.
//!
//! ```no_run
//! # async fn run() -> Result<(), better_sync_client::ClientError> {
//! use better_sync_client::{Auth, Change, Filter, Storage, SyncClient};
//! use serde_json::json;
//!
//! let sync = SyncClient::builder()
//!     .base_url("http://127.0.0.1:3000")
//!     .models(["todo"])
//!     .storage(Storage::sqlite("todo-sync.db"))
//!     .auth(Auth::bearer("a JWT"))
//!     .on_event(|e| tracing::debug!(?e, "sync"))
//!     .build()
//!     .await?;
//! sync.connect();
//! sync.apply_change("todo", Change::insert("1", json!({"id": "1", "title": "Write docs", "done": false})))
//!     .await?;
//! let mut open = sync.subscribe_query("todo", Filter::eq("done", false));
//! let rows = open.next().await;
//! # Ok(()) }
//! ```
//!
//! The wire protocol is `docs/PROTOCOL.md` of the repository; [`Remote`]
//! speaks it directly for tools that need no local state.

mod auth;
mod backoff;
mod builder;
mod change;
mod client;
mod error;
mod events;
mod options;
mod remote;
mod store;
mod typed;

pub use crate::auth::Auth;
pub use crate::builder::ClientBuilder;
pub use crate::change::{Change, Filter, Row};
pub use crate::client::{LiveQuery, Rejected, SyncClient};
pub use crate::error::{ClientError, codes};
pub use crate::events::{Event, LiveMode, PullSource, QueueStats};
pub use crate::options::Transport;
pub use crate::remote::{LiveMessage, Metadata, Remote, ServerLimits, ShapePage, Subscription};
pub use crate::store::Storage;
pub use crate::typed::TypedModel;
pub use better_sync_core::protocol::{Change as WireChange, Op, PulledChange};
pub use better_sync_core::{Conflict, protocol};
