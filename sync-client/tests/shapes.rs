//! Shape subscriptions through the Rust client against a real server (a
//! child process on a SQLite file): rows of several shapes in one store,
//! rows moving in and out as fields and memberships change, refusals, a
//! restart, and a randomized run checked against the server's own answer
//! for each shape.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_sync_client::{Auth, Change, Event, Filter, Storage, SyncClient, Transport};
use serde_json::{Value, json};
use support::{Server, eventually};

child_server_main!();

const TENANT: &str = "acme";

/// A client replicating `task` and `member` whole: it writes the data.
async fn writer(server: &Server, actor: &str) -> SyncClient {
    let c = SyncClient::builder()
        .base_url(server.url())
        .models(["task", "member"])
        .auth(Auth::bearer(server.token(actor, TENANT)))
        .actor(actor)
        .build()
        .await
        .expect("build writer");
    c.connect();
    c
}

/// A client holding shapes only, as `user`; its events are kept.
async fn reader(
    server: &Server,
    user: &str,
    transport: Transport,
    storage: Storage,
) -> (SyncClient, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let c = SyncClient::builder()
        .base_url(server.url())
        .shapes_only()
        .transport(transport)
        .storage(storage)
        .auth(Auth::bearer(server.token(user, TENANT)))
        .actor(user)
        .long_poll_wait(Duration::from_secs(2))
        .on_event(move |e| log.lock().expect("events").push(e.clone()))
        .build()
        .await
        .expect("build reader");
    (c, events)
}

async fn rows(c: &SyncClient, model: &str) -> BTreeMap<String, Value> {
    c.query(model, &Filter::all())
        .await
        .into_iter()
        .map(|r| (r.id, r.value))
        .collect()
}

async fn ids(c: &SyncClient) -> BTreeSet<String> {
    rows(c, "task").await.into_keys().collect()
}

async fn until_ids(c: &SyncClient, want: &[&str], what: &str) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = ids(c).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the reader should hold exactly {want:?}, holds {now:?}; {:?}",
            c.queue_stats().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(c: &SyncClient, model: &str, change: Change) {
    c.apply_change(model, change).await.expect("write");
    c.drain().await.expect("drain");
}

fn task(id: &str, project: &str, title: &str) -> Change {
    Change::insert(id, json!({"id": id, "project_id": project, "title": title}))
}

fn member(user: &str, project: &str) -> Change {
    let id = format!("{user}@{project}");
    Change::insert(
        id.clone(),
        json!({"id": id, "user_id": user, "project_id": project}),
    )
}

