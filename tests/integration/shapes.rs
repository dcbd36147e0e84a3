//! Shapes: a filter evaluated in SQL for bootstrap and in Rust for the live
//! path gives the same rows on random rows and random filters (comparisons
//! of every JSON type, IN, IS NULL, AND/OR, roles, parameters, the user,
//! membership lookups), on SQLite, Postgres and MariaDB; and the snapshot
//! route's shape bootstrap with its bad paths.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use better_sync::shape::{
    CompareOp, Filter, Lookup, Operand, ParamType, Shape, field, has_role, param, user_id,
};
use better_sync::{BetterSync, Ctx};
use common::{Backend, TestDb, TestServer, change};
use serde_json::{Map, Value, json};

/// An engine with the shape `my_todos`: the todos of every project the
/// caller is a member of.
fn membership_engine(db: &TestDb) -> BetterSync {
    common::builder(&db.db)
        .models(["member"])
        .shape(my_todos())
        .build()
        .expect("build")
}

fn my_todos() -> Shape {
    Shape::new("my_todos", "todo").filter(
        field("project_id")
            .in_lookup(Lookup::new("member", "project_id").filter(field("user_id").eq(user_id()))),
    )
}

/// A small deterministic generator (the seed is printed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

/// Values that probe the semantics: byte order of strings (case, accents,
/// the empty string), integers against floats, booleans, null.
fn value(r: &mut Rng) -> Value {
    match r.below(10) {
        0..=2 => json!(r.pick(&["a", "ab", "A", "B", "é", "", "p1", "p2", "ann", "bob"])),
        3..=5 => json!(r.pick(&[-1.0, 0.0, 1.0, 1.5, 2.0, 10.0])),
        6 => json!(r.pick(&[0, 1, 2, 3])),
        7 => json!(r.below(2) == 1),
        _ => Value::Null,
    }
}

const FIELDS: [&str; 4] = ["a", "b", "project_id", "owner"];

fn operand(r: &mut Rng) -> Operand {
    match r.below(6) {
        0 => param("s"),
        1 => param("n"),
        2 => user_id(),
        _ => {
            let mut v = value(r);
            while v.is_null() {
                v = value(r);
            }
            Operand::Value(v)
        }
    }
}

fn filter(r: &mut Rng, depth: usize) -> Filter {
    let f = r.pick(&FIELDS);
    match r.below(if depth == 0 { 6 } else { 9 }) {
        0 | 1 => {
            let op = r.pick(&[
                CompareOp::Eq,
                CompareOp::Ne,
                CompareOp::Lt,
                CompareOp::Le,
                CompareOp::Gt,
                CompareOp::Ge,
            ]);
            let mut o = operand(r);
            if op != CompareOp::Eq && op != CompareOp::Ne {
                // Booleans compare only for (in)equality.
                while matches!(&o, Operand::Value(Value::Bool(_))) {
                    o = operand(r);
                }
            }
            Filter::Compare {
                field: f.into(),
                op,
                operand: o,
            }
        }
        2 => field(f).is_in((0..1 + r.below(3)).map(|_| operand(r)).collect::<Vec<_>>()),
        3 => field(f).is_null(),
        4 => field(f).is_not_null(),
        5 => field(f).eq(param("b")),
        6 => filter(r, depth - 1).and(filter(r, depth - 1)),
        7 => filter(r, depth - 1).or(filter(r, depth - 1).or(has_role("admin"))),
        _ => field(r.pick(&["project_id", "a"])).in_lookup(
            Lookup::new("member", "project_id").filter(
                field("user_id")
                    .eq(user_id())
                    .or(field("user_id").eq(param("s")))
                    .and(filter(r, 0)),
            ),
        ),
    }
}

/// The engine with `n` random shapes (`random0`...), each taking the
/// parameters `s` (string), `n` (number) and `b` (boolean).
fn engine(db: &TestDb, r: &mut Rng, n: usize) -> BetterSync {
    let mut b = common::builder(&db.db).models(["member"]);
    for i in 0..n {
        b = b.shape(
            Shape::new(format!("random{i}"), "todo")
                .param("s", ParamType::String)
                .param("n", ParamType::Number)
                .param("b", ParamType::Bool)
                .filter(filter(r, 2)),
        );
    }
    b.build().expect("build")
}

