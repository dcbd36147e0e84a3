use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use better_sync::{BetterSync, Ctx, SeaOrmStorage};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use migration::{Migrator, MigratorTrait};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::BetterSyncLayer;

async fn engine() -> (BetterSync, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let db = SeaOrmStorage::connect(&url).await.expect("connect");
    Migrator::up(&db, None).await.expect("migrate");
    let sync = BetterSync::builder()
        .storage(SeaOrmStorage::new(db))
        .authorize(|_| async { Ok(Ctx::new("u", "t")) })
        .build()
        .expect("build");
    (sync, dir)
}

fn inner_ok(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "inner {}",
                req.uri()
            )))))
        }
    })
}

async fn body_text<B: http_body::Body>(res: Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

#[tokio::test]
async fn serves_base_path_and_forwards_everything_else() {
    let (sync, _dir) = engine().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = BetterSyncLayer::new(sync).layer(inner_ok(calls.clone()));

    let forwarded = [
        "/",
        "/api",
        "/api/syncx",
        "/api/syncx/push",
        "/other/api/sync/push?x=1",
    ];
    for path in forwarded {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(Full::default()).expect("req"))
            .await
            .expect("call");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, format!("inner {path}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), forwarded.len());

    let res = svc
        .clone()
        .oneshot(
            Request::get("/api/sync/sync.json?x=1")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("call");
    assert_eq!(res.status(), StatusCode::OK);
    let meta: serde_json::Value = serde_json::from_str(&body_text(res).await).expect("json");
    assert_eq!(meta["basePath"], "/api/sync");

    // Unknown routes under the base path are the engine's, not the inner's.
    let res = svc
        .clone()
        .oneshot(
            Request::get("/api/sync/nope")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("call");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(body_text(res).await.contains("SYNC:NOT_FOUND"));
    assert_eq!(calls.load(Ordering::SeqCst), forwarded.len());
}

/// An inner service that is not ready until told, or fails readiness.
#[derive(Clone)]
struct Gate {
    open: Arc<AtomicBool>,
    fail: bool,
}

impl Service<Request<Full<Bytes>>> for Gate {
    type Response = Response<Full<Bytes>>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.fail {
            Poll::Ready(Err("inner broke"))
        } else if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::default())))
    }
}

#[tokio::test]
async fn poll_ready_passes_inner_readiness_and_errors_through() {
    let (sync, _dir) = engine().await;
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = BetterSyncLayer::new(sync.clone()).layer(Gate {
        open: open.clone(),
        fail: false,
    });
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending());
    open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));

    let mut broken = BetterSyncLayer::new(sync).layer(Gate { open, fail: true });
    assert!(matches!(
        broken.poll_ready(&mut cx),
        Poll::Ready(Err("inner broke"))
    ));
}