/// Two shapes in one store; every move in and out; unsubscribing; the
/// union in a live query. Over the WebSocket and over long-poll.
async fn rows_move_in_and_out(transport: Transport) {
    let server = Server::start();
    let admin = writer(&server, "admin").await;
    write(&admin, "member", member("bob", "p1")).await;
    write(&admin, "member", member("bob", "p2")).await;
    for (id, project) in [("t1", "p1"), ("t2", "p2"), ("t3", "p3"), ("t4", "p1")] {
        write(&admin, "task", task(id, project, &format!("task {id}"))).await;
    }
    let (bob, events) = reader(&server, "bob", transport, Storage::memory()).await;
    bob.subscribe_shape("project_tasks", json!({"project": "p1"}))
        .await
        .expect("subscribe p1");
    bob.subscribe_shape("project_tasks", json!({"project": "p2"}))
        .await
        .expect("subscribe p2");
    // Again, with the same params: still two subscriptions.
    bob.subscribe_shape("project_tasks", json!({"project": "p2"}))
        .await
        .expect("subscribe p2 again");
    assert_eq!(bob.shapes().await.len(), 2);
    let mut live = bob.subscribe_query("task", Filter::all());
    bob.connect();
    until_ids(&bob, &["t1", "t2", "t4"], "both shapes bootstrapped").await;
    assert_eq!(
        bob.query("task", &Filter::eq("id", "t1")).await[0].value,
        json!({"id": "t1", "project_id": "p1", "title": "task t1"})
    );
    let union = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(rows) = live.next().await {
            if rows.len() == 3 {
                return rows;
            }
        }
        panic!("the live query ended");
    })
    .await
    .expect("the live query shows the union");
    assert_eq!(union.len(), 3);
    let synced = events
        .lock()
        .expect("events")
        .iter()
        .filter(|e| matches!(e, Event::ShapeSynced { name, .. } if name == "project_tasks"))
        .count();
    assert!(synced >= 2, "each shape reported synced");

    // A membership removed: the project's rows leave.
    admin
        .apply_change("member", Change::delete("bob@p2"))
        .await
        .expect("delete member");
    admin.drain().await.expect("drain");
    until_ids(&bob, &["t1", "t4"], "bob left p2").await;
    // A field change moves a row out, another moves one in, whole.
    write(
        &admin,
        "task",
        Change::update("t1", json!({"project_id": "p3"})),
    )
    .await;
    write(
        &admin,
        "task",
        Change::update("t3", json!({"project_id": "p1"})),
    )
    .await;
    until_ids(&bob, &["t3", "t4"], "t1 moved out, t3 moved in").await;
    assert_eq!(
        rows(&bob, "task").await["t3"],
        json!({"id": "t3", "project_id": "p1", "title": "task t3"}),
        "a row moving in comes whole, not only the changed field"
    );
    // A change to a held row arrives; a deleted row leaves.
    write(
        &admin,
        "task",
        Change::update("t4", json!({"title": "renamed"})),
    )
    .await;
    eventually(10, "the rename arrives", || async {
        rows(&bob, "task")
            .await
            .get("t4")
            .and_then(|v| v.get("title").cloned())
            == Some(json!("renamed"))
    })
    .await;
    write(&admin, "task", Change::delete("t3")).await;
    until_ids(&bob, &["t4"], "t3 deleted").await;
    // Membership back: the project's rows come in again.
    write(&admin, "member", member("bob", "p2")).await;
    until_ids(&bob, &["t2", "t4"], "bob back in p2").await;
    // A local write of bob's is pushed; nothing about retractions is.
    bob.apply_change("task", task("t5", "p2", "bob's"))
        .await
        .expect("bob writes");
    bob.drain().await.expect("bob drains");
    until_ids(&bob, &["t2", "t4", "t5"], "bob's own task").await;
    // Unsubscribing drops the rows only that shape held.
    bob.unsubscribe_shape("project_tasks", json!({"project": "p2"}))
        .await
        .expect("unsubscribe");
    until_ids(&bob, &["t4"], "p2 unsubscribed").await;
    // The server still has every row: retraction is not deletion.
    let on_server = server.rows(TENANT, "task").await;
    assert!(on_server.contains_key("t2") && on_server.contains_key("t5"));
    bob.close().await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_rows_move_in_and_out_over_the_websocket() {
    rows_move_in_and_out(Transport::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_rows_move_in_and_out_over_long_poll() {
    rows_move_in_and_out(Transport::Http).await;
}

/// Two shapes holding one row: retracting it from one keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_two_shapes_hold_stays_until_both_let_go() {
    let server = Server::start();
    let admin = writer(&server, "admin").await;
    write(&admin, "member", member("bob", "p1")).await;
    write(&admin, "task", task("t1", "p1", "shared")).await;
    let (bob, _) = reader(&server, "bob", Transport::WebSocket, Storage::memory()).await;
    bob.subscribe_shape("my_tasks", Value::Null)
        .await
        .expect("my");
    bob.subscribe_shape("project_tasks", json!({"project": "p1"}))
        .await
        .expect("p1");
    bob.connect();
    until_ids(&bob, &["t1"], "both hold t1").await;
    bob.unsubscribe_shape("my_tasks", Value::Null)
        .await
        .expect("unsubscribe");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&bob).await, BTreeSet::from(["t1".to_owned()]));
    write(&admin, "member", member("bob", "p9")).await;
    write(
        &admin,
        "task",
        Change::update("t1", json!({"project_id": "p9"})),
    )
    .await;
    until_ids(&bob, &[], "t1 left p1, and no shape holds it").await;
    bob.close().await;
    admin.close().await;
}