fn row(r: &mut Rng, id: &str, fields: &[&str]) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    for f in fields {
        // Sometimes missing altogether.
        if r.below(6) > 0 {
            o.insert((*f).into(), value(r));
        }
    }
    Value::Object(o)
}

async fn all_rows(sync: &BetterSync, ctx: &Ctx, model: &str) -> Vec<Map<String, Value>> {
    let page = sync
        .snapshot(ctx, model, None, Some(1000))
        .await
        .expect("snapshot");
    page.rows
        .into_iter()
        .filter(|r| !r.deleted)
        .filter_map(|r| r.value.as_object().cloned())
        .collect()
}

async fn sql_and_rust_agree_on_random_rows(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("random");
    let seed = u64::from_le_bytes(seed) | 1;
    eprintln!("shapes seed {seed}");
    let mut r = Rng(seed);
    let shapes = 40;
    let sync = engine(&db, &mut r, shapes);

    // Rows of two tenants; some deleted (tombstones are never in a shape).
    for tenant in ["acme", "globex"] {
        let writer = Ctx::new("writer", tenant);
        let w = sync.write(&writer);
        for i in 0..60 {
            let id = format!("t{i}");
            w.insert("todo", &id, &row(&mut r, &id, &FIELDS))
                .await
                .expect("todo");
            if r.below(8) == 0 {
                w.delete("todo", &id).await.expect("delete");
            }
        }
        for i in 0..20 {
            let id = format!("m{i}");
            let mut m = row(&mut r, &id, &["a", "b"]);
            m["user_id"] = json!(r.pick(&["ann", "bob", "a", "ab"]));
            m["project_id"] = value(&mut r);
            w.insert("member", &id, &m).await.expect("member");
            if r.below(8) == 0 {
                w.delete("member", &id).await.expect("delete");
            }
        }
    }

    let mut checked = 0;
    // How many shapes held some rows but not all: the filters discriminate.
    let mut discriminating = 0;
    for user in ["ann", "bob", "a"] {
        for roles in [vec![], vec!["admin".to_owned()]] {
            let mut ctx = Ctx::new(user, "acme");
            ctx.roles = roles;
            let todos = all_rows(&sync, &ctx, "todo").await;
            let members = all_rows(&sync, &ctx, "member").await;
            let rows_of = |m: &str| -> Vec<&Map<String, Value>> {
                match m {
                    "todo" => todos.iter().collect(),
                    "member" => members.iter().collect(),
                    _ => Vec::new(),
                }
            };
            for i in 0..shapes {
                let name = format!("random{i}");
                let params = json!({
                    "s": r.pick(&["a", "ann", "p1", "", "B"]),
                    "n": r.pick(&[0.0, 1.0, 1.5, 2.0]),
                    "b": r.below(2) == 1,
                });
                let shape = sync.shape(&name).expect("shape");
                let rust: BTreeSet<String> = todos
                    .iter()
                    .filter(|t| {
                        shape
                            .holds_for(&ctx, Some(&params), t, &rows_of)
                            .expect("holds")
                    })
                    .map(|t| t["id"].as_str().expect("id").to_owned())
                    .collect();
                // The SQL answer, page by page.
                let mut sql = BTreeSet::new();
                let mut after: Option<String> = None;
                loop {
                    let page = sync
                        .snapshot_shape(&ctx, &name, Some(&params), after.as_deref(), Some(7))
                        .await
                        .unwrap_or_else(|e| panic!("{name} {:?}: {e}", shape));
                    sql.extend(page.rows.iter().map(|r| r.id.clone()));
                    if !page.has_more {
                        break;
                    }
                    after = page.next_after;
                }
                assert_eq!(
                    sql, rust,
                    "seed {seed}, {name} = {shape:?}, params {params}, user {user}, roles {:?}",
                    ctx.roles
                );
                checked += 1;
                if !rust.is_empty() && rust.len() < todos.len() {
                    discriminating += 1;
                }
            }
        }
    }
    assert_eq!(checked, shapes * 6);
    assert!(
        discriminating > checked / 4,
        "only {discriminating} of {checked} shapes held some rows but not all"
    );
    eprintln!("{discriminating} of {checked} shape evaluations held some rows but not all");
}

