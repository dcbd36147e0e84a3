//! better-sync mounted in an axum app with `BetterSyncLayer`.
//!
//! `cargo run --example axum_server` serves the sync protocol under
//! `/api/sync` beside the app's own routes, on a SQLite file by default.

mod support;

use axum::{Router, routing::get};
use better_sync_tower::BetterSyncLayer;

// glibc malloc spends much of a busy server's time on memory freed by
// another thread (the database driver's). mimalloc is built with its
// `no_thp` feature (Cargo.toml): see docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setup = support::setup("axum_server").await?;
    let sync = setup.sync.clone();
    let metrics = setup.metrics.clone();
    let app = Router::new()
        .route(
            "/",
            get(|| async { "better-sync axum example: the protocol is under /api/sync" }),
        )
        // The engine's metrics in Prometheus text.
        .route("/metrics", get(move || async move { metrics.render() }))
        .layer(BetterSyncLayer::new(sync.clone()));
    let listener = tokio::net::TcpListener::bind(&setup.bind).await?;
    println!(
        "[axum_server] listening on http://{}",
        listener.local_addr()?
    );
    // Live frames are small: send them without waiting for the peer's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(support::drain_on_signal("axum_server", sync))
        .await?;
    Ok(())
}
