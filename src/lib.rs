//! better-sync: a local-first sync engine for Rust web backends.
//!
//! Clients write locally and sync in the background; the server keeps an
//! append-only operation log and current-state snapshots, resolves conflicts
//! with field-level last-writer-wins by hybrid logical clock, and serves the
//! protocol under a base path (default `/api/sync`).
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use better_sync::{BetterSync, Conflict, SeaOrmStorage, auth::Jwt};
//!
//! let sync = BetterSync::builder()
//!     .base_path("/api/sync")
//!     .storage(SeaOrmStorage::open("sqlite://data.db?mode=rwc").await?)
//!     .auth(Jwt::hs256(b"a-long-random-secret"))
//!     .conflict(Conflict::Lww)
//!     .models(["todo"])
//!     .can_read(|_ctx, _model, _row| true)
//!     .can_write(|_ctx, _model, _change| true)
//!     .build()?;
//! // axum: Router::new().layer(better_sync_tower::BetterSyncLayer::new(sync))
//! # Ok(()) }
//! ```
//!
//! The tables come from the `migration` crate
//! (`DATABASE_URL=sqlite://data.db?mode=rwc cargo run -p migration -- up`);
//! the library never migrates at runtime. The wire protocol is documented in
//! `docs/PROTOCOL.md` and served as OpenAPI at `B/openapi.json`.

mod access;
mod api;
pub mod auth;
mod cursor;
mod engine;
pub mod error;
mod http;
mod inspect;
mod lifecycle;
mod limits;
mod live;
mod materialize;
mod model;
mod retention;
pub mod shape;
pub mod storage;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod write;
mod ws;

pub use better_sync_core::{conflict, hlc, protocol};

pub use crate::access::{WriteCheck, WriteDecision};
pub use crate::api::{AppWriter, BetterSync, BetterSyncBuilder};
pub use crate::auth::{AuthRequest, Authenticator, Ctx, Identity};
pub use crate::conflict::{Conflict, RowState, Stamp};
pub use crate::engine::PullOptions;
pub use crate::error::{BuildError, ErrorCode, SyncError};
pub use crate::hlc::Hlc;
pub use crate::http::cors::Cors;
pub use crate::http::ratelimit::{RateKey, RateLimit};
pub use crate::lifecycle::ShutdownReport;
pub use crate::limits::Limits;
pub use crate::materialize::Materialize;
pub use crate::model::{ModelOptions, UpgradeFn, WireSerializer};
pub use crate::retention::{CompactionReport, ErasureReport, RetentionPolicy};
pub use crate::storage::{SeaOrmStorage, Storage, StorageError};
/// Derive this for a typed model's Rust type (`#[derive(JsonSchema)]`).
pub use schemars::JsonSchema;

/// Re-export of the SeaORM version the storage is built on.
pub use sea_orm;

/// What framework adapters (`better-sync-tower`, `better-sync-actix`, or
/// your own) use to serve the engine: the body type of its answers, the
/// WebSocket frame and handshake types, the route table, and the client
/// address extension that per-address rate limits read. Apps that mount
/// an adapter need none of it.
pub mod adapter {
    pub use crate::http::ratelimit::ClientAddr;
    pub use crate::http::routes::{ROUTES, Route, RouteKind, route_of, strip_base};
    pub use crate::http::{BoxError, SyncBody, error_response};
    pub use crate::ws::{WsAccept, WsFrame, accept_key, is_websocket_upgrade};
}

// The README's Rust blocks compile as doctests: what it tells a new user
// to write works.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