crate::per_backend!(
    sql_and_rust_agree_on_random_rows,
    shape_subscribers_converge_and_never_see_foreign_rows
);

/// `GET B/snapshot?shape=..&params=..`: the shape's rows of the caller's
/// tenant, paged, filtered by `can_read`; every bad input refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_route_bootstraps_a_shape() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = common::builder(&db.db)
        .models(["member"])
        .can_read(|_ctx, _model, row| row.get("secret") != Some(&Value::Bool(true)))
        .shape(
            Shape::new("project_todos", "todo")
                .param("project", ParamType::String)
                .filter(field("project_id").eq(param("project"))),
        )
        .shape(my_todos())
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let ann = server.client("ann", "acme");
    let at = "2026-01-01T00:00:00.000Z";
    let mut changes = Vec::new();
    for (i, project) in ["p1", "p1", "p2", "p1", "p3"].iter().enumerate() {
        let id = format!("t{i}");
        changes.push(change(
            &id,
            "todo",
            &id,
            "insert",
            json!({"project_id": project, "secret": i == 3}),
            at,
            "d",
        ));
    }
    changes.push(change(
        "m1",
        "member",
        "m1",
        "insert",
        json!({"user_id": "ann", "project_id": "p2"}),
        at,
        "d",
    ));
    changes.push(change(
        "m2",
        "member",
        "m2",
        "insert",
        json!({"user_id": "bob", "project_id": "p3"}),
        at,
        "d",
    ));
    assert_eq!(ann.push(Value::Array(changes)).await.status, 200);
    // The same keys in another tenant never show.
    let eve = server.client("eve", "globex");
    let a = eve
        .push(json!([change(
            "x",
            "todo",
            "t0",
            "insert",
            json!({"project_id": "p1"}),
            at,
            "d"
        )]))
        .await;
    assert_eq!(a.status, 200);

    let q = |s: &str| format!("?shape={}", s);
    let enc = |v: Value| form_urlencoded(&v.to_string());
    let page = ann
        .snapshot(&format!(
            "{}&params={}&limit=1",
            q("project_todos"),
            enc(json!({"project": "p1"}))
        ))
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(page.body["model"], "todo");
    assert_eq!(page.body["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.body["has_more"], true);
    let cursor = page.body["cursor"].as_str().expect("cursor").to_owned();
    let mut ids = vec![page.body["rows"][0]["id"].as_str().expect("id").to_owned()];
    let mut after = page.body["next_after"].as_str().map(str::to_owned);
    while let Some(a) = after {
        let p = ann
            .snapshot(&format!(
                "{}&params={}&limit=1&after={a}",
                q("project_todos"),
                enc(json!({"project": "p1"}))
            ))
            .await;
        ids.extend(
            p.body["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_owned()),
        );
        after = p.body["next_after"].as_str().map(str::to_owned);
    }
    // t3 is p1's but can_read hides it.
    assert_eq!(ids, ["t0", "t1"]);
    // The first page's cursor follows the log from there.
    assert_eq!(ann.pull(&format!("?cursor={cursor}")).await.status, 200);

    let mine = ann.snapshot(&q("my_todos")).await;
    let ids: Vec<&str> = mine.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["t2"], "{:?}", mine.body);
    let bobs = server.client("bob", "acme").snapshot(&q("my_todos")).await;
    assert_eq!(bobs.body["rows"][0]["id"], "t4", "{:?}", bobs.body);

    // sync.json says what can be subscribed.
    let meta = ann
        .send(server.http.get(server.url("/api/sync/sync.json")))
        .await;
    assert_eq!(
        meta.body["shapes"]["project_todos"],
        json!({"model": "todo", "params": {"project": "string"}, "lookups": []})
    );
    assert_eq!(
        meta.body["shapes"]["my_todos"]["lookups"],
        json!(["member"])
    );
    assert!(
        meta.body["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("shape-bootstrap")))
    );

    // Bad inputs.
    let refused = |a: &common::Answer, status: u16, code: &str| {
        assert_eq!((a.status, a.code()), (status, code), "{:?}", a.body);
    };
    refused(&ann.snapshot(&q("nope")).await, 422, "SYNC:UNKNOWN_SHAPE");
    refused(
        &ann.snapshot(&q("project_todos")).await,
        422,
        "SYNC:INVALID_SHAPE_PARAMS",
    );
    for bad in [
        json!({"project": 1}),
        json!({"project": "p1", "extra": 1}),
        json!(["p1"]),
        json!({}),
    ] {
        let a = ann
            .snapshot(&format!(
                "{}&params={}",
                q("project_todos"),
                enc(bad.clone())
            ))
            .await;
        refused(&a, 422, "SYNC:INVALID_SHAPE_PARAMS");
        assert_eq!(a.body["meta"]["shape"], "project_todos", "{bad}");
    }
    refused(
        &ann.snapshot(&format!("{}&params=%7Bnot-json", q("project_todos")))
            .await,
        422,
        "SYNC:INVALID_SHAPE_PARAMS",
    );
    refused(
        &ann.snapshot(&format!("{}&model=member", q("my_todos")))
            .await,
        400,
        "SYNC:INVALID_QUERY",
    );
    refused(&ann.snapshot("?shape=").await, 400, "SYNC:INVALID_QUERY");
    let no_token = server
        .http
        .get(server.url("/api/sync/snapshot?shape=my_todos"))
        .send()
        .await
        .expect("request");
    assert_eq!(no_token.status(), 401);
}

fn form_urlencoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_that_cannot_work_are_refused_at_build() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cases: BTreeMap<&str, Shape> = BTreeMap::from([
        ("not registered", Shape::new("s", "gadget")),
        (
            "not declared",
            Shape::new("s", "todo").filter(field("a").eq(param("p"))),
        ),
        ("field", Shape::new("s", "todo").filter(field("a.b").eq(1))),
        (
            "booleans",
            Shape::new("s", "todo").filter(field("a").lt(true)),
        ),
        (
            "lookup model",
            Shape::new("s", "todo").filter(field("a").in_lookup(Lookup::new("gadget", "x"))),
        ),
        ("shape name", Shape::new("a shape", "todo")),
    ]);
    for (what, shape) in cases {
        let err = common::builder(&db.db)
            .shape(shape)
            .build()
            .expect_err(what);
        assert!(err.to_string().starts_with("shape"), "{what}: {err}");
    }
}

/// The next `rows` message of a shape subscription (skipping pongs).
async fn next_rows(ws: &mut common::Ws) -> Value {
    loop {
        let m = common::ws_next(ws, 10).await.expect("a message");
        match m["type"].as_str() {
            Some("rows") => return m,
            Some("pong") => {}
            _ => panic!("unexpected {m}"),
        }
    }
}

fn ids(m: &Value, key: &str) -> Vec<String> {
    m[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r.get("id").unwrap_or(r).as_str().expect("id").to_owned())
        .collect()
}

/// A WebSocket subscription to a shape: the rows first (flagged `reset`),
/// then what moves in (whole rows, also when a membership is added), what
/// changes, and what moves out (retractions: a field changed, a membership
/// removed, a row deleted); rows of projects the user never belonged to are
/// never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_shape_subscription_moves_rows_in_and_out() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = membership_engine(&db);
    let server = TestServer::start(sync).await;
    let admin = server.client("admin", "acme");
    let ann = server.client("ann", "acme");
    let mut n = 0;
    let mut push = |model: &str, pk: &str, op: &str, payload: Value| {
        n += 1;
        let at = format!("2026-01-01T00:00:{:02}.000Z", n);
        change(&format!("c{n}"), model, pk, op, payload, &at, "admin")
    };
    let a = admin
        .push(json!([
            push(
                "member",
                "m1",
                "insert",
                json!({"user_id": "ann", "project_id": "p1"})
            ),
            push(
                "todo",
                "t1",
                "insert",
                json!({"project_id": "p1", "title": "one"})
            ),
            push(
                "todo",
                "t2",
                "insert",
                json!({"project_id": "p2", "title": "two"})
            ),
            push(
                "todo",
                "secret",
                "insert",
                json!({"project_id": "p9", "title": "never"})
            ),
        ]))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let mut ws = common::ws_connect(server.addr, &ann.token).await;
    common::ws_send(
        &mut ws,
        json!({"type": "subscribe", "id": "s", "shape": "my_todos"}),
    )
    .await;
    let first = next_rows(&mut ws).await;
    assert_eq!(first["reset"], true);
    assert_eq!(
        (first["id"].clone(), first["model"].clone()),
        (json!("s"), json!("todo"))
    );
    assert_eq!(ids(&first, "rows"), ["t1"]);
    assert_eq!(first["rows"][0]["value"]["title"], "one");
    let synced = common::ws_next(&mut ws, 10).await.expect("synced");
    assert_eq!(synced["type"], "synced", "{synced}");

    let mut all_sent = vec![first.clone()];
    let step = |changes: Value| {
        let admin = admin.clone();
        async move {
            let a = admin.push(changes).await;
            assert_eq!(a.status, 200, "{:?}", a.body);
        }
    };
    // A field change moves t2 in: the whole row.
    step(json!([push(
        "todo",
        "t2",
        "update",
        json!({"project_id": "p1"})
    )]))
    .await;
    let m = next_rows(&mut ws).await;
    assert_eq!(ids(&m, "rows"), ["t2"]);
    assert_eq!(
        m["rows"][0]["value"],
        json!({"project_id": "p1", "title": "two"})
    );
    all_sent.push(m);
    // A change of a held row: the row again, whole.
    step(json!([push(
        "todo",
        "t1",
        "update",
        json!({"title": "uno"})
    )]))
    .await;
    let m = next_rows(&mut ws).await;
    assert_eq!(
        m["rows"][0]["value"],
        json!({"project_id": "p1", "title": "uno"})
    );
    all_sent.push(m);
    // A change elsewhere (not in the shape, never held) sends nothing; the
    // next message is the next real move.
    step(json!([push(
        "todo",
        "secret",
        "update",
        json!({"title": "still never"})
    )]))
    .await;
    // A membership added moves p3's rows in.
    step(json!([push(
        "todo",
        "t3",
        "insert",
        json!({"project_id": "p3", "title": "three"})
    ),]))
    .await;
    step(json!([push(
        "member",
        "m2",
        "insert",
        json!({"user_id": "ann", "project_id": "p3"})
    )]))
    .await;
    let m = next_rows(&mut ws).await;
    assert_eq!(ids(&m, "rows"), ["t3"], "{m}");
    all_sent.push(m);
    // A field change moves t1 out: a retraction.
    step(json!([push(
        "todo",
        "t1",
        "update",
        json!({"project_id": "p9"})
    )]))
    .await;
    let m = next_rows(&mut ws).await;
    assert_eq!(
        (ids(&m, "rows"), ids(&m, "retracts")),
        (vec![], vec!["t1".to_owned()])
    );
    all_sent.push(m);
    // The membership removed retracts every row it gave.
    step(json!([push("member", "m2", "delete", Value::Null)])).await;
    let m = next_rows(&mut ws).await;
    assert_eq!(ids(&m, "retracts"), ["t3"], "{m}");
    all_sent.push(m);
    // A deleted row is retracted.
    step(json!([push("todo", "t2", "delete", Value::Null)])).await;
    let m = next_rows(&mut ws).await;
    assert_eq!(ids(&m, "retracts"), ["t2"], "{m}");
    all_sent.push(m);
    // Cursors move on with every message.
    assert!(all_sent.iter().all(|m| m["cursor"].is_string()));
    // Nothing of p9's rows (ann is never a member there) was ever sent whole.
    for m in &all_sent {
        for r in m["rows"].as_array().expect("rows") {
            assert_ne!(r["value"]["project_id"], "p9", "leaked {r}");
        }
    }
    // Bad subscriptions are refused on their own id; the session goes on.
    for (msg, code) in [
        (
            json!({"type": "subscribe", "id": "x", "shape": "nope"}),
            "SYNC:UNKNOWN_SHAPE",
        ),
        (
            json!({"type": "subscribe", "id": "x", "shape": "my_todos", "params": {"a": 1}}),
            "SYNC:INVALID_SHAPE_PARAMS",
        ),
        (
            json!({"type": "subscribe", "id": "x", "shape": "my_todos", "models": ["todo"]}),
            "SYNC:INVALID_BODY",
        ),
        (
            json!({"type": "subscribe", "id": "x", "shape": 7}),
            "SYNC:INVALID_BODY",
        ),
    ] {
        common::ws_send(&mut ws, msg.clone()).await;
        let e = common::ws_next(&mut ws, 10).await.expect("error");
        assert_eq!(
            (e["type"].as_str(), e["error"]["code"].as_str()),
            (Some("error"), Some(code)),
            "{msg}: {e}"
        );
    }
    common::ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        common::ws_next(&mut ws, 10).await.expect("pong")["type"],
        "pong"
    );
}

