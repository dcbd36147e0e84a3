//! Typed models: payloads checked against the model's Rust type (inserts
//! whole, updates partial, no undeclared field), refusals with the payload
//! path, batches all or nothing, untyped models untouched, and the schemas
//! in `sync.json` and `openapi.json`.

use crate::common;

use better_sync::JsonSchema;
use common::{Backend, TestDb, TestServer, change};
use serde_json::{Value, json};

#[derive(serde::Serialize, serde::Deserialize, JsonSchema)]
struct Todo {
    id: String,
    title: String,
    done: bool,
    /// Optional: may be absent or null.
    due: Option<String>,
    tags: Vec<String>,
}

const AT: &str = "2026-11-25T10:00:00.000Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_checked_against_the_models_type() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = common::builder(&db.db)
        .typed_model::<Todo>("todo")
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let a = server.client("ann", "acme");
    let todo =
        |op_id: &str, op: &str, payload: Value| change(op_id, "todo", "1", op, payload, AT, "d");

    let ok = a
        .push(json!([todo(
            "i1",
            "insert",
            json!({"id": "1", "title": "t", "done": false, "tags": []})
        )]))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let ok = a
        .push(json!([todo(
            "u1",
            "update",
            json!({"done": true, "due": null})
        )]))
        .await;
    assert_eq!(ok.status, 200, "a partial update: {:?}", ok.body);

    let refused = |a: &common::Answer, field: &str, reason: &str| {
        assert_eq!(
            (a.status, a.code()),
            (422, "SYNC:SCHEMA_VIOLATION"),
            "{:?}",
            a.body
        );
        assert_eq!(a.body["meta"]["field"], field, "{:?}", a.body);
        let why = a.body["meta"]["reason"].as_str().unwrap_or("");
        assert!(why.contains(reason), "{why:?} should mention {reason:?}");
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{message}");
    };
    // An insert lacking a field, a field of the wrong type, an undeclared
    // field, an element of the wrong type, an empty update.
    let r = a
        .push(json!([todo(
            "b1",
            "insert",
            json!({"id": "1", "done": false, "tags": []})
        )]))
        .await;
    refused(&r, "payload", "title");
    let r = a
        .push(json!([todo("b2", "update", json!({"done": "yes"}))]))
        .await;
    refused(&r, "payload.done", "boolean");
    let r = a
        .push(json!([todo("b3", "update", json!({"colour": "red"}))]))
        .await;
    refused(&r, "payload", "colour");
    let r = a
        .push(json!([todo("b4", "update", json!({"tags": ["a", 2]}))]))
        .await;
    refused(&r, "payload.tags.1", "string");
    // A batch with one bad change writes nothing; meta.index points at it.
    let before = db.counts().await;
    let r = a
        .push(json!([
            change(
                "g1",
                "todo",
                "2",
                "insert",
                json!({"id": "2", "title": "fine", "done": false, "tags": []}),
                AT,
                "d"
            ),
            change(
                "g2",
                "todo",
                "3",
                "insert",
                json!({"id": "3", "title": 3, "done": false, "tags": []}),
                AT,
                "d"
            ),
        ]))
        .await;
    refused(&r, "payload.title", "string");
    assert_eq!(r.body["meta"]["index"], 1);
    assert_eq!(db.counts().await, before, "nothing written");
    // A delete has no payload to check; an untyped model takes anything.
    let r = a.push(json!([todo("d1", "delete", Value::Null)])).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = a
        .push(json!([change(
            "n1",
            "note",
            "n",
            "insert",
            json!({"anything": [1, {"goes": true}]}),
            AT,
            "d"
        )]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The schemas are published.
    let meta = server.public_json("/sync.json").await;
    let schema = &meta["schemas"]["todo"];
    assert_eq!(schema["type"], "object", "{meta}");
    assert_eq!(schema["additionalProperties"], false);
    assert!(
        schema["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("title")))
    );
    assert!(
        meta["schemas"].get("note").is_none(),
        "untyped models have none"
    );
    let doc = server.public_json("/openapi.json").await;
    let model = &doc["components"]["schemas"]["Model.todo"];
    assert_eq!(model["properties"]["done"]["type"], "boolean", "{model}");
    assert_eq!(
        model["properties"]["due"]["nullable"], true,
        "OpenAPI 3.0's dialect: {model}"
    );
    assert!(model.get("$schema").is_none());
}

#[test]
fn a_type_that_is_not_an_object_fails_the_build() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt.block_on(TestDb::new(Backend::Sqlite));
    let err = common::builder(&db.db)
        .typed_model::<Vec<String>>("list")
        .build()
        .expect_err("refused");
    assert!(err.to_string().contains("list"), "{err}");
}

/// Writes from the application's code take a client's path: checked against
/// the typed model, logged, and received live by subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_writes_typed_rows_that_clients_receive_live() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = common::builder(&db.db)
        .typed_model::<Todo>("todo")
        .build()
        .expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    let mut ws = common::ws_connect(server.addr, &a.token).await;
    common::ws_subscribe(&mut ws, None).await;

    let ctx = better_sync::Ctx::new("admin", "acme");
    let w = sync.write(&ctx);
    let todo = Todo {
        id: "42".into(),
        title: "from a handler".into(),
        done: false,
        due: None,
        tags: vec!["server".into()],
    };
    let inserted = w.insert("todo", "42", &todo).await.expect("insert");
    let updated = w
        .update("todo", "42", &json!({"done": true}))
        .await
        .expect("update");
    assert!(updated.seq > inserted.seq);
    assert_ne!(updated.op_id, inserted.op_id);

    // Live, in order, with the application's actor.
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = common::ws_next(&mut ws, 10).await.expect("live change");
        got.extend(m["changes"].as_array().expect("changes").iter().cloned());
    }
    assert_eq!(got[0]["op"], "insert");
    assert_eq!(got[0]["payload"]["title"], "from a handler");
    assert_eq!(got[0]["actor"], "app:admin");
    assert_eq!(got[1]["payload"], json!({"done": true}));
    assert_eq!(
        sync.get(&ctx, "todo", "42").await.expect("get"),
        Some(
            json!({"id": "42", "title": "from a handler", "done": true, "due": null, "tags": ["server"]})
        )
    );

    // The typed model checks them too; nothing is written.
    let wrong = w
        .update("todo", "42", &json!({"done": "soon"}))
        .await
        .expect_err("refused");
    assert_eq!(wrong.code().as_str(), "SYNC:SCHEMA_VIOLATION");
    w.delete("todo", "42").await.expect("delete");
    assert_eq!(sync.get(&ctx, "todo", "42").await.expect("get"), None);
    // Another tenant sees none of it.
    let other = better_sync::Ctx::new("bob", "other");
    assert_eq!(sync.get(&other, "todo", "42").await.expect("get"), None);
}

