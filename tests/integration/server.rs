//! Server behaviour that does not depend on the database: plain hyper
//! mounting, OpenAPI coverage, hook panics, long-poll, CORS, in-process API.

use crate::common;

use std::convert::Infallible;
use std::time::Duration;

use better_sync::protocol::{Change, Op, PushRequest};
use better_sync::{Cors, Ctx, SeaOrmStorage};
use better_sync_tower::BetterSyncLayer;
use bytes::Bytes;
use common::{Backend, TestDb, TestServer, builder, change};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tower::{Layer, service_fn};

const T0: &str = "2026-01-01T00:00:00.000Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hyper_server_serves_sync_and_its_own_route() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = builder(&db.db).build().expect("build");
    let app = service_fn(|req: hyper::Request<Incoming>| async move {
        let text = format!("app saw {}", req.uri().path());
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
    });
    let svc = BetterSyncLayer::new(sync.clone()).layer(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let http = reqwest::Client::new();
    let own = http
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .expect("req");
    assert_eq!(own.text().await.expect("text"), "app saw /hello");
    let near = http
        .get(format!("http://{addr}/api/syncx"))
        .send()
        .await
        .expect("req");
    assert_eq!(near.text().await.expect("text"), "app saw /api/syncx");

    let client = common::Client {
        http,
        base: format!("http://{addr}/api/sync"),
        token: better_sync::testing::dev_token(common::SECRET, "u", "t", 60),
    };
    let pushed = client
        .push(json!([change(
            "h1",
            "todo",
            "1",
            "insert",
            json!({"a": 1}),
            T0,
            "x"
        )]))
        .await;
    assert_eq!(pushed.status, 200, "{:?}", pushed.body);
    let (changes, _) = client.pull_all().await;
    assert_eq!(changes.len(), 1);
    assert_eq!(db.counts().await, (1, 1, 1));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_exactly_the_routes_served() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let client = server.client("u", "t");
    let doc = client
        .send(server.http.get(server.url("/api/sync/openapi.json")))
        .await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    // What the server enforces is in the schema: the registered models,
    // key lengths and shapes, the batch limit, a nullable client_id, the
    // clock's form.
    let schemas = &doc.body["components"]["schemas"];
    let change = &schemas["Change"]["properties"];
    assert_eq!(change["model"]["enum"], json!(["note", "todo"]));
    assert_eq!(change["op_id"]["minLength"], 1);
    assert_eq!(change["pk"]["maxLength"], 255);
    assert!(change["updated_at"]["pattern"].as_str().is_some());
    assert_eq!(
        schemas["PushRequest"]["properties"]["client_id"]["nullable"],
        true
    );
    assert_eq!(
        schemas["PushRequest"]["properties"]["changes"]["maxItems"],
        server.sync.limits().max_batch
    );
    let snapshot_model = doc.body["paths"]["/api/sync/snapshot"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "model"))
        .expect("snapshot's model parameter");
    assert_eq!(snapshot_model["schema"]["enum"], json!(["note", "todo"]));
    let paths = doc.body["paths"].as_object().expect("paths");
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // Probe every documented path and a few undocumented ones with every
    // method: a route is served iff the answer is neither 404 nor 405.
    let mut probe_paths: Vec<String> = paths.keys().cloned().collect();
    for extra in [
        "",
        "/",
        "/ws",
        "/client.js",
        "/changes",
        "/push/x",
        "/sync.json/",
    ] {
        probe_paths.push(format!("/api/sync{extra}"));
    }
    // A templated path is probed with a real value of its parameter.
    let concrete = |path: &str| path.replace("{module}", "hlc.js");
    let mut served = std::collections::BTreeSet::new();
    for path in &probe_paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let req = server
                .http
                .request(m, server.url(&concrete(path)))
                .body("{}");
            let a = client.send(req).await;
            if a.status != 404 && a.status != 405 {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    assert_eq!(served, documented);
    // The browser client's modules: each served as JavaScript with an ETag,
    // unknown names and nested paths not found.
    let module = server
        .http
        .get(server.url("/api/sync/lib/hlc.js"))
        .send()
        .await
        .expect("module");
    assert_eq!(module.status(), 200);
    assert!(
        module.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/javascript"))
    );
    let etag = module.headers()["etag"].clone();
    assert!(
        module
            .text()
            .await
            .expect("text")
            .contains("export function parseHlc")
    );
    let again = server
        .http
        .get(server.url("/api/sync/lib/hlc.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("module");
    assert_eq!(again.status(), 304);
    for missing in [
        "/api/sync/lib/nope.js",
        "/api/sync/lib/a/hlc.js",
        "/api/sync/lib/",
    ] {
        let a = client.send(server.http.get(server.url(missing))).await;
        assert_eq!((a.status, a.code()), (404, "SYNC:NOT_FOUND"), "{missing}");
    }
    // Every operation has responses and an id; authenticated ones say so.
    for (_, ops) in paths {
        for op in ops.as_object().expect("ops").values() {
            assert!(op["operationId"].is_string());
            let r = &op["responses"];
            assert!(r["200"].is_object() || r["101"].is_object(), "{op}");
        }
    }
    let meta = client
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    assert_eq!(meta.body["protocolVersion"], 1);
    assert_eq!(meta.body["basePath"], "/api/sync");
    assert_eq!(meta.body["methods"]["push"]["path"], "/api/sync/push");
    assert!(
        meta.body["features"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_is_a_500_and_the_server_keeps_serving() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = builder(&db.db)
        .can_write(|_, _, change| {
            if change.pk == "boom" {
                panic!("hook bug");
            }
            true
        })
        .can_read(|_, _, row| {
            if row.get("explode").is_some() {
                panic!("read hook bug");
            }
            true
        })
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let a = server.client("u", "t");
    let boom = a
        .push(json!([change(
            "p1",
            "todo",
            "boom",
            "insert",
            json!({}),
            T0,
            "x"
        )]))
        .await;
    assert_eq!((boom.status, boom.code()), (500, "SYNC:INTERNAL"));
    assert_eq!(db.counts().await, (0, 0, 0));
    let fine = a
        .push(json!([change(
            "p2",
            "todo",
            "ok",
            "insert",
            json!({"explode": true}),
            T0,
            "x"
        )]))
        .await;
    assert_eq!(fine.status, 200);
    let read = a.pull("").await;
    assert_eq!((read.status, read.code()), (500, "SYNC:INTERNAL"));
    let meta = a
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    assert_eq!(meta.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_commit_and_times_out_empty() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let a = server.client("u", "t");
    let (_, cursor) = a.pull_all().await;

    let waiter = {
        let a = a.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move { a.pull(&format!("?cursor={cursor}&wait=30")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "long-poll answered before any change"
    );
    a.push(json!([change(
        "w1",
        "todo",
        "1",
        "insert",
        json!({}),
        T0,
        "x"
    )]))
    .await;
    // Generous safety limit, not a speed assertion.
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("woke")
        .expect("join");
    assert_eq!(got.body["changes"][0]["op_id"], "w1");

    let (_, cursor) = a.pull_all().await;
    let empty = a.pull(&format!("?cursor={cursor}&wait=0.3")).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["changes"], json!([]));
    assert_eq!(empty.body["cursor"], cursor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflight_for_allowed_origins_only() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = builder(&db.db)
        .cors(Cors::allow_origins(["http://app.test:5173"]))
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let pre = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/api/sync/push"))
        .header("origin", "http://app.test:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-sync-versions",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.test:5173");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .expect("str")
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .expect("str")
            .contains("authorization")
    );

    let other = server
        .http
        .get(server.url("/api/sync/sync.json"))
        .header("origin", "http://evil.test")
        .send()
        .await
        .expect("req");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let allowed = server
        .http
        .get(server.url("/api/sync/sync.json"))
        .header("origin", "http://app.test:5173")
        .send()
        .await
        .expect("req");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.test:5173"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_api_pushes_and_pulls_without_http() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = better_sync::BetterSync::builder()
        .storage(SeaOrmStorage::new(db.db.clone()))
        .authorize(|_| async { Err(better_sync::SyncError::unauthorized("no HTTP here")) })
        .build()
        .expect("build");
    let ctx = Ctx::new("svc", "acme");
    let mk = |id: &str, op: Op, payload: Value| Change {
        op_id: id.into(),
        model: "todo".into(),
        pk: "1".into(),
        op,
        payload,
        updated_at: T0.into(),
        actor: String::new(),
    };
    let res = sync
        .push(
            &ctx,
            PushRequest {
                client_id: "svc".into(),
                changes: vec![mk("i1", Op::Insert, json!({"a": 1}))],
            },
        )
        .await
        .expect("push");
    assert_eq!(res.results[0].seq, 1);
    let page = sync.pull(&ctx, None, None).await.expect("pull");
    assert_eq!(page.changes[0].actor, "svc", "actor defaults to the user");
    let err = sync
        .push(
            &ctx,
            PushRequest {
                client_id: "svc".into(),
                changes: vec![mk("i2", Op::Update, json!([]))],
            },
        )
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), better_sync::ErrorCode::InvalidChange);
    let other = sync
        .pull(&Ctx::new("svc", "other"), None, None)
        .await
        .expect("pull");
    assert!(other.changes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_pages_are_bounded_by_bytes_as_well_as_count() {
    let db = TestDb::new(Backend::Sqlite).await;
    let limits = better_sync::Limits {
        max_pull_bytes: 300_000,
        ..Default::default()
    };
    let server = TestServer::start(builder(&db.db).limits(limits).build().expect("build")).await;
    let a = server.client("u", "t");
    for i in 0..4 {
        let big = json!({"pad": "x".repeat(200_000)});
        let r = a
            .push(json!([change(
                &format!("b{i}"),
                "todo",
                &i.to_string(),
                "insert",
                big,
                T0,
                "x"
            )]))
            .await;
        assert_eq!(r.status, 200);
    }
    a.push(json!([
        change("small1", "todo", "s1", "insert", json!({}), T0, "x"),
        change("small2", "todo", "s2", "insert", json!({}), T0, "x")
    ]))
    .await;
    let first = a.pull("").await;
    assert_eq!(
        first.body["changes"].as_array().map(Vec::len),
        Some(1),
        "a 200 KB change fills a 300 KB page"
    );
    assert_eq!(first.body["has_more"], true);
    let (all, _) = a.pull_all().await;
    let ids: Vec<&str> = all
        .iter()
        .map(|c| c["op_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["b0", "b1", "b2", "b3", "small1", "small2"]);
}

/// `B/health`'s readiness answer: its status and body.
async fn readiness(server: &TestServer) -> (u16, Value) {
    let r = server
        .http
        .get(server.url("/api/sync/health"))
        .send()
        .await
        .expect("health");
    (r.status().as_u16(), r.json::<Value>().await.expect("json"))
}

/// `B/health`: ready when the database answers; the fan-out and, on
/// Postgres, its commit listener reported once they run; liveness apart.
async fn health_reports_database_fanout_and_listener(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let health = || readiness(&server);
    let (status, body) = health().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert!(body["checks"]["database"]["latencyMs"].as_f64().is_some());
    assert_eq!(body["checks"]["fanout"]["started"], false);
    // A subscriber starts the fan-out (and, on Postgres, its listener).
    let alice = server.client("alice", "acme");
    let mut ws = common::ws_connect(server.addr, &alice.token).await;
    common::ws_subscribe(&mut ws, None).await;
    let listener = backend == Backend::Postgres;
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = health().await;
        let fanout = &body["checks"]["fanout"];
        let l = &body["checks"]["listener"];
        if status == 200
            && fanout["running"] == true
            && l["present"] == listener
            && l["connected"] == listener
        {
            last = Value::Null;
            break;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        last,
        Value::Null,
        "{backend:?}: never ready with its listener"
    );
    // Bad probes, and liveness.
    let bad = alice
        .send(server.http.get(server.url("/api/sync/health?probe=deep")))
        .await;
    assert_eq!((bad.status, bad.code()), (400, "SYNC:INVALID_QUERY"));
    let live = alice
        .send(server.http.get(server.url("/api/sync/health?probe=live")))
        .await;
    assert_eq!(live.body, json!({"status": "ok", "probe": "live"}));
}

per_backend!(health_reports_database_fanout_and_listener);

/// On a SQLite file the engine reads and commits on connections of the
/// storage's own, and the pool still runs transactions and retention: a
/// pool that stops answering makes the instance not ready, though the
/// storage's own connections still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_sqlite_pool_stops() {
    let db = TestDb::new(Backend::Sqlite).await;
    let storage = better_sync::SeaOrmStorage::new(db.db.clone());
    assert!(storage.is_sqlite_direct().await.expect("open"));
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let health = || readiness(&server);
    assert_eq!(health().await.0, 200);
    db.db.close_by_ref().await.expect("close the pool");
    // The storage's own connections still answer; the pool does not.
    better_sync::storage::Storage::head(&storage)
        .await
        .expect("the direct readers still read");
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"]["ok"], false);
}
