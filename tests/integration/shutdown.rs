//! Graceful shutdown in a rolling deploy: three instances on one database,
//! one shut down while a writer pushes and a subscriber follows it. No
//! acknowledged change is lost, the subscriber is told to reconnect (close
//! 1012) and converges through another instance, long-polls answer at once,
//! and the drained instance refuses new work with a retryable 503.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use common::{Backend, TestDb, TestServer, builder, change, ws_connect, ws_subscribe};

const WRITES: usize = 60;

/// Push `op` to the servers in turn from `first`, as a client behind a load
/// balancer retries a refused or failed push elsewhere; the index of the
/// server that acknowledged it.
async fn push_somewhere(clients: &[common::Client], first: usize, op: &Value) -> usize {
    for attempt in 0..30 {
        let i = (first + attempt) % clients.len();
        let a = clients[i].push(json!([op])).await;
        if a.status == 200 {
            return i;
        }
        assert_eq!(
            (a.status, a.code()),
            (503, "SYNC:UNAVAILABLE"),
            "only a draining server refuses: {:?}",
            a.body
        );
        assert!(a.headers.contains_key("retry-after"));
    }
    panic!("no server took {op}");
}

async fn rolling_shutdown_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut servers = Vec::new();
    for _ in 0..3 {
        let sync = builder(&db.db)
            .poll_interval(Duration::from_millis(100))
            .heartbeat(Duration::from_secs(5))
            .build()
            .expect("build");
        servers.push(TestServer::start(sync).await);
    }
    let clients: Vec<common::Client> = servers.iter().map(|s| s.client("w", "acme")).collect();
    let draining = &servers[2];

    // A subscriber and a long-poll on the instance that will go.
    let mut ws = ws_connect(draining.addr, &clients[2].token).await;
    let (caught, mut cursor) = ws_subscribe(&mut ws, None).await;
    assert!(caught.is_empty());
    let head = clients[2].pull("").await.body["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let long_poll = {
        let c = clients[2].clone();
        tokio::spawn(async move { c.pull(&format!("?cursor={head}&wait=30")).await })
    };

    // The writer: round-robin over the three, retrying elsewhere.
    let pushed = Arc::new(AtomicUsize::new(0));
    let writer = {
        let clients = clients.clone();
        let pushed = pushed.clone();
        tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            for i in 0..WRITES {
                let op_id = format!("w{i:03}");
                let op = change(
                    &op_id,
                    "todo",
                    &format!("{i}"),
                    "insert",
                    json!({"n": i}),
                    "2026-01-01T00:00:00.000Z",
                    "writer",
                );
                push_somewhere(&clients, i % 3, &op).await;
                acked.insert(op_id);
                pushed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };

    // The subscriber reads until the server closes, then reconnects to the
    // first instance from its cursor.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut close_code = None;
    while pushed.load(Ordering::SeqCst) < WRITES / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let shutdown = {
        let sync = draining.sync.clone();
        tokio::spawn(async move { sync.shutdown(Duration::from_secs(10)).await })
    };
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("the session ends in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(&t).expect("json");
                if m["type"] == "changes" {
                    for c in m["changes"].as_array().expect("changes") {
                        seen.push((
                            c["seq"].as_i64().expect("seq"),
                            c["op_id"].as_str().expect("op_id").to_owned(),
                        ));
                    }
                    cursor = m["cursor"].as_str().expect("cursor").to_owned();
                }
            }
            Some(Ok(Message::Close(frame))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert_eq!(close_code, Some(1012), "told to reconnect elsewhere");
    let report = shutdown.await.expect("shutdown");
    assert!(report.drained(), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The long-poll answered when the shutdown began, not at its 30 s.
    let answered = long_poll.await.expect("long-poll");
    assert_eq!(answered.status, 200, "{:?}", answered.body);
    assert!(started.elapsed() < Duration::from_secs(10));

    // The drained instance refuses new work, retryably, and says so.
    let refused = clients[2]
        .push(json!([change(
            "late",
            "todo",
            "x",
            "insert",
            json!({}),
            "2026-01-01T00:00:00.000Z",
            "w"
        )]))
        .await;
    assert_eq!((refused.status, refused.code()), (503, "SYNC:UNAVAILABLE"));
    let health = draining
        .http
        .get(draining.url("/api/sync/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.expect("json");
    assert_eq!(body["status"], "draining");
    let live = draining
        .http
        .get(draining.url("/api/sync/health?probe=live"))
        .send()
        .await
        .expect("health");
    assert_eq!(live.status(), 200);
    let handshake = draining
        .http
        .get(draining.url("/api/sync/ws"))
        .header("authorization", format!("Bearer {}", clients[2].token))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("handshake");
    assert_eq!(handshake.status(), 503);

    // The subscriber reconnects to another instance from its cursor and
    // receives the rest, once each.
    let acked = writer.await.expect("writer");
    assert_eq!(acked.len(), WRITES);
    let mut ws = ws_connect(servers[0].addr, &clients[0].token).await;
    let (more, _) = ws_subscribe(&mut ws, Some(&cursor)).await;
    for c in &more {
        seen.push((
            c["seq"].as_i64().expect("seq"),
            c["op_id"].as_str().expect("op_id").to_owned(),
        ));
    }
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {seqs:?}"
    );
    let ops: BTreeSet<String> = seen.into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        ops, acked,
        "every acknowledged change reached the subscriber"
    );

    // And every instance still serving holds all of them.
    for c in &clients[..2] {
        let (all, _) = c.pull_all().await;
        let ops: BTreeSet<String> = all
            .iter()
            .map(|c| c["op_id"].as_str().expect("op_id").to_owned())
            .collect();
        assert_eq!(ops, acked);
    }
}

per_backend!(rolling_shutdown_loses_nothing);
