//! better-sync around a plain hyper 1.x service, via tower and hyper-util.
//!
//! `cargo run --example hyper_server`: `/` is the app's own handler, every
//! request under `/api/sync` is the engine's.

mod support;

use std::convert::Infallible;

use better_sync_tower::BetterSyncLayer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::{Layer, service_fn};

/// The app's own routes: `/`, and the engine's metrics at `/metrics`.
async fn app(
    req: Request<Incoming>,
    metrics: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = match req.uri().path() {
        "/metrics" => Response::new(Full::new(Bytes::from(metrics.render()))),
        _ => Response::new(Full::new(Bytes::from_static(b"better-sync hyper example"))),
    };
    if !matches!(req.uri().path(), "/" | "/metrics") {
        *res.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(res)
}

// glibc malloc spends much of a busy server's time on memory freed by
// another thread (the database driver's). mimalloc is built with its
// `no_thp` feature (Cargo.toml): see docs/PERFORMANCE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setup = support::setup("hyper_server").await?;
    let metrics = setup.metrics.clone();
    let svc = BetterSyncLayer::new(setup.sync.clone())
        .layer(service_fn(move |req| app(req, metrics.clone())));
    let listener = tokio::net::TcpListener::bind(&setup.bind).await?;
    println!(
        "[hyper_server] listening on http://{}",
        listener.local_addr()?
    );
    let sync = setup.sync.clone();
    let drained = support::drain_on_signal("hyper_server", sync);
    tokio::pin!(drained);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut drained => return Ok(()),
        };
        // Live frames are small: send them without waiting for the peer's ACK.
        stream.set_nodelay(true)?;
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("[hyper_server] connection error: {e}");
            }
        });
    }
}
