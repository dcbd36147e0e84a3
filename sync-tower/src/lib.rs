//! Tower middleware mounting the better-sync engine in axum, hyper or any tower stack.
//!
//! [`BetterSyncLayer`] answers every request under the engine's base path
//! (default `/api/sync`, matched by whole path segments) and forwards every
//! other request to the inner service untouched.
//!
//! # Example: axum
//!
//! ```no_run
//! # async fn run(sync: better_sync::BetterSync) {
//! use axum::{Router, routing::get};
//! use better_sync_tower::BetterSyncLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(BetterSyncLayer::new(sync));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! # Example: hyper
//!
//! Wrap any `tower::Service` and serve it with hyper-util's
//! `TowerToHyperService`; see `examples/hyper_server.rs`.

#![forbid(unsafe_code)]

mod body;
mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;
mod ws;

pub use crate::body::ResponseBody;
pub use crate::future::ResponseFuture;
pub use crate::layer::BetterSyncLayer;
pub use crate::service::BetterSyncService;
