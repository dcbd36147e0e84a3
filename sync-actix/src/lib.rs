//! actix-web adapter for better-sync: the whole protocol, WebSocket included,
//! as one `Scope`.
//!
//! # Example
//!
//! ```no_run
//! # fn f(sync: better_sync::BetterSync) {
//! use actix_web::{App, HttpServer};
//! let server = HttpServer::new(move || {
//!     App::new().service(better_sync_actix::sync_scope(sync.clone()))
//! });
//! # }
//! ```
//!
//! The adapter only translates requests, responses and WebSocket frames;
//! all protocol logic is the engine's.

#![forbid(unsafe_code)]

mod convert;
mod scope;
mod ws;

pub use crate::scope::{configure, sync_scope};
pub use better_sync::BetterSync;