/// Unknown shapes and bad params: refused, reported, dropped; the other
/// subscriptions go on. Bad requests a client can see are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_shapes_are_reported_and_dropped_and_the_rest_goes_on() {
    let server = Server::start();
    let admin = writer(&server, "admin").await;
    write(&admin, "member", member("bob", "p1")).await;
    write(&admin, "task", task("t1", "p1", "kept")).await;
    for transport in [Transport::WebSocket, Transport::Http] {
        let (bob, events) = reader(&server, "bob", transport, Storage::memory()).await;
        bob.subscribe_shape("no_such_shape", Value::Null)
            .await
            .expect("recorded");
        bob.subscribe_shape("project_tasks", json!({"project": 7}))
            .await
            .expect("recorded");
        bob.subscribe_shape("project_tasks", json!({}))
            .await
            .expect("recorded");
        bob.subscribe_shape("project_tasks", json!({"project": "p1"}))
            .await
            .expect("recorded");
        bob.connect();
        let p1: Vec<String> = server
            .rows(TENANT, "task")
            .await
            .into_iter()
            .filter(|(_, v)| v["project_id"] == "p1")
            .map(|(id, _)| id)
            .collect();
        let p1: Vec<&str> = p1.iter().map(String::as_str).collect();
        until_ids(&bob, &p1, "the good shape works").await;
        eventually(10, "three refusals reported", || async {
            let refused: BTreeSet<String> = events
                .lock()
                .expect("events")
                .iter()
                .filter_map(|e| match e {
                    Event::ShapeRefused {
                        name,
                        params,
                        error,
                    } => Some(format!("{name} {params} {}", error.code())),
                    _ => None,
                })
                .collect();
            refused
                == BTreeSet::from([
                    "no_such_shape null SYNC:UNKNOWN_SHAPE".to_owned(),
                    "project_tasks {\"project\":7} SYNC:INVALID_SHAPE_PARAMS".to_owned(),
                    "project_tasks {} SYNC:INVALID_SHAPE_PARAMS".to_owned(),
                ])
        })
        .await;
        assert_eq!(
            bob.shapes().await,
            vec![("project_tasks".to_owned(), json!({"project": "p1"}))],
            "{transport:?}: refused subscriptions are dropped"
        );
        // Still live after the refusals.
        write(
            &admin,
            "task",
            task(&format!("t-{transport:?}"), "p1", "new"),
        )
        .await;
        eventually(10, "a new row arrives after the refusals", || async {
            ids(&bob).await.contains(&format!("t-{transport:?}"))
        })
        .await;
        let bad = bob.subscribe_shape("no spaces", Value::Null).await;
        assert_eq!(bad.expect_err("bad name").code(), "SYNC:INVALID_QUERY");
        let bad = bob.subscribe_shape("project_tasks", json!(["p1"])).await;
        assert_eq!(
            bad.expect_err("bad params").code(),
            "SYNC:INVALID_SHAPE_PARAMS"
        );
        bob.close().await;
    }
    admin.close().await;
}

/// Subscriptions and held rows survive a restart; a membership removed
/// while the client was away takes the rows when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_restart_and_catch_up_with_moves_made_meanwhile() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bob.db");
    let admin = writer(&server, "admin").await;
    write(&admin, "member", member("bob", "p1")).await;
    write(&admin, "member", member("bob", "p2")).await;
    write(&admin, "task", task("t1", "p1", "one")).await;
    write(&admin, "task", task("t2", "p2", "two")).await;
    for transport in [Transport::WebSocket, Transport::Http] {
        let (bob, _) = reader(&server, "bob", transport, Storage::sqlite(&file)).await;
        bob.subscribe_shape("my_tasks", Value::Null)
            .await
            .expect("my");
        bob.connect();
        until_ids(&bob, &["t1", "t2"], "first run").await;
        bob.close().await;
        drop(bob);
        // Away: p2 is taken from bob, p1 gets a task.
        admin
            .apply_change("member", Change::delete("bob@p2"))
            .await
            .expect("leave p2");
        write(&admin, "task", task("t3", "p1", "three")).await;
        let (bob, _) = reader(&server, "bob", transport, Storage::sqlite(&file)).await;
        assert_eq!(
            bob.shapes().await,
            vec![("my_tasks".to_owned(), Value::Null)]
        );
        assert_eq!(
            ids(&bob).await,
            BTreeSet::from(["t1".to_owned(), "t2".to_owned()]),
            "offline, the stored rows are there"
        );
        bob.connect();
        until_ids(&bob, &["t1", "t3"], "back online").await;
        bob.unsubscribe_shape("my_tasks", Value::Null)
            .await
            .expect("unsubscribe");
        assert!(ids(&bob).await.is_empty());
        bob.close().await;
        // Back to the start for the other transport.
        write(&admin, "member", member("bob", "p2")).await;
        admin
            .apply_change("task", Change::delete("t3"))
            .await
            .expect("delete t3");
        admin.drain().await.expect("drain");
    }
    admin.close().await;
}