/// The `on_write` hook sees each change with its row's current value and
/// accepts, rewrites (the rewrite is validated again) or rejects it with a
/// reason the client receives; clients' pushes and application writes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_hook_accepts_rewrites_and_rejects() {
    use better_sync::protocol::Op;
    use better_sync::{WriteCheck, WriteDecision};
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = common::builder(&db.db)
        .on_write(|check: WriteCheck| async move {
            let locked =
                check.current.as_ref().and_then(|row| row.get("locked")) == Some(&json!(true));
            match check.change.op {
                Op::Delete if locked => WriteDecision::Reject("this todo is locked".into()),
                Op::Delete => WriteDecision::Accept,
                _ if check.change.payload.get("bad_rewrite").is_some() => {
                    // A rewrite that breaks the payload's shape is refused.
                    WriteDecision::Rewrite(json!("not an object"))
                }
                _ => {
                    let mut payload = check.change.payload.clone();
                    payload["updated_by"] = json!(check.ctx.user_id);
                    if let Some(p) = payload.get("priority").and_then(Value::as_i64) {
                        payload["priority"] = json!(p.clamp(0, 5));
                    }
                    WriteDecision::Rewrite(payload)
                }
            }
        })
        .build()
        .expect("build");
    let server = TestServer::start(sync.clone()).await;
    let a = server.client("ann", "acme");
    let mut ws = common::ws_connect(server.addr, &a.token).await;
    common::ws_subscribe(&mut ws, None).await;

    let r = a
        .push(json!([change(
            "h1",
            "todo",
            "1",
            "insert",
            json!({"title": "t", "priority": 9}),
            AT,
            "d"
        )]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let m = common::ws_next(&mut ws, 10).await.expect("live");
    assert_eq!(
        m["changes"][0]["payload"],
        json!({"title": "t", "priority": 5, "updated_by": "ann"}),
        "subscribers receive the rewritten change"
    );
    let ctx = better_sync::Ctx::new("ann", "acme");
    assert_eq!(
        sync.get(&ctx, "todo", "1").await.expect("get"),
        Some(json!({"title": "t", "priority": 5, "updated_by": "ann"}))
    );

    // The hook sees the current row: a locked one cannot be deleted.
    let admin = better_sync::Ctx::new("admin", "acme");
    sync.write(&admin)
        .update("todo", "1", &json!({"locked": true}))
        .await
        .expect("lock");
    let before = db.counts().await;
    let r = a
        .push(json!([
            change(
                "h2",
                "todo",
                "2",
                "insert",
                json!({"title": "fine"}),
                AT,
                "d"
            ),
            change("h3", "todo", "1", "delete", Value::Null, AT, "d"),
        ]))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "SYNC:FORBIDDEN"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["meta"]["index"], 1);
    assert_eq!(r.body["meta"]["reason"], "this todo is locked");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("locked"))
    );
    assert_eq!(db.counts().await, before, "the batch wrote nothing");

    // A rewrite is validated like the original.
    let r = a
        .push(json!([change(
            "h4",
            "todo",
            "3",
            "insert",
            json!({"bad_rewrite": 1}),
            AT,
            "d"
        )]))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (422, "SYNC:INVALID_CHANGE"),
        "{:?}",
        r.body
    );
    // Application writes go through it too.
    let done = sync
        .write(&admin)
        .update("todo", "1", &json!({"priority": -3}))
        .await
        .expect("update");
    assert!(done.seq > 0);
    let row = sync
        .get(&ctx, "todo", "1")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row["priority"], 0);
    assert_eq!(row["updated_by"], "admin");
}

/// `GET B/models.d.ts`: an interface per typed model, untyped ones as
/// records, the versions; public, like `sync.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_are_declared_for_typescript() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = common::builder(&db.db)
        .typed_model_with::<Todo>("todo", better_sync::ModelOptions::default().version(3))
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let res = server
        .http
        .get(server.url("/api/sync/models.d.ts"))
        .send()
        .await
        .expect("models.d.ts");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/typescript; charset=utf-8"
    );
    let text = res.text().await.expect("text");
    for line in [
        "export interface Todo {",
        "  /** Optional: may be absent or null. */",
        "  due?: string | null;",
        "  tags: string[];",
        "export type Note = Record<string, unknown>;",
        "  readonly todo: 3;",
        "  readonly note: 1;",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let answer = server
        .http
        .post(server.url("/api/sync/models.d.ts"))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 405);
}
