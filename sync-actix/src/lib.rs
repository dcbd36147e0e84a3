//! actix-web adapter for better-sync (the `sync_scope` lands with the realtime issue).

#![forbid(unsafe_code)]

pub use better_sync::BetterSync;