/// A small deterministic generator (the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The projects each user may ever be a member of; `p5` has nobody.
const MAY_JOIN: [(&str, &[&str]); 3] = [
    ("u0", &["p0", "p1", "p2"]),
    ("u1", &["p2", "p3"]),
    ("u2", &["p0", "p4"]),
];
const PROJECTS: [&str; 6] = ["p0", "p1", "p2", "p3", "p4", "p5"];

/// What the server says a reader's shapes hold: each shape's snapshot read
/// as that user, joined.
async fn oracle(
    server: &Server,
    user: &str,
    shapes: &[(String, Value)],
) -> BTreeMap<String, Value> {
    let remote = server.remote(user, TENANT);
    let mut rows = BTreeMap::new();
    for (name, params) in shapes {
        let mut after: Option<String> = None;
        loop {
            let page = remote
                .snapshot_shape(name, params, after.as_deref(), None)
                .await
                .expect("shape snapshot");
            for r in page.rows {
                rows.insert(r.id, r.value);
            }
            match (page.has_more, page.next_after) {
                (true, Some(next)) => after = Some(next),
                _ => break,
            }
        }
    }
    rows
}

/// Writers change tasks and memberships while readers subscribe,
/// unsubscribe, disconnect and reconnect (over the WebSocket and long-poll).
/// A watcher looks at every reader all along: none ever holds a task of a
/// project its user can never join. At the end each reader holds exactly
/// what the server's shapes give its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_readers_end_equal_to_the_shapes_and_never_hold_a_foreign_row_sqlite() {
    randomized_readers(Server::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_readers_end_equal_to_the_shapes_and_never_hold_a_foreign_row_postgres() {
    randomized_readers(Server::start_on(&support::postgres_database().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_readers_end_equal_to_the_shapes_and_never_hold_a_foreign_row_mariadb() {
    randomized_readers(Server::start_on(&support::mariadb_database().await)).await;
}

async fn randomized_readers(server: Server) {
    let seed = std::env::var("SHAPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64
                | 1
        });
    eprintln!("SHAPE_SEED={seed}");
    let mut readers = Vec::new();
    for (n, (user, _)) in MAY_JOIN.iter().enumerate() {
        let transport = if n % 2 == 0 {
            Transport::WebSocket
        } else {
            Transport::Http
        };
        let (c, _) = reader(&server, user, transport, Storage::memory()).await;
        c.connect();
        readers.push((*user, c));
    }
    // What the run is doing, for the watchdog below.
    let step = Arc::new(Mutex::new(String::from("start")));
    let watchdog = {
        let readers: Vec<(&'static str, SyncClient)> =
            readers.iter().map(|(u, c)| (*u, c.clone())).collect();
        let step = step.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(150)).await;
            // A hang is a failure with what it was doing, not a stuck CI.
            eprintln!(
                "SHAPE_SEED={seed}: stuck at {:?}",
                step.lock().expect("step")
            );
            for (user, c) in &readers {
                let stats = tokio::time::timeout(Duration::from_secs(2), c.queue_stats()).await;
                eprintln!("  {user}: {stats:?}");
            }
            std::process::exit(101);
        })
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let leaks = Arc::new(Mutex::new(Vec::<String>::new()));
    let watcher = {
        let readers: Vec<(&'static str, SyncClient)> =
            readers.iter().map(|(u, c)| (*u, c.clone())).collect();
        let (done, leaks) = (done.clone(), leaks.clone());
        tokio::spawn(async move {
            let mut looks = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (user, c) in &readers {
                    let allowed = MAY_JOIN.iter().find(|(u, _)| u == user).expect("user").1;
                    for (id, value) in rows(c, "task").await {
                        let project = value.get("project_id").and_then(Value::as_str);
                        if !project.is_some_and(|p| allowed.contains(&p)) {
                            leaks
                                .lock()
                                .expect("leaks")
                                .push(format!("{user} held {id} = {value}"));
                        }
                    }
                }
                looks += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            looks
        })
    };
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let c = writer(&server, &format!("w{w}")).await;
        let mut rng = Rng(seed.wrapping_add(w * 7919) | 1);
        writers.push(tokio::spawn(async move {
            for _ in 0..120 {
                let roll = rng.below(10);
                let change = if roll < 4 {
                    let (user, may) = MAY_JOIN[rng.below(MAY_JOIN.len())];
                    let project = may[rng.below(may.len())];
                    if rng.below(2) == 0 {
                        ("member", member(user, project))
                    } else {
                        ("member", Change::delete(format!("{user}@{project}")))
                    }
                } else {
                    let id = format!("t{}", rng.below(30));
                    let project = PROJECTS[rng.below(PROJECTS.len())];
                    match rng.below(4) {
                        0 => ("task", Change::delete(id)),
                        1 => ("task", Change::update(id, json!({"project_id": project}))),
                        _ => {
                            let title = format!("title {}", rng.next() % 1000);
                            ("task", task(&id, project, &title))
                        }
                    }
                };
                c.apply_change(change.0, change.1).await.expect("write");
                if rng.below(4) == 0 {
                    c.drain().await.expect("drain");
                }
                tokio::time::sleep(Duration::from_millis(rng.below(30) as u64)).await;
            }
            c.drain().await.expect("drain");
            c.close().await;
        }));
    }
    let mut rng = Rng(seed ^ 0x5eed);
    for n in 0..100 {
        let (user, c) = &readers[rng.below(readers.len())];
        let may = MAY_JOIN.iter().find(|(u, _)| u == user).expect("user").1;
        let roll = rng.below(6);
        *step.lock().expect("step") = format!("reader op {n}: {user} roll {roll}");
        match roll {
            0 => c
                .subscribe_shape("my_tasks", Value::Null)
                .await
                .expect("sub"),
            1 | 2 => {
                // Sometimes a project the user can never join: it holds nothing.
                let project = if rng.below(3) == 0 {
                    PROJECTS[rng.below(PROJECTS.len())]
                } else {
                    may[rng.below(may.len())]
                };
                c.subscribe_shape("project_tasks", json!({"project": project}))
                    .await
                    .expect("sub");
            }
            3 => {
                let shapes = c.shapes().await;
                if !shapes.is_empty() {
                    let (name, params) = &shapes[rng.below(shapes.len())];
                    c.unsubscribe_shape(name, params.clone())
                        .await
                        .expect("unsub");
                }
            }
            4 => {
                c.disconnect().await;
                tokio::time::sleep(Duration::from_millis(rng.below(200) as u64)).await;
                c.connect();
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.below(60) as u64)).await;
    }
    *step.lock().expect("step") = "waiting for the writers".into();
    for w in writers {
        w.await.expect("writer");
    }
    *step.lock().expect("step") = "the last writes and the oracle".into();
    // The end holds something: every reader follows all its projects, and
    // u0 is in p1, which has a task.
    let last = writer(&server, "last").await;
    write(&last, "member", member("u0", "p1")).await;
    write(&last, "task", task("final", "p1", "last")).await;
    last.close().await;
    let mut held_at_end = 0;
    for (user, c) in &readers {
        c.subscribe_shape("my_tasks", Value::Null)
            .await
            .expect("sub");
        c.connect();
        let shapes = c.shapes().await;
        let message =
            format!("SHAPE_SEED={seed}: {user} with {shapes:?} equals the server's shapes");
        eventually(30, &message, || {
            let shapes = shapes.clone();
            let server = &server;
            async move { rows(c, "task").await == oracle(server, user, &shapes).await }
        })
        .await;
        held_at_end += rows(c, "task").await.len();
    }
    eprintln!("the readers hold {held_at_end} rows at the end");
    assert!(
        held_at_end > 0,
        "SHAPE_SEED={seed}: a run that ends with nothing held proves little"
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let looks = watcher.await.expect("watcher");
    assert!(looks > 20, "the watcher looked {looks} times");
    let leaks = leaks.lock().expect("leaks").clone();
    assert!(
        leaks.is_empty(),
        "SHAPE_SEED={seed}: {:?}",
        &leaks[..leaks.len().min(5)]
    );
    watchdog.abort();
    for (_, c) in readers {
        c.close().await;
    }
}
