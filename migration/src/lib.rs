//! The `migration` package of this repository: better-sync's migrations
//! (re-exported from the publishable `better-sync-migration`) and their
//! command line, so that `cargo run -p migration -- up` works here.
//! Apps depend on `better-sync-migration` instead.

pub use better_sync_migration::*;
