//! The Rust client against a real server on 127.0.0.1 (a child process on a
//! SQLite file): convergence, outages, restarts, refusals, auth refresh, and
//! a randomized convergence test checked against an independent LWW model.

mod support;

#[path = "../../tests/integration/common/json_corpus.rs"]
mod json_corpus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_sync_client::{
    Auth, Change, ClientError, Event, Filter, LiveMode, PullSource, Storage, SyncClient, Transport,
};
use serde_json::{Value, json};
use support::{Server, eventually};

child_server_main!();

async fn client(server: &Server, tenant: &str, actor: &str, transport: Transport) -> SyncClient {
    SyncClient::builder()
        .base_url(server.url())
        .models(["todo", "note"])
        .transport(transport)
        .auth(Auth::bearer(server.token(actor, tenant)))
        .actor(actor)
        .build()
        .await
        .expect("build")
}

async fn rows(c: &SyncClient, model: &str) -> BTreeMap<String, Value> {
    c.query(model, &Filter::all())
        .await
        .into_iter()
        .map(|r| (r.id, r.value))
        .collect()
}

/// Wait until the client has pushed everything and holds the server's rows.
async fn converged(c: &SyncClient, server: &Server, tenant: &str, model: &str, secs: u64) {
    tokio::time::timeout(Duration::from_secs(secs), c.drain())
        .await
        .expect("drain in time")
        .expect("drain");
    let expected = server.rows(tenant, model).await;
    let what = format!(
        "client {} equals the server; server {expected:?}, client now {:?}, stats {:?}",
        c.actor(),
        rows(c, model).await,
        c.queue_stats().await
    );
    eventually(secs, &what, || {
        let expected = expected.clone();
        async move { rows(c, model).await == expected }
    })
    .await;
    // And it has pulled up to the server's head (its own changes included).
    let head = head_cursor(server, tenant).await;
    eventually(
        secs,
        &format!("client {} reaches the head {head}", c.actor()),
        || {
            let head = head.clone();
            async move { c.queue_stats().await.cursor.as_deref() == Some(head.as_str()) }
        },
    )
    .await;
}

