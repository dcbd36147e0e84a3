//! The todo app: a local-first web page syncing between tabs and browsers.
//!
//! `cargo run --example todo`, then open http://127.0.0.1:3000 in two tabs.
//! The page uses the browser client served by the engine at
//! `/api/sync/client.js`, stores todos in IndexedDB (it works offline) and
//! syncs over WebSocket, falling back to HTTP long-poll.
//!
//! Every visitor is the demo user of the demo tenant: `/config.json` hands
//! out a token signed with the server's secret. That is a development
//! convenience only; a real app issues tokens from its own login.

#[path = "../support/mod.rs"]
mod support;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::{Json, Router, routing::get};
use better_sync::testing::dev_token;
use better_sync_tower::BetterSyncLayer;
use serde_json::json;

const PAGE: &str = include_str!("index.html");
/// The service worker that lets the page load offline.
const SERVICE_WORKER: &str = include_str!("sw.js");

// glibc malloc spends much of a busy server's time on memory freed by
// another thread (the database driver's); see docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setup = support::setup("todo").await?;
    let sync = setup.sync.clone();
    let secret = setup.secret.clone();
    let metrics = setup.metrics.clone();
    let app =
        Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route(
                "/sw.js",
                get(|| async {
                    (
                        [
                            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                            // Browsers check for a new worker on every load.
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        SERVICE_WORKER,
                    )
                }),
            )
            // The engine's metrics in Prometheus text.
            .route("/metrics", get(move || async move { metrics.render() }))
            .route(
                "/config.json",
                get(move || {
                    // The tenant of the token printed at start: `curl .../pull` with it
                    // shows what the page wrote.
                    let token = dev_token(secret.as_bytes(), "dev-user", "dev-tenant", 24 * 3600);
                    async move {
                        Json(json!({ "token": token, "basePath": "/api/sync" })).into_response()
                    }
                }),
            )
            .layer(BetterSyncLayer::new(sync.clone()));
    let listener = tokio::net::TcpListener::bind(&setup.bind).await?;
    println!("[todo] open http://{} in two tabs", listener.local_addr()?);
    // Live frames are small: send them without waiting for the peer's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(support::drain_on_signal("todo", sync))
        .await?;
    Ok(())
}