/// One shape subscriber's local rows, kept from `rows` messages as a client
/// would: `reset` starts a new full set, `rows` upsert, `retracts` drop.
#[derive(Default)]
struct Replica {
    rows: BTreeMap<String, Value>,
    /// Ids of the reset under way (until `synced`).
    resetting: Option<BTreeSet<String>>,
    /// Every project whose row this subscriber was ever sent.
    projects_seen: BTreeSet<String>,
    /// Messages applied, and retractions among them.
    messages: usize,
    retracted: usize,
}

impl Replica {
    fn apply(&mut self, m: &Value) {
        self.messages += 1;
        match m["type"].as_str() {
            Some("rows") => {
                if m["reset"] == true {
                    self.resetting = Some(BTreeSet::new());
                }
                for r in m["rows"].as_array().expect("rows") {
                    let id = r["id"].as_str().expect("id").to_owned();
                    if let Some(p) = r["value"]["project_id"].as_str() {
                        self.projects_seen.insert(p.to_owned());
                    }
                    if let Some(set) = &mut self.resetting {
                        set.insert(id.clone());
                    }
                    self.rows.insert(id, r["value"].clone());
                }
                for id in m["retracts"].as_array().expect("retracts") {
                    self.retracted += 1;
                    self.rows.remove(id.as_str().expect("id"));
                }
            }
            Some("synced") => {
                if let Some(set) = self.resetting.take() {
                    self.rows.retain(|id, _| set.contains(id));
                }
            }
            Some("pong") => {}
            other => panic!("unexpected message {other:?}: {m}"),
        }
    }
}

