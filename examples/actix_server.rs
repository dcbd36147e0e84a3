//! better-sync mounted in an actix-web app with `sync_scope`.
//!
//! `cargo run --example actix_server`: `/` is the app's own route, the whole
//! protocol (WebSocket included) is under `/api/sync`.

mod support;

use actix_web::{App, HttpServer, web};

// glibc malloc spends much of a busy server's time on memory freed by
// another thread (the database driver's). mimalloc is built with its
// `no_thp` feature (Cargo.toml): see docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Setup (migrations, engine) runs on tokio; actix-web then runs its own
    // runtime. The engine's background tasks run on actix's workers.
    let rt = tokio::runtime::Runtime::new()?;
    let setup = rt.block_on(support::setup("actix_server"))?;
    let bind = setup.bind.clone();
    let sync = setup.sync;
    let drain = sync.clone();
    let metrics = setup.metrics;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            App::new()
                .route(
                    "/",
                    web::get().to(|| async {
                        "better-sync actix example: the protocol is under /api/sync"
                    }),
                )
                // The engine's metrics in Prometheus text.
                .route(
                    "/metrics",
                    web::get().to(move || {
                        let text = metrics.render();
                        async move { text }
                    }),
                )
                .service(better_sync_actix::sync_scope(sync.clone()))
        })
        // The engine drains first (below), then the server stops.
        .disable_signals()
        .bind(&bind)?;
        println!("[actix_server] listening on http://{bind}");
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            support::drain_on_signal("actix_server", drain).await;
            handle.stop(true).await;
        });
        server.await
    })?;
    drop(rt);
    Ok(())
}