/// The cursor at the head of the server's log, as a pull to the end ends.
async fn head_cursor(server: &Server, tenant: &str) -> String {
    let remote = server.remote("inspector", tenant);
    // From a snapshot's cursor: the log before it may be compacted away.
    let first = remote
        .snapshot("todo", None, Some(1))
        .await
        .expect("snapshot");
    let mut cursor = Some(first.cursor);
    loop {
        let page = remote
            .pull(cursor.as_deref(), None, None)
            .await
            .expect("pull");
        cursor = Some(page.cursor);
        if !page.has_more {
            return cursor.unwrap_or_default();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_with_field_level_merges() {
    let server = Server::start();
    let a = client(&server, "t1", "ann", Transport::WebSocket).await;
    let b = client(&server, "t1", "bob", Transport::WebSocket).await;
    a.connect();
    b.connect();
    let mut b_view = b.subscribe_query("todo", Filter::eq("done", false));
    assert_eq!(b_view.next().await, Some(vec![]), "emits at once");

    a.apply_change(
        "todo",
        Change::insert(
            "1",
            json!({"id": "1", "title": "Write docs", "done": false}),
        ),
    )
    .await
    .expect("insert");
    // B sees A's row through its live query, by the WebSocket.
    let seen = tokio::time::timeout(Duration::from_secs(20), b_view.next())
        .await
        .expect("live query fired")
        .expect("rows");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].value["title"], "Write docs");

    // Concurrent edits of different fields of one row both survive.
    a.apply_change(
        "todo",
        Change::update("1", json!({"title": "Write the docs"})),
    )
    .await
    .expect("a update");
    b.apply_change("todo", Change::update("1", json!({"done": true})))
        .await
        .expect("b update");
    // The row left B's filter at once (a local change fires the query too).
    let after = tokio::time::timeout(Duration::from_secs(20), b_view.next())
        .await
        .expect("fired")
        .expect("rows");
    assert!(after.is_empty(), "done rows leave the filter: {after:?}");

    converged(&a, &server, "t1", "todo", 30).await;
    converged(&b, &server, "t1", "todo", 30).await;
    let server_rows = server.rows("t1", "todo").await;
    assert_eq!(
        server_rows["1"],
        json!({"id": "1", "title": "Write the docs", "done": true})
    );
    assert_eq!(rows(&a, "todo").await, server_rows);
    assert_eq!(rows(&b, "todo").await, server_rows);

    // A delete reaches the other side; another tenant sees nothing of it all.
    b.apply_change("todo", Change::delete("1"))
        .await
        .expect("delete");
    converged(&b, &server, "t1", "todo", 30).await;
    converged(&a, &server, "t1", "todo", 30).await;
    assert!(rows(&a, "todo").await.is_empty());
    assert!(server.rows("t2", "todo").await.is_empty());
    let stats = a.queue_stats().await;
    assert_eq!(stats.queued, 0);
    assert!(stats.online);
    assert_eq!(stats.live, Some(LiveMode::WebSocket));
    assert!(stats.cursor.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_long_poll_transport_converges() {
    let server = Server::start();
    let a = client(&server, "t1", "ann", Transport::Http).await;
    let b = client(&server, "t1", "bob", Transport::Http).await;
    a.connect();
    b.connect();
    for i in 0..30 {
        a.apply_change("note", Change::insert(format!("n{i}"), json!({"text": i})))
            .await
            .expect("insert");
    }
    converged(&a, &server, "t1", "note", 30).await;
    converged(&b, &server, "t1", "note", 30).await;
    assert_eq!(rows(&b, "note").await.len(), 30);
    assert_eq!(b.queue_stats().await.live, Some(LiveMode::LongPoll));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_the_server_is_down_all_arrive_after_it_restarts() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let retries = Arc::new(AtomicUsize::new(0));
    let counter = retries.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .storage(Storage::sqlite(dir.path().join("a.db")))
        .auth(Auth::bearer(server.token("ann", "t1")))
        .on_event(move |e| {
            if let Event::Retry { .. } = e {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .await
        .expect("build");
    a.connect();
    for i in 0..5 {
        a.apply_change("todo", Change::insert(format!("r{i}"), json!({"n": i})))
            .await
            .expect("insert");
    }
    converged(&a, &server, "t1", "todo", 30).await;

    server.stop();
    // Writing goes on, locally, at once.
    for i in 5..40 {
        let started = std::time::Instant::now();
        a.apply_change("todo", Change::insert(format!("r{i}"), json!({"n": i})))
            .await
            .expect("insert while down");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "apply_change does not wait for the network"
        );
    }
    a.apply_change("todo", Change::update("r0", json!({"n": 100})))
        .await
        .expect("update while down");
    eventually(20, "the client notices the outage", || async {
        let s = a.queue_stats().await;
        !s.online && s.last_error.is_some()
    })
    .await;
    assert_eq!(a.queue_stats().await.queued, 36);
    assert_eq!(
        rows(&a, "todo").await.len(),
        40,
        "local reads see local writes"
    );
    assert!(
        retries.load(Ordering::SeqCst) > 0,
        "retry events were reported"
    );

    server.restart();
    converged(&a, &server, "t1", "todo", 60).await;
    let on_server = server.rows("t1", "todo").await;
    assert_eq!(on_server.len(), 40);
    assert_eq!(on_server["r0"], json!({"n": 100}));
    assert!(a.queue_stats().await.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_outbox_and_cursor_survive_a_client_restart() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("device.db");
    let open = |events: Arc<Mutex<Vec<Event>>>| {
        let token = server.token("ann", "t1");
        let url = server.url();
        let path = path.clone();
        async move {
            SyncClient::builder()
                .base_url(url)
                .models(["todo"])
                .storage(Storage::sqlite(&path))
                .auth(Auth::bearer(token))
                .on_event(move |e| events.lock().expect("events").push(e.clone()))
                .build()
                .await
                .expect("build")
        }
    };

    // First run: offline (never connected); queue three changes, then quit.
    let events = Arc::new(Mutex::new(Vec::new()));
    let c = open(events.clone()).await;
    let actor = c.actor().to_owned();
    for i in 0..3 {
        c.apply_change("todo", Change::insert(format!("p{i}"), json!({"i": i})))
            .await
            .expect("insert");
    }
    c.close().await;
    assert!(matches!(
        c.apply_change("todo", Change::delete("p0")).await,
        Err(e) if e.code() == "CLOSED"
    ));

    // Second run: everything is still there, with the same actor.
    let c = open(events.clone()).await;
    assert_eq!(c.actor(), actor, "the made-up actor id is kept");
    assert_eq!(c.queue_stats().await.queued, 3);
    assert_eq!(rows(&c, "todo").await.len(), 3);
    c.connect();
    converged(&c, &server, "t1", "todo", 30).await;
    assert_eq!(server.rows("t1", "todo").await.len(), 3);
    let cursor = c.queue_stats().await.cursor.expect("cursor");
    c.close().await;

    // Meanwhile someone else writes.
    server
        .remote("bob", "t1")
        .push(
            "bob",
            &[better_sync_client::WireChange {
                op_id: "bob-1".into(),
                model: "todo".into(),
                pk: "b1".into(),
                op: better_sync_client::Op::Insert,
                payload: json!({"by": "bob"}),
                updated_at: better_sync_core::Hlc::now().to_string(),
                actor: "bob".into(),
            }],
        )
        .await
        .expect("bob pushes");

    // Third run: resumes from the stored cursor: no second bootstrap, and
    // only bob's change is pulled.
    let events = Arc::new(Mutex::new(Vec::new()));
    let c = open(events.clone()).await;
    assert_eq!(
        c.queue_stats().await.cursor.as_deref(),
        Some(cursor.as_str())
    );
    c.connect();
    converged(&c, &server, "t1", "todo", 30).await;
    assert_eq!(rows(&c, "todo").await.len(), 4);
    let events = events.lock().expect("events").clone();
    let pulled: usize = events
        .iter()
        .map(|e| match e {
            Event::Pull {
                source: PullSource::Snapshot,
                ..
            } => panic!("bootstrapped again: {e:?}"),
            Event::Pull { changes, .. } => *changes,
            _ => 0,
        })
        .sum();
    assert_eq!(pulled, 1, "only the new change was pulled: {events:?}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_lose_nothing() {
    let server = Server::start();
    let a = client(&server, "t1", "ann", Transport::WebSocket).await;
    a.connect();
    a.apply_change("todo", Change::insert("before", json!({"n": 0})))
        .await
        .expect("insert");
    converged(&a, &server, "t1", "todo", 30).await;

    for status in [503, 502, 429] {
        server.fail_with(status).await;
        for i in 0..10 {
            a.apply_change(
                "todo",
                Change::insert(format!("s{status}-{i}"), json!({"n": i})),
            )
            .await
            .expect("insert");
        }
        eventually(20, "the push fails and is kept", || async {
            a.queue_stats()
                .await
                .last_error
                .is_some_and(|e| e.status() == status)
        })
        .await;
        assert_eq!(a.queue_stats().await.queued, 10);
        if status == 429 {
            assert!(a.should_back_off(), "the server asked to slow down");
            let e = a.queue_stats().await.last_error.expect("error");
            assert_eq!(e.code(), "SYNC:RATE_LIMITED");
            assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        }
        server.fail_with(0).await;
        converged(&a, &server, "t1", "todo", 60).await;
    }
    assert_eq!(server.rows("t1", "todo").await.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_quarantined_and_its_effect_undone() {
    let server = Server::start();
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let seen = rejected.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(Auth::bearer(server.token("ann", "t1")))
        .on_event(move |e| {
            if let Event::Rejected { change, error } = e {
                seen.lock()
                    .expect("seen")
                    .push((change.pk.clone(), error.code().to_owned()));
            }
        })
        .build()
        .await
        .expect("build");
    a.apply_change("todo", Change::insert("ok1", json!({"n": 1})))
        .await
        .expect("insert");
    a.apply_change("todo", Change::insert("bad", json!({"forbidden": true})))
        .await
        .expect("queued locally");
    a.apply_change("todo", Change::insert("ok2", json!({"n": 2})))
        .await
        .expect("insert");
    assert_eq!(rows(&a, "todo").await.len(), 3, "optimistic until refused");
    a.connect();
    converged(&a, &server, "t1", "todo", 30).await;
    let local = rows(&a, "todo").await;
    assert_eq!(
        local.keys().cloned().collect::<Vec<_>>(),
        ["ok1", "ok2"],
        "the refused row is gone, the others arrived"
    );
    assert_eq!(
        *rejected.lock().expect("seen"),
        [("bad".to_owned(), "SYNC:FORBIDDEN".to_owned())]
    );
    let kept = a.rejected().await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].error.status(), 403);
    assert_eq!(a.queue_stats().await.rejected, 1);
    a.clear_rejected().await.expect("clear");
    assert!(a.rejected().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_local_changes_are_refused_before_they_are_queued() {
    let server = Server::start();
    let a = client(&server, "t1", "ann", Transport::WebSocket).await;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "todo",
            Change::insert("1", json!("not an object")),
            "SYNC:INVALID_CHANGE",
        ),
        (
            "todo",
            Change::update("1", json!({})),
            "SYNC:INVALID_CHANGE",
        ),
        ("todo", Change::insert("", json!({})), "SYNC:INVALID_CHANGE"),
        (
            "todo",
            Change::insert("1", json!({"id": "2"})),
            "SYNC:INVALID_CHANGE",
        ),
        ("ghost", Change::delete("1"), "SYNC:UNKNOWN_MODEL"),
        ("bad model", Change::delete("1"), "SYNC:INVALID_CHANGE"),
    ];
    for (model, change, code) in cases {
        let e = a.apply_change(model, change).await.expect_err("refused");
        assert_eq!(e.code(), code, "{e}");
        assert_eq!(e.status(), 0);
    }
    assert_eq!(a.queue_stats().await.queued, 0, "nothing was queued");
    assert!(rows(&a, "todo").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_refresh_the_token_once() {
    let server = Server::start();
    let token = Arc::new(Mutex::new(String::from("not-a-valid-token")));
    let good = server.token("ann", "t1");
    let refreshes = Arc::new(AtomicUsize::new(0));
    let (read, write, count) = (token.clone(), token.clone(), refreshes.clone());
    let auth = Auth::bearer_with(move || {
        let t = read.lock().expect("token").clone();
        async move { Ok(t) }
    })
    .refresh(move || {
        let (write, count, good) = (write.clone(), count.clone(), good.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            // A slow identity provider: the other 401s arrive meanwhile.
            tokio::time::sleep(Duration::from_millis(200)).await;
            *write.lock().expect("token") = good;
            Ok(())
        }
    });
    let remote =
        better_sync_client::Remote::new(&server.url(), "/api/sync", auth.clone()).expect("remote");
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let r = remote.clone();
            tokio::spawn(async move { r.pull(None, None, None).await })
        })
        .collect();
    for p in pulls {
        p.await
            .expect("join")
            .expect("pull succeeds after the refresh");
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(remote.token_refreshes(), 1);

    // A refresh that does not help: the 401 is reported, not looped on.
    let bad = Auth::bearer("still-bad").refresh(|| async { Ok(()) });
    let remote = better_sync_client::Remote::new(&server.url(), "/api/sync", bad).expect("remote");
    let e = remote.pull(None, None, None).await.expect_err("401");
    assert_eq!(e.code(), "SYNC:UNAUTHORIZED");
    assert_eq!(e.status(), 401);
    let e = remote.subscribe(None, None).await.expect_err("401");
    assert_eq!(e.code(), "SYNC:UNAUTHORIZED");

    // The sync client's loops share one refresh too.
    *token.lock().expect("token") = String::from("expired-again");
    let c = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(
            Auth::bearer_with({
                let t = token.clone();
                move || {
                    let t = t.lock().expect("token").clone();
                    async move { Ok(t) }
                }
            })
            .refresh({
                let (t, good) = (token.clone(), server.token("ann", "t1"));
                let count = refreshes.clone();
                move || {
                    let (t, good, count) = (t.clone(), good.clone(), count.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        *t.lock().expect("token") = good;
                        Ok(())
                    }
                }
            }),
        )
        .build()
        .await
        .expect("build");
    c.apply_change("todo", Change::insert("1", json!({"n": 1})))
        .await
        .expect("insert");
    c.connect();
    converged(&c, &server, "t1", "todo", 30).await;
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        2,
        "one more refresh for the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_server_makes_the_client_rebuild_and_resend_nothing_lost() {
    let mut server = Server::start();
    let a = client(&server, "t1", "ann", Transport::WebSocket).await;
    a.connect();
    for i in 0..5 {
        a.apply_change("todo", Change::insert(format!("old{i}"), json!({"i": i})))
            .await
            .expect("insert");
    }
    converged(&a, &server, "t1", "todo", 30).await;
    // The server comes back with empty data: the client's cursor is ahead of
    // its log (SYNC:CURSOR_AHEAD); the client drops its rows and bootstraps.
    server.restart_empty();
    a.apply_change("todo", Change::insert("new", json!({"i": 99})))
        .await
        .expect("insert");
    converged(&a, &server, "t1", "todo", 60).await;
    let local = rows(&a, "todo").await;
    assert_eq!(local.keys().cloned().collect::<Vec<_>>(), ["new"]);
}

// -- randomized convergence --------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The documented rules (docs/PROTOCOL.md section 4), written out plainly
/// and independently of `RowState`: order every change of a row by
/// `(clock, rank, actor, op_id)` with rank 1 for deletes; the tombstone is
/// the largest delete; each field takes the value of its largest write if
/// that write orders after the tombstone; the row exists when its largest
/// insert orders after the tombstone.
fn model_state(log: &[Value]) -> BTreeMap<String, Value> {
    type Key = (better_sync_core::Hlc, u8, String, String);
    let key = |c: &Value| -> Key {
        (
            c["updated_at"]
                .as_str()
                .expect("clock")
                .parse()
                .expect("hlc"),
            u8::from(c["op"] == "delete"),
            c["actor"].as_str().expect("actor").to_owned(),
            c["op_id"].as_str().expect("op_id").to_owned(),
        )
    };
    let mut by_row: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in log {
        by_row
            .entry(c["pk"].as_str().expect("pk").to_owned())
            .or_default()
            .push(c);
    }
    let mut out = BTreeMap::new();
    for (pk, changes) in by_row {
        let tombstone = changes
            .iter()
            .filter(|c| c["op"] == "delete")
            .map(|c| key(c))
            .max();
        let after_tombstone = |k: &Key| tombstone.as_ref().is_none_or(|t| k > t);
        let last_insert = changes
            .iter()
            .filter(|c| c["op"] == "insert")
            .map(|c| key(c))
            .max();
        if !last_insert.as_ref().is_some_and(after_tombstone) {
            continue;
        }
        let mut fields: BTreeMap<String, (Key, Value)> = BTreeMap::new();
        for c in &changes {
            if c["op"] == "delete" {
                continue;
            }
            let k = key(c);
            for (f, v) in c["payload"].as_object().expect("payload") {
                if fields.get(f).is_none_or(|(old, _)| k > *old) {
                    fields.insert(f.clone(), (k.clone(), v.clone()));
                }
            }
        }
        let value: serde_json::Map<String, Value> = fields
            .into_iter()
            .filter(|(_, (k, _))| after_tombstone(k))
            .map(|(f, (_, v))| (f, v))
            .collect();
        out.insert(pk, Value::Object(value));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_clients_converge_to_the_lww_model() {
    let seed = std::env::var("BS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed} (replay with BS_SEED={seed})");
    let mut server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut clients = Vec::new();
    for i in 0..4 {
        let storage = if i % 2 == 0 {
            Storage::sqlite(dir.path().join(format!("c{i}.db")))
        } else {
            Storage::memory()
        };
        let transport = if i < 3 {
            Transport::WebSocket
        } else {
            Transport::Http
        };
        let c = SyncClient::builder()
            .base_url(server.url())
            .models(["todo"])
            .storage(storage)
            .transport(transport)
            .auth(Auth::bearer(server.token(&format!("u{i}"), "shared")))
            .actor(format!("c{i}"))
            .long_poll_wait(Duration::from_secs(2))
            .build()
            .await
            .expect("build");
        c.connect();
        clients.push(c);
    }
    // Every client writes concurrently on shared rows, with pauses and
    // random disconnects; meanwhile the server is killed and restarted once.
    let steps = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(who, c)| {
            let c = c.clone();
            let steps = steps.clone();
            let mut rng = Rng(seed.wrapping_add(who as u64 * 0x9e37_79b9) | 1);
            tokio::spawn(async move {
                let ids = ["a", "b", "c", "d", "e", "f"];
                let fields = ["x", "y", "z"];
                let mut connected = true;
                for step in 0..120 {
                    match rng.below(25) {
                        0 => {
                            if connected {
                                c.disconnect().await;
                            } else {
                                c.connect();
                            }
                            connected = !connected;
                        }
                        1..=8 => tokio::time::sleep(Duration::from_millis(rng.below(15))).await,
                        _ => {}
                    }
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    let mut payload = serde_json::Map::new();
                    for f in fields {
                        if rng.below(2) == 0 {
                            payload.insert(f.to_owned(), json!(format!("{step}-c{who}")));
                        }
                    }
                    if payload.is_empty() {
                        payload.insert("x".into(), json!(step));
                    }
                    let change = match rng.below(10) {
                        0..=2 => Change::insert(id, Value::Object(payload)),
                        3..=7 => Change::update(id, Value::Object(payload)),
                        _ => Change::delete(id),
                    };
                    c.apply_change("todo", change).await.expect("apply");
                    steps.fetch_add(1, Ordering::SeqCst);
                }
                if !connected {
                    c.connect();
                }
            })
        })
        .collect();
    eventually(60, "half the writes are done", || async {
        steps.load(Ordering::SeqCst) >= 200
    })
    .await;
    server.restart();
    assert!(
        steps.load(Ordering::SeqCst) < 480,
        "the restart came mid-run"
    );
    for w in writers {
        w.await.expect("writer");
    }
    for c in &clients {
        tokio::time::timeout(Duration::from_secs(120), c.drain())
            .await
            .expect("drained in time")
            .expect("drain");
    }
    let on_server = server.rows("shared", "todo").await;
    for c in &clients {
        let want = on_server.clone();
        eventually(
            60,
            &format!("replica {} equals the server", c.actor()),
            || {
                let want = want.clone();
                async move { rows(c, "todo").await == want }
            },
        )
        .await;
    }
    // The server's state is what the plain model of the rules makes of its log.
    let remote = server.remote("inspector", "shared");
    let mut log = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = remote
            .pull(cursor.as_deref(), None, None)
            .await
            .expect("pull");
        log.extend(
            page.changes
                .iter()
                .map(|c| serde_json::to_value(c).expect("json")),
        );
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    let applied = log.len();
    assert_eq!(
        applied, 480,
        "every change of every client is in the log once"
    );
    assert_eq!(model_state(&log), on_server, "seed {seed}");
    for c in &clients {
        assert_eq!(c.queue_stats().await.queued, 0);
        assert!(c.rejected().await.is_empty());
        c.close().await;
    }
}

#[test]
fn the_model_follows_the_documented_rules() {
    let c = |op: &str, pk: &str, clock: &str, actor: &str, payload: Value| {
        json!({"op_id": format!("{actor}-{clock}"), "model": "todo", "pk": pk, "op": op,
               "payload": payload, "updated_at": clock, "actor": actor})
    };
    let log = vec![
        c(
            "insert",
            "1",
            "2026-01-01T00:00:01.000Z",
            "a",
            json!({"x": 1, "y": 1}),
        ),
        c(
            "update",
            "1",
            "2026-01-01T00:00:02.000Z",
            "b",
            json!({"y": 2}),
        ),
        c(
            "update",
            "1",
            "2026-01-01T00:00:02.000Z",
            "a",
            json!({"y": 3}),
        ),
        // A delete at an equal clock wins over a write.
        c(
            "insert",
            "2",
            "2026-01-01T00:00:05.000Z",
            "z",
            json!({"x": 1}),
        ),
        c("delete", "2", "2026-01-01T00:00:05.000Z", "a", Value::Null),
        // Re-created after a delete: only the later fields.
        c(
            "insert",
            "3",
            "2026-01-01T00:00:01.000Z",
            "a",
            json!({"x": 1, "y": 1}),
        ),
        c("delete", "3", "2026-01-01T00:00:02.000Z", "a", Value::Null),
        c(
            "insert",
            "3",
            "2026-01-01T00:00:03.000Z",
            "a",
            json!({"x": 2}),
        ),
        // An update alone does not create a row.
        c(
            "update",
            "4",
            "2026-01-01T00:00:01.000Z",
            "a",
            json!({"x": 1}),
        ),
    ];
    let state = model_state(&log);
    assert_eq!(
        state["1"],
        json!({"x": 1, "y": 2}),
        "larger actor wins the tie"
    );
    assert!(!state.contains_key("2"));
    assert_eq!(state["3"], json!({"x": 2}));
    assert!(!state.contains_key("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn should_back_off_when_the_outbox_is_large() {
    let server = Server::start();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(Auth::bearer(server.token("ann", "t1")))
        .back_off_at(5)
        .build()
        .await
        .expect("build");
    for i in 0..4 {
        a.apply_change("todo", Change::insert(format!("{i}"), json!({})))
            .await
            .expect("insert");
    }
    assert!(!a.should_back_off());
    a.apply_change("todo", Change::insert("4", json!({})))
        .await
        .expect("insert");
    assert!(a.should_back_off(), "5 queued");
    a.drain().await.expect("drain pushes without connect()");
    assert!(!a.should_back_off());
    assert_eq!(server.rows("t1", "todo").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_fire_only_when_their_rows_change() {
    let server = Server::start();
    let a = client(&server, "t1", "ann", Transport::WebSocket).await;
    let mut open = a.subscribe_query("todo", Filter::eq("done", false));
    assert_eq!(open.next().await, Some(vec![]));
    a.apply_change("note", Change::insert("n", json!({"text": "elsewhere"})))
        .await
        .expect("note");
    a.apply_change("todo", Change::insert("t", json!({"done": true})))
        .await
        .expect("done todo");
    let quiet = tokio::time::timeout(Duration::from_millis(300), open.next()).await;
    assert!(
        quiet.is_err(),
        "no emission for rows outside the filter: {quiet:?}"
    );
    a.apply_change("todo", Change::update("t", json!({"done": false})))
        .await
        .expect("reopen");
    let rows = tokio::time::timeout(Duration::from_secs(5), open.next())
        .await
        .expect("fired")
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(open.current().map(<[_]>::len), Some(1));
    a.close().await;
    assert_eq!(open.next().await, None, "ends when the client closes");
    let _: Option<ClientError> = None;
}

// -- the CLI -----------------------------------------------------------------

fn cli(server: &Server, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_better-sync"))
        .args(["--url", &server.url()])
        .args(args)
        .env("BETTER_SYNC_TOKEN", server.token("cli", "t1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the CLI");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_inspects_a_server() {
    let server = Server::start();
    let (code, out, _) = cli(&server, &["info"], None);
    assert_eq!(code, 0);
    let meta: Value = serde_json::from_str(&out).expect("sync.json");
    assert_eq!(meta["protocolVersion"], 1);

    let input = r#"[{"model": "todo", "pk": "1", "op": "insert", "payload": {"title": "from the CLI"}},
                    {"model": "todo", "pk": "2", "op": "insert", "payload": {"title": "two"}}]"#;
    let (code, out, err) = cli(&server, &["push"], Some(input));
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).expect("push answer");
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(2));

    let (code, out, err) = cli(&server, &["pull", "--all"], None);
    assert_eq!(code, 0, "{err}");
    let pulled: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(pulled.len(), 2);
    assert_eq!(pulled[0]["payload"]["title"], "from the CLI");
    assert_eq!(pulled[0]["actor"], "better-sync-cli");
    let cursor = err
        .lines()
        .find_map(|l| l.strip_prefix("cursor "))
        .expect("cursor on stderr")
        .to_owned();

    let (code, out, _) = cli(&server, &["snapshot", "--model", "todo"], None);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);

    // watch: prints the next change as it commits.
    let watcher = {
        let url = server.url();
        let token = server.token("cli", "t1");
        let cursor = cursor.clone();
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_better-sync"))
                .args([
                    "--url", &url, "--token", &token, "watch", "--cursor", &cursor, "--max", "1",
                ])
                .output()
                .expect("watch")
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _, err) = cli(
        &server,
        &["push"],
        Some(r#"{"model": "todo", "pk": "3", "op": "insert", "payload": {"title": "live"}}"#),
    );
    assert_eq!(code, 0, "{err}");
    let watched = watcher.join().expect("watch thread");
    assert!(watched.status.success());
    let line: Value = serde_json::from_str(
        String::from_utf8_lossy(&watched.stdout)
            .lines()
            .next()
            .expect("a change"),
    )
    .expect("json");
    assert_eq!(line["pk"], "3");

    // Bad input: clear errors and exit codes.
    let (code, _, err) = cli(&server, &["push"], Some("{not json"));
    assert_eq!(code, 2);
    assert!(err.contains("not JSON"), "{err}");
    let (code, _, err) = cli(
        &server,
        &["push"],
        Some(r#"{"model": "ghost", "pk": "1", "op": "insert", "payload": {}}"#),
    );
    assert_eq!(code, 1);
    assert!(err.contains("SYNC:UNKNOWN_MODEL"), "{err}");
    let (code, _, err) = cli(&server, &["pull", "--cursor", "garbage"], None);
    assert_eq!(code, 1);
    assert!(err.contains("SYNC:INVALID_CURSOR"), "{err}");
    let (code, _, err) = cli(&server, &["--token", "bad", "pull"], None);
    assert_eq!(code, 1);
    assert!(err.contains("SYNC:UNAUTHORIZED"), "{err}");
    let (code, _, err) = cli(&server, &["frobnicate"], None);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

/// Auth that also names the client in `x-client`, for targeted failures.
fn named_auth(server: &Server, user: &str, tenant: &str) -> Auth {
    let token = server.token(user, tenant);
    let name = user.to_owned();
    Auth::headers(move || {
        let (token, name) = (token.clone(), name.clone());
        async move {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
            h.insert("x-client", name.parse().expect("header"));
            Ok(h)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_long_poll_when_websockets_are_refused() {
    let server = Server::start();
    // A proxy in front refuses upgrades for this client.
    server.fail("status=502&route=ws&client=ann").await;
    let modes = Arc::new(Mutex::new(Vec::new()));
    let seen = modes.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(named_auth(&server, "ann", "t1"))
        .on_event(move |e| {
            if let Event::Live(m) = e {
                seen.lock().expect("modes").push(*m);
            }
        })
        .build()
        .await
        .expect("build");
    a.connect();
    eventually(30, "long-poll takes over", || async {
        a.queue_stats().await.live == Some(LiveMode::LongPoll)
    })
    .await;
    // Live changes of another client still arrive.
    let b = client(&server, "t1", "bob", Transport::WebSocket).await;
    b.apply_change("note", Change::insert("n", json!({"not": "for ann"})))
        .await
        .expect("insert");
    b.apply_change("todo", Change::insert("1", json!({"by": "bob"})))
        .await
        .expect("insert");
    b.drain().await.expect("drain");
    eventually(30, "bob's row reaches ann by long-poll", || async {
        a.get("todo", "1").await == Some(json!({"by": "bob"}))
    })
    .await;
    // Pull has no model filter; the client keeps only its own models.
    assert_eq!(a.get("note", "n").await, None);
    assert_eq!(
        *modes.lock().expect("modes"),
        [LiveMode::LongPoll],
        "the WebSocket never got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_report_a_conflict_and_resolve_by_lww() {
    let server = Server::start();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(named_auth(&server, "ann", "t1"))
        .actor("ann")
        .on_event(move |e| seen.lock().expect("events").push(e.clone()))
        .build()
        .await
        .expect("build");
    let b = client(&server, "t1", "bob", Transport::WebSocket).await;
    a.connect();
    b.connect();
    a.apply_change(
        "todo",
        Change::insert("1", json!({"title": "t", "owner": "ann"})),
    )
    .await
    .expect("insert");
    converged(&a, &server, "t1", "todo", 30).await;
    converged(&b, &server, "t1", "todo", 30).await;

    // Ann's pushes fail for a while: her edit stays queued when Bob's,
    // made later, arrives.
    server.fail("status=503&route=push&client=ann").await;
    a.apply_change(
        "todo",
        Change::update("1", json!({"title": "ann's", "owner": "ann2"})),
    )
    .await
    .expect("ann edits");
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.apply_change("todo", Change::update("1", json!({"title": "bob's"})))
        .await
        .expect("bob edits");
    converged(&b, &server, "t1", "todo", 30).await;
    eventually(30, "ann sees bob's edit while hers is queued", || async {
        events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::Conflict { pk, remote_lost: false, .. } if pk == "1"))
    })
    .await;
    assert_eq!(a.queue_stats().await.queued, 1);
    assert!(events.lock().expect("events").iter().any(|e| matches!(
        e,
        Event::Retry {
            operation: "push",
            ..
        }
    )));
    server.fail_with(0).await;
    converged(&a, &server, "t1", "todo", 30).await;
    converged(&b, &server, "t1", "todo", 30).await;
    // Field by field: Bob's later title wins, Ann's owner survives.
    let want = json!({"title": "bob's", "owner": "ann2"});
    assert_eq!(server.rows("t1", "todo").await["1"], want);
    assert_eq!(a.get("todo", "1").await, Some(want.clone()));
    assert_eq!(b.get("todo", "1").await, Some(want));
    assert!(
        events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::Push { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_local_store_is_reported_not_wiped() {
    use sea_orm::ConnectionTrait;
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("device.db");
    let build = || {
        SyncClient::builder()
            .base_url(server.url())
            .models(["todo"])
            .storage(Storage::sqlite(&path))
            .auth(Auth::bearer(server.token("ann", "t1")))
            .build()
    };
    let c = build().await.expect("build");
    c.apply_change("todo", Change::insert("1", json!({"n": 1})))
        .await
        .expect("insert");
    c.close().await;
    let db = sea_orm::Database::connect(format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    db.execute_unprepared("INSERT INTO better_sync_outbox (key, change) VALUES (99, 'not json')")
        .await
        .expect("corrupt it");
    let e = build().await.expect_err("refuses to start");
    assert_eq!(e.code(), "STORAGE");
    assert!(e.message().contains("outbox entry 99"), "{e}");
    // Nothing was thrown away: the good entry is still there.
    let n = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT COUNT(*) AS n FROM better_sync_outbox",
        ))
        .await
        .expect("count")
        .expect("row")
        .try_get::<i64>("", "n")
        .expect("n");
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_goes_out_in_batches_of_at_most_1000_changes_or_256_kib() {
    let server = Server::start();
    let pushes = Arc::new(Mutex::new(Vec::new()));
    let seen = pushes.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo", "note"])
        .auth(Auth::bearer(server.token("ann", "t1")))
        .on_event(move |e| {
            if let Event::Push { changes, .. } = e {
                seen.lock().expect("pushes").push(*changes);
            }
        })
        .build()
        .await
        .expect("build");
    // Pushes are refused until every write is in the outbox: otherwise the
    // push loop may take the first writes before the rest arrive, and the
    // split depends on timing (seen: [1, 2, 2] instead of [2, 2, 1]).
    server.fail("status=503&route=push").await;
    for i in 0..2500 {
        a.apply_change("todo", Change::insert(format!("{i}"), json!({"i": i})))
            .await
            .expect("insert");
    }
    server.fail_with(0).await;
    a.drain().await.expect("drain");
    assert_eq!(*pushes.lock().expect("pushes"), [1000, 1000, 500]);
    pushes.lock().expect("pushes").clear();
    // 100 KiB payloads: two fit in 256 KiB, three do not.
    let text = "x".repeat(100 * 1024);
    server.fail("status=503&route=push").await;
    for i in 0..5 {
        a.apply_change(
            "note",
            Change::insert(format!("{i}"), json!({"text": text})),
        )
        .await
        .expect("insert");
    }
    server.fail_with(0).await;
    a.drain().await.expect("drain");
    assert_eq!(*pushes.lock().expect("pushes"), [2, 2, 1]);
    assert_eq!(server.rows("t1", "todo").await.len(), 2500);
    assert_eq!(server.rows("t1", "note").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_does_not_stop_syncing_and_dropping_the_client_stops_it() {
    let server = Server::start();
    let pulls = Arc::new(AtomicUsize::new(0));
    let count = pulls.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(Auth::bearer(server.token("ann", "t1")))
        .on_event(move |e| {
            if let Event::Pull { .. } = e {
                count.fetch_add(1, Ordering::SeqCst);
            }
            panic!("a buggy metrics hook");
        })
        .build()
        .await
        .expect("build");
    a.connect();
    a.apply_change("todo", Change::insert("1", json!({"n": 1})))
        .await
        .expect("insert");
    converged(&a, &server, "t1", "todo", 30).await;
    let b = client(&server, "t1", "bob", Transport::WebSocket).await;
    b.apply_change("todo", Change::insert("2", json!({"n": 2})))
        .await
        .expect("insert");
    b.drain().await.expect("drain");
    converged(&a, &server, "t1", "todo", 30).await;
    assert!(pulls.load(Ordering::SeqCst) > 0);

    // Dropping every handle stops the background tasks.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = pulls.load(Ordering::SeqCst);
    b.apply_change("todo", Change::insert("3", json!({"n": 3})))
        .await
        .expect("insert");
    b.drain().await.expect("drain");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(pulls.load(Ordering::SeqCst), before, "no pulls after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_stays_up_on_heartbeats() {
    // The test server pings every 2 s; the client gives up on a link after
    // twice that plus 5 s of silence. Idle for longer: nothing may break.
    let server = Server::start();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let a = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .auth(Auth::bearer(server.token("ann", "t1")))
        .on_event(move |e| seen.lock().expect("events").push(e.clone()))
        .build()
        .await
        .expect("build");
    a.connect();
    eventually(30, "synced", || async {
        events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::Synced { .. }))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let events = events.lock().expect("events").clone();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Retry { .. } | Event::Online(false))),
        "the idle link was dropped: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Synced { .. }))
            .count(),
        1,
        "one subscription all along: {events:?}"
    );
}

/// Arbitrary values (every double, subnormals, integers at and beyond 64
/// bits, every string escape, astral characters, nesting to the limit)
/// written by one client come back exactly: both replicas equal the
/// server's rows, which equal what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_comes_back_exactly() {
    use json_corpus::{EDGE_FLOATS, Gen, Rng};
    let server = Server::start();
    let mut rng = Rng::new(json_corpus::seed());
    let a = client(&server, "exact", "writer", Transport::WebSocket).await;
    let b = client(&server, "exact", "reader", Transport::Http).await;
    let mut values: Vec<Value> = EDGE_FLOATS.iter().map(|f| json!(f)).collect();
    values.push(json!(u64::MAX));
    values.push(json!(i64::MIN));
    values.push(Gen::nested(31, 5e-324).expected());
    while values.len() < 150 {
        values.push(Gen::arbitrary(&mut rng, 5).expected());
    }
    let mut written = BTreeMap::new();
    for (i, v) in values.into_iter().enumerate() {
        let id = format!("e{i:03}");
        let row = json!({ "id": id, "v": v });
        a.apply_change("todo", Change::insert(&id, row.clone()))
            .await
            .expect("insert");
        written.insert(id, row);
    }
    a.connect();
    b.connect();
    converged(&a, &server, "exact", "todo", 30).await;
    converged(&b, &server, "exact", "todo", 30).await;
    let server_rows = server.rows("exact", "todo").await;
    for (id, row) in &written {
        assert_eq!(server_rows.get(id), Some(row), "{id}");
    }
    assert_eq!(rows(&a, "todo").await, server_rows);
    assert_eq!(rows(&b, "todo").await, server_rows);
}

/// A rolling deploy: three server processes on one Postgres database, the
/// clients reach one of them through a load balancer (a proxy), which moves
/// traffic to another while that one drains (SIGTERM). The clients
/// reconnect through the proxy on their own and lose nothing: every change
/// they made is on the server, and every replica converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_loses_nothing_and_clients_converge_through_the_others() {
    let url = support::postgres_database().await;
    let a = Server::start_on(&url);
    let b = Server::start_on(&url);
    let mut c = Server::start_on(&url);
    let proxy = support::Proxy::start(&c.addr).await;
    let behind = |actor: &str, transport: Transport| {
        SyncClient::builder()
            .base_url(proxy.url())
            .models(["todo", "note"])
            .transport(transport)
            .auth(Auth::bearer(a.token(actor, "rolling")))
            .actor(actor)
            .build()
    };
    let writer = behind("writer", Transport::WebSocket).await.expect("build");
    let watcher = behind("watcher", Transport::WebSocket)
        .await
        .expect("build");
    let direct = client(&b, "rolling", "direct", Transport::Http).await;
    writer.connect();
    watcher.connect();
    direct.connect();
    for i in 0..20 {
        writer
            .apply_change("todo", Change::insert(format!("r{i}"), json!({"n": i})))
            .await
            .expect("insert");
    }
    // (The writer first: `converged` compares with the server as it is.)
    converged(&writer, &a, "rolling", "todo", 30).await;
    converged(&watcher, &a, "rolling", "todo", 30).await;

    // The balancer sends new connections to A; C drains.
    proxy.switch_to(&a.addr);
    let draining = tokio::task::spawn_blocking(move || {
        let clean = c.terminate();
        (c, clean)
    });
    for i in 20..40 {
        writer
            .apply_change("todo", Change::insert(format!("r{i}"), json!({"n": i})))
            .await
            .expect("insert");
        direct
            .apply_change("note", Change::insert(format!("n{i}"), json!({"n": i})))
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_c, clean) = draining.await.expect("terminate");
    assert!(clean, "the draining server exited cleanly");
    // Everything queued is acknowledged, then every replica converges.
    for client in [&writer, &direct] {
        tokio::time::timeout(Duration::from_secs(30), client.drain())
            .await
            .expect("drain in time")
            .expect("drain");
    }
    for client in [&writer, &watcher, &direct] {
        converged(client, &a, "rolling", "todo", 30).await;
        converged(client, &a, "rolling", "note", 30).await;
    }
    assert_eq!(rows(&writer, "todo").await.len(), 40);
    assert_eq!(rows(&watcher, "note").await.len(), 20);
    assert_eq!(writer.queue_stats().await.queued, 0);
}

/// The client reports its true state: a refused token is "auth failed"
/// (not offline), the retries say their delay, the outbox size is told, and
/// a renewed token recovers with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_auth_failure_retries_and_outbox_then_recovers() {
    let server = Server::start();
    let token = Arc::new(Mutex::new(String::from("not-a-valid-token")));
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let c = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .transport(Transport::Http)
        .auth(Auth::bearer_with({
            let t = token.clone();
            move || {
                let t = t.lock().expect("token").clone();
                async move { Ok(t) }
            }
        }))
        .on_event({
            let events = events.clone();
            move |e| events.lock().expect("events").push(e.clone())
        })
        .build()
        .await
        .expect("build");
    c.apply_change("todo", Change::insert("s1", json!({"title": "kept"})))
        .await
        .expect("insert");
    c.connect();
    let seen = |f: &dyn Fn(&Event) -> bool| events.lock().expect("events").iter().any(f);
    eventually(20, "an auth failure event", || async {
        seen(&|e| matches!(e, Event::Auth { ok: false, error: Some(e) } if e.status() == 401))
    })
    .await;
    let stats = c.queue_stats().await;
    assert!(stats.auth_failed);
    assert!(stats.online, "the server answered: not offline");
    assert_eq!(stats.queued, 1, "the change stays queued");
    assert!(seen(&|e| matches!(e, Event::Outbox { queued: 1 })));
    eventually(20, "a retry event with its delay", || async {
        seen(&|e| matches!(e, Event::Retry { delay, .. } if !delay.is_zero()))
    })
    .await;

    *token.lock().expect("token") = server.token("ann", "state");
    tokio::time::timeout(Duration::from_secs(30), c.drain())
        .await
        .expect("drain in time")
        .expect("drain");
    assert!(seen(&|e| matches!(e, Event::Auth { ok: true, .. })));
    assert!(seen(&|e| matches!(e, Event::Outbox { queued: 0 })));
    let stats = c.queue_stats().await;
    assert!(!stats.auth_failed);
    assert_eq!(server.rows("state", "todo").await.len(), 1);
}

/// A client offline with queued changes while the server compacts its log
/// past the client's cursor: on reconnecting it is told its cursor is stale
/// (`SYNC:CURSOR_STALE`), bootstraps again from the snapshot, keeps and
/// pushes its queue, and ends equal to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_compacted_log_bootstraps_again_and_keeps_its_queue() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("device.db");
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let open = || {
        let events = events.clone();
        SyncClient::builder()
            .base_url(server.url())
            .models(["todo"])
            .storage(Storage::sqlite(&path))
            .auth(Auth::bearer(server.token("ann", "compacted")))
            .on_event(move |e| events.lock().expect("events").push(e.clone()))
            .build()
    };
    let writer = client(&server, "compacted", "bob", Transport::Http).await;
    writer.connect();
    for i in 0..5 {
        writer
            .apply_change("todo", Change::insert(format!("b{i}"), json!({"n": i})))
            .await
            .expect("insert");
    }
    let c = open().await.expect("build");
    c.connect();
    converged(&writer, &server, "compacted", "todo", 30).await;
    converged(&c, &server, "compacted", "todo", 30).await;
    c.close().await;

    // Offline: own changes queue up, among them one to a row that the
    // others delete meanwhile (its tombstone is purged by the compaction).
    let c = open().await.expect("reopen");
    c.apply_change("todo", Change::insert("mine", json!({"by": "ann"})))
        .await
        .expect("insert");
    c.apply_change("todo", Change::update("b1", json!({"n": 100})))
        .await
        .expect("update");
    for i in 0..20 {
        writer
            .apply_change(
                "todo",
                Change::update(format!("b{}", i % 5), json!({"m": i})),
            )
            .await
            .expect("update");
    }
    writer
        .apply_change("todo", Change::delete("b4"))
        .await
        .expect("delete");
    converged(&writer, &server, "compacted", "todo", 30).await;
    assert!(server.compact(3).await > 0, "the log was compacted");

    c.connect();
    converged(&c, &server, "compacted", "todo", 30).await;
    let mine = rows(&c, "todo").await;
    assert_eq!(
        mine["mine"],
        json!({"by": "ann"}),
        "the queued insert arrived"
    );
    assert_eq!(mine["b1"]["n"], 100, "the queued update arrived");
    assert!(!mine.contains_key("b4"), "the delete it missed shows");
    assert_eq!(mine.len(), 5);
    assert!(
        events
            .lock()
            .expect("events")
            .iter()
            .any(|e| matches!(e, Event::Resync { reason } if reason == "SYNC:CURSOR_STALE")),
        "the client said it bootstrapped again, and why"
    );
    assert_eq!(c.queue_stats().await.queued, 0);
}

/// A token that expires while the client is subscribed: the server ends the
/// session at `exp` (`SYNC:UNAUTHORIZED`, close 1008); the client renews
/// the token through its refresh hook, subscribes again from its cursor,
/// and misses none of the changes made across the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_stream_is_renewed_and_nothing_is_missed() {
    let server = Server::start();
    let secret = support::SECRET;
    let short = |secs: u64| better_sync::testing::dev_token(secret, "ann", "expiry", secs);
    let token = Arc::new(Mutex::new(short(3)));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let reader = SyncClient::builder()
        .base_url(server.url())
        .models(["todo"])
        .transport(Transport::WebSocket)
        .auth(
            Auth::bearer_with({
                let t = token.clone();
                move || {
                    let t = t.lock().expect("token").clone();
                    async move { Ok(t) }
                }
            })
            .refresh({
                let t = token.clone();
                let refreshes = refreshes.clone();
                move || {
                    *t.lock().expect("token") = short(3600);
                    refreshes.fetch_add(1, Ordering::SeqCst);
                    async { Ok(()) }
                }
            }),
        )
        .build()
        .await
        .expect("build");
    reader.connect();
    let writer = client(&server, "expiry", "bob", Transport::Http).await;
    writer.connect();
    // Writes across the expiry, 3 s from now.
    for i in 0..25 {
        writer
            .apply_change("todo", Change::insert(format!("w{i}"), json!({"i": i})))
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    converged(&writer, &server, "expiry", "todo", 30).await;
    converged(&reader, &server, "expiry", "todo", 30).await;
    assert_eq!(rows(&reader, "todo").await.len(), 25);
    assert!(
        refreshes.load(Ordering::SeqCst) >= 1,
        "the expired token was renewed through the hook"
    );
}

/// A model read and written as the app's own type: inserts from values,
/// partial updates, rows decoded (a row of another shape is an error naming
/// it), a live stream of typed rows, and the server holding the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_read_and_written_as_the_apps_own_type() {
    use futures_util::StreamExt;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Todo {
        title: String,
        done: bool,
    }
    let server = Server::start();
    let c = client(&server, "typed", "ann", Transport::Http).await;
    let todos = c.model::<Todo>("todo");
    let mut live = Box::pin(todos.subscribe(Filter::eq("done", false)));
    assert_eq!(live.next().await.expect("first").expect("decoded"), vec![]);

    todos
        .insert(
            "1",
            &Todo {
                title: "write".into(),
                done: false,
            },
        )
        .await
        .expect("insert");
    todos
        .insert(
            "2",
            &Todo {
                title: "ship".into(),
                done: false,
            },
        )
        .await
        .expect("insert");
    // The stream reports each change that alters the rows (two close
    // inserts may come as one).
    loop {
        let rows = live.next().await.expect("change").expect("decoded");
        if rows.len() == 2 {
            break;
        }
    }
    todos
        .update("2", &json!({"done": true}))
        .await
        .expect("update");
    assert_eq!(
        live.next().await.expect("change").expect("decoded"),
        vec![Todo {
            title: "write".into(),
            done: false
        }]
    );
    assert_eq!(
        todos.get("2").await.expect("decoded"),
        Some(Todo {
            title: "ship".into(),
            done: true
        })
    );
    assert_eq!(todos.all().await.expect("decoded").len(), 2);
    todos.delete("1").await.expect("delete");
    assert_eq!(todos.get("1").await.expect("decoded"), None);

    // A row of another shape (written untyped) is an error that names it.
    c.apply_change("todo", Change::insert("odd", json!({"title": 3})))
        .await
        .expect("insert");
    let err = todos.all().await.expect_err("does not decode");
    assert_eq!(err.code(), better_sync_client::codes::DECODE);
    assert!(err.to_string().contains("todo/odd"), "{err}");

    c.connect();
    converged(&c, &server, "typed", "todo", 30).await;
    assert_eq!(
        server.rows("typed", "todo").await["2"],
        json!({"title": "ship", "done": true})
    );
}

/// A client announces the model versions it was built for: an older one the
/// server upgrades is served (its pushes arrive in the current form); one
/// the server cannot serve is reported, and keeps its queue until an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_versions_are_announced_and_a_refusal_is_reported() {
    let server = Server::start();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let seen = events.clone();
    let newer = SyncClient::builder()
        .base_url(server.url())
        .models(["todo", "note"])
        .auth(Auth::bearer(server.token("nina", "acme")))
        .model_versions([("note", 3)])
        .on_event(move |e| seen.lock().expect("events").push(e.clone()))
        .build()
        .await
        .expect("build");
    newer
        .apply_change(
            "note",
            Change::insert("n1", json!({"body": "from the future"})),
        )
        .await
        .expect("queued");
    newer.connect();
    eventually(20, "the refusal is reported", || async {
        newer.queue_stats().await.version_unsupported
    })
    .await;
    let refusal = events
        .lock()
        .expect("events")
        .iter()
        .find_map(|e| match e {
            Event::VersionUnsupported { error } => Some(error.clone()),
            _ => None,
        })
        .expect("event");
    assert_eq!(refusal.status(), 409);
    assert_eq!(refusal.meta().map(|m| m["current"].clone()), Some(json!(2)));
    assert_eq!(newer.queue_stats().await.queued, 1, "the queue is kept");
    assert!(server.rows("acme", "note").await.is_empty());

    let older = SyncClient::builder()
        .base_url(server.url())
        .models(["todo", "note"])
        .auth(Auth::bearer(server.token("olga", "acme")))
        .model_versions([("note", 1), ("todo", 1)])
        .build()
        .await
        .expect("build");
    older
        .apply_change(
            "note",
            Change::insert("n2", json!({"text": "written by version 1"})),
        )
        .await
        .expect("queued");
    older.connect();
    tokio::time::timeout(Duration::from_secs(20), older.drain())
        .await
        .expect("drained in time")
        .expect("drain");
    let stored = server.rows("acme", "note").await;
    assert_eq!(stored["n2"]["body"], "written by version 1", "{stored:?}");
    assert!(stored["n2"].get("text").is_none(), "{stored:?}");
}