/// Concurrent writers change todos and memberships while subscribers of a
/// membership shape subscribe, reconnect and read: every subscriber ends
/// with exactly the shape's rows on the final state, and none is ever sent
/// a row of a project its user was never a member of.
async fn shape_subscribers_converge_and_never_see_foreign_rows(backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let db = TestDb::new(backend).await;
    let sync = membership_engine(&db);
    let server = TestServer::start(sync.clone()).await;
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("random");
    let seed = u64::from_le_bytes(seed) | 1;
    eprintln!("shape subscribers seed {seed}");
    // ann may join p0..p2, never p3; bob p1..p3, never p0.
    let may_join = |user: &str| -> &'static [&'static str] {
        if user == "ann" {
            &["p0", "p1", "p2"]
        } else {
            &["p1", "p2", "p3"]
        }
    };

    let done = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::new();
    for (i, user) in ["ann", "ann", "bob", "bob"].into_iter().enumerate() {
        let client = server.client(user, "acme");
        let addr = server.addr;
        let done = done.clone();
        let mut r = Rng(seed.wrapping_add(i as u64 * 104_729) | 1);
        subscribers.push(tokio::spawn(async move {
            let mut replica = Replica::default();
            let mut ws = common::ws_connect(addr, &client.token).await;
            common::ws_send(&mut ws, json!({"type": "subscribe", "shape": "my_todos"})).await;
            while !done.load(Ordering::SeqCst) {
                if let Some(m) = common::ws_next(&mut ws, 1).await {
                    replica.apply(&m);
                }
                if r.below(40) == 0 {
                    // Reconnect: a new session starts from the shape's rows.
                    drop(ws);
                    ws = common::ws_connect(addr, &client.token).await;
                    common::ws_send(&mut ws, json!({"type": "subscribe", "shape": "my_todos"}))
                        .await;
                }
            }
            (user, replica, ws)
        }));
    }

    let mut writers = Vec::new();
    for w in 0..3 {
        let admin = server.client(&format!("writer{w}"), "acme");
        let mut r = Rng(seed.wrapping_add(7 + w as u64 * 7919) | 1);
        writers.push(tokio::spawn(async move {
            for round in 0..40 {
                let at = format!("2026-01-01T00:{:02}:{:02}.{:03}Z", round / 60, round % 60, r.below(1000));
                let op_id = format!("w{w}-{round}");
                let c = match r.below(10) {
                    0..=2 => {
                        let id = format!("t{}", r.below(12));
                        change(&op_id, "todo", &id, "insert", json!({"project_id": r.pick(&["p0", "p1", "p2", "p3"]), "title": op_id}), &at, "w")
                    }
                    3..=4 => {
                        let id = format!("t{}", r.below(12));
                        change(&op_id, "todo", &id, "update", json!({"project_id": r.pick(&["p0", "p1", "p2", "p3"])}), &at, "w")
                    }
                    5 => change(&op_id, "todo", &format!("t{}", r.below(12)), "delete", Value::Null, &at, "w"),
                    6..=8 => {
                        let user = r.pick(&["ann", "bob"]);
                        let p = r.pick(may_join(user));
                        change(&op_id, "member", &format!("{user}-{p}"), "insert", json!({"user_id": user, "project_id": p}), &at, "w")
                    }
                    _ => {
                        let user = r.pick(&["ann", "bob"]);
                        let p = r.pick(may_join(user));
                        change(&op_id, "member", &format!("{user}-{p}"), "delete", Value::Null, &at, "w")
                    }
                };
                let a = admin.push(json!([c])).await;
                assert_eq!(a.status, 200, "{:?}", a.body);
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Let deliveries settle, then stop reading.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    done.store(true, Ordering::SeqCst);
    for s in subscribers {
        let (user, mut replica, mut ws) = s.await.expect("subscriber");
        let ctx = Ctx::new(user, "acme");
        let oracle: BTreeMap<String, Value> = sync
            .snapshot_shape(&ctx, "my_todos", None, None, Some(1000))
            .await
            .expect("oracle")
            .rows
            .into_iter()
            .map(|r| (r.id, r.value))
            .collect();
        // Whatever is still in flight arrives within a few seconds.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while replica.rows != oracle && tokio::time::Instant::now() < deadline {
            if let Some(m) = common::ws_next(&mut ws, 1).await {
                replica.apply(&m);
            }
        }
        assert_eq!(replica.rows, oracle, "seed {seed}: {user}'s rows");
        eprintln!(
            "{user}: {} rows at the end, {} messages, {} retractions, projects seen {:?}",
            replica.rows.len(),
            replica.messages,
            replica.retracted,
            replica.projects_seen
        );
        let never = if user == "ann" { "p3" } else { "p0" };
        assert!(
            !replica.projects_seen.contains(never),
            "seed {seed}: {user} was sent a row of {never}"
        );
    }
}

/// `GET B/pull?shape=..&cursor=..`: the rows of the shape's model changed
/// after the cursor, whole while in the shape, retracted otherwise; a page
/// touching a membership says `reset` (bootstrap the shape again); long-poll
/// waits like a plain pull; bad inputs refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_is_followed_by_pull_and_long_poll() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = membership_engine(&db);
    let server = TestServer::start(sync).await;
    let admin = server.client("admin", "acme");
    let ann = server.client("ann", "acme");
    let mut n = 0;
    let mut c = |model: &str, pk: &str, op: &str, payload: Value| {
        n += 1;
        change(
            &format!("c{n}"),
            model,
            pk,
            op,
            payload,
            &format!("2026-01-01T00:00:{n:02}.000Z"),
            "admin",
        )
    };
    let first = json!([
        c(
            "member",
            "m1",
            "insert",
            json!({"user_id": "ann", "project_id": "p1"})
        ),
        c("todo", "t1", "insert", json!({"project_id": "p1"})),
        c("todo", "t2", "insert", json!({"project_id": "p2"})),
    ]);
    assert_eq!(admin.push(first).await.status, 200);
    let snap = ann.snapshot("?shape=my_todos").await;
    let mut cursor = snap.body["cursor"].as_str().expect("cursor").to_owned();
    let pull = |cursor: String, extra: &'static str| {
        let ann = ann.clone();
        async move {
            ann.pull(&format!("?shape=my_todos&cursor={cursor}{extra}"))
                .await
        }
    };

    // t2 moves in, t1 changes: both whole; a foreign row's change: retracted id only.
    let b = json!([
        c("todo", "t2", "update", json!({"project_id": "p1"})),
        c("todo", "t1", "update", json!({"title": "one"})),
        c(
            "todo",
            "t9",
            "insert",
            json!({"project_id": "p9", "title": "secret"})
        ),
    ]);
    assert_eq!(admin.push(b).await.status, 200);
    let p = pull(cursor.clone(), "").await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["reset"], false);
    assert_eq!(p.body["changes"], json!([]));
    let rows: Vec<&str> = p.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(rows, ["t1", "t2"]);
    assert_eq!(
        p.body["rows"][0]["value"],
        json!({"project_id": "p1", "title": "one"})
    );
    assert_eq!(p.body["retracts"], json!(["t9"]));
    assert!(!p.body.to_string().contains("secret"), "{:?}", p.body);
    cursor = p.body["cursor"].as_str().expect("cursor").to_owned();

    // t1 moves out and t2 is deleted: retracted.
    let b = json!([
        c("todo", "t1", "update", json!({"project_id": "p2"})),
        c("todo", "t2", "delete", Value::Null),
    ]);
    assert_eq!(admin.push(b).await.status, 200);
    let p = pull(cursor.clone(), "").await;
    assert_eq!(
        (p.body["rows"].clone(), p.body["retracts"].clone()),
        (json!([]), json!(["t1", "t2"]))
    );
    cursor = p.body["cursor"].as_str().expect("cursor").to_owned();

    // A long-poll waits for the next commit.
    let waiting = tokio::spawn(pull(cursor.clone(), "&wait=10"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the long-poll waits");
    let b = json!([c(
        "member",
        "m2",
        "insert",
        json!({"user_id": "ann", "project_id": "p2"})
    )]);
    assert_eq!(admin.push(b).await.status, 200);
    let p = waiting.await.expect("long-poll");
    // A membership changed: bootstrap again.
    assert_eq!(p.body["reset"], true, "{:?}", p.body);
    let again = ann.snapshot("?shape=my_todos").await;
    assert_eq!(again.body["rows"][0]["id"], "t1", "{:?}", again.body);

    // Without a cursor: bootstrap first.
    assert_eq!(ann.pull("?shape=my_todos").await.body["reset"], true);
    // Bad inputs.
    let a = ann.pull("?shape=nope&cursor=x").await;
    assert_eq!((a.status, a.code()), (422, "SYNC:UNKNOWN_SHAPE"));
    let a = ann
        .pull(&format!("?shape=my_todos&params=%5B%5D&cursor={cursor}"))
        .await;
    assert_eq!((a.status, a.code()), (422, "SYNC:INVALID_SHAPE_PARAMS"));
    let a = ann.pull("?shape=my_todos&cursor=not-a-cursor").await;
    assert_eq!(
        (a.status, a.code()),
        (400, "SYNC:INVALID_CURSOR"),
        "{:?}",
        a.body
    );
}
