//! One protocol suite, run the same way against every adapter: axum
//! (`BetterSyncLayer` in a `Router`), plain hyper 1.x (the layer around a
//! `service_fn`) and actix-web (`sync_scope`).

use crate::common;

use std::time::Duration;

use better_sync::testing::dev_token;
use common::{
    Adapter, Backend, SECRET, TestDb, TestServer, builder, change, ws_connect, ws_next,
    ws_subscribe,
};
use serde_json::{Value, json};

const T0: &str = "2026-01-01T00:00:00.000Z";

async fn protocol_suite(adapter: Adapter) {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start_with(adapter, builder(&db.db).build().expect("build")).await;
    let a = server.client("alice", "acme");

    // The app's own route is untouched; look-alike paths are not the engine's.
    let home = server.http.get(server.url("/")).send().await.expect("home");
    assert_eq!(home.text().await.expect("text"), "home", "{adapter:?}");
    let near = server
        .http
        .get(server.url("/api/syncx"))
        .send()
        .await
        .expect("near");
    assert!(
        !near.text().await.expect("text").contains("SYNC:"),
        "{adapter:?}: /api/syncx is not a sync route"
    );

    // Metadata and OpenAPI.
    let meta = a
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    assert_eq!(
        (meta.status, meta.body["protocolVersion"].as_i64()),
        (200, Some(1)),
        "{adapter:?}"
    );
    let doc = a
        .send(server.http.get(server.url("/api/sync/openapi.json")))
        .await;
    assert!(
        doc.body["paths"]["/api/sync/ws"]["get"].is_object(),
        "{adapter:?}"
    );

    // Push, replay, pull, snapshot.
    let batch = json!([
        change(
            "o1",
            "todo",
            "1",
            "insert",
            json!({"id": "1", "title": "a"}),
            T0,
            "d"
        ),
        change(
            "o2",
            "todo",
            "1",
            "update",
            json!({"done": true}),
            "2026-01-01T00:00:01.000Z",
            "d"
        ),
    ]);
    let pushed = a.push(batch.clone()).await;
    assert_eq!(pushed.status, 200, "{adapter:?}: {:?}", pushed.body);
    let replay = a.push(batch).await;
    assert_eq!(replay.body["results"][1]["duplicate"], true, "{adapter:?}");
    let (changes, cursor) = a.pull_all().await;
    assert_eq!(changes.len(), 2, "{adapter:?}");
    let snap = a.snapshot("?model=todo").await;
    assert_eq!(
        snap.body["rows"][0]["value"],
        json!({"id": "1", "title": "a", "done": true}),
        "{adapter:?}"
    );

    // Errors are the same everywhere.
    let bad = a.push_raw("{\"changes\": [").await;
    assert_eq!(
        (bad.status, bad.code()),
        (400, "SYNC:MALFORMED_JSON"),
        "{adapter:?}"
    );
    let big = a
        .push_raw(format!(
            "{{\"changes\": [], \"pad\": \"{}\"}}",
            "x".repeat(2 << 20)
        ))
        .await;
    assert_eq!(
        (big.status, big.code()),
        (413, "SYNC:PAYLOAD_TOO_LARGE"),
        "{adapter:?}"
    );
    // The engine reads the body under every adapter: its limit, its words.
    let max = server.sync.limits().max_body_bytes;
    assert_eq!(
        big.body["error"]["message"],
        format!("request body is larger than {max} bytes"),
        "{adapter:?}"
    );
    assert_eq!(big.body["meta"]["max"], max, "{adapter:?}");
    let anon = server
        .http
        .get(server.url("/api/sync/pull"))
        .send()
        .await
        .expect("anon");
    assert_eq!(anon.status(), 401, "{adapter:?}");
    let wrong = a
        .send(server.http.delete(server.url("/api/sync/push")))
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (405, "SYNC:METHOD_NOT_ALLOWED"),
        "{adapter:?}"
    );
    let missing = a.send(server.http.get(server.url("/api/sync/nope"))).await;
    assert_eq!(
        (missing.status, missing.code()),
        (404, "SYNC:NOT_FOUND"),
        "{adapter:?}"
    );
    let plain_ws = a.send(server.http.get(server.url("/api/sync/ws"))).await;
    assert_eq!(
        (plain_ws.status, plain_ws.code()),
        (426, "SYNC:UPGRADE_REQUIRED"),
        "{adapter:?}"
    );
    assert_eq!(db.counts().await.0, 2, "{adapter:?}: errors wrote nothing");

    // Long-poll wakes on a commit.
    let waiter = {
        let a = a.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move { a.pull(&format!("?cursor={cursor}&wait=30")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.push(json!([change(
        "o3",
        "todo",
        "2",
        "insert",
        json!({}),
        T0,
        "d"
    )]))
    .await;
    let woke = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("long-poll woke")
        .expect("join");
    assert_eq!(woke.body["changes"][0]["op_id"], "o3", "{adapter:?}");

    // WebSocket: catch-up, then a change pushed by someone else arrives live.
    let mut ws = ws_connect(server.addr, &dev_token(SECRET, "alice", "acme", 60)).await;
    let (caught_up, _) = ws_subscribe(&mut ws, Some(&cursor)).await;
    assert_eq!(
        caught_up
            .iter()
            .map(|c| c["op_id"].clone())
            .collect::<Vec<Value>>(),
        [json!("o3")],
        "{adapter:?}"
    );
    server
        .client("bob", "acme")
        .push(json!([change(
            "o4",
            "todo",
            "3",
            "insert",
            json!({}),
            T0,
            "b"
        )]))
        .await;
    let live = ws_next(&mut ws, 20).await.expect("live change");
    assert_eq!(live["changes"][0]["op_id"], "o4", "{adapter:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum() {
    protocol_suite(Adapter::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper() {
    protocol_suite(Adapter::Hyper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix() {
    protocol_suite(Adapter::Actix).await;
}
