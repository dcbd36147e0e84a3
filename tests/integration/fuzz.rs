//! Hostile input: random bytes and random JSON thrown at push, pull,
//! snapshot and the WebSocket. Never a panic, never a write, always a
//! `SYNC:*` error. Inputs come from a seeded generator, so a failure
//! reproduces (the seed is printed with it).

use crate::common;

use better_sync::testing::dev_token;
use common::{Backend, SECRET, TestDb, TestServer, builder, ws_connect, ws_next};
use futures_util::SinkExt;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

/// xorshift64*: small, deterministic, good enough to explore input shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        (0..self.below(max)).map(|_| self.next() as u8).collect()
    }
    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "",
            "a",
            "todo",
            "insert",
            "update",
            "delete",
            "id",
            "1",
            "\u{0}",
            "\u{202e}",
            "é",
            "🦀",
            "../",
            "%00",
            "'; DROP TABLE op_log; --",
            "2026-01-01T00:00:00Z",
            "2999-01-01T00:00:00Z",
            "null",
            "{",
            "\"",
            "\\",
        ];
        (0..self.below(4))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }
    fn json(&mut self, depth: u32) -> Value {
        match self.below(if depth > 4 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64),
            3 => json!((self.next() as f64) / 7.0),
            4 => json!(self.string()),
            5 => Value::Array((0..self.below(4)).map(|_| self.json(depth + 1)).collect()),
            _ => {
                let keys = [
                    "op_id",
                    "model",
                    "pk",
                    "op",
                    "payload",
                    "updated_at",
                    "actor",
                    "changes",
                    "client_id",
                    "type",
                    "cursor",
                    "x",
                ];
                let mut m = Map::new();
                for _ in 0..self.below(6) {
                    m.insert(
                        keys[self.below(keys.len() as u64) as usize].to_owned(),
                        self.json(depth + 1),
                    );
                }
                Value::Object(m)
            }
        }
    }
    /// A change with at least one required field missing or of a wrong type,
    /// so it can never be valid.
    fn broken_change(&mut self) -> Value {
        let mut c = json!({"op_id": format!("f{}", self.next()), "model": "todo", "pk": "1", "op": "insert",
                           "payload": {"a": 1}, "updated_at": "2026-01-01T00:00:00.000Z", "actor": "x"});
        let required = ["op_id", "model", "pk", "op", "updated_at"];
        let victim = required[self.below(required.len() as u64) as usize];
        if self.below(2) == 0 {
            c.as_object_mut().map(|o| o.remove(victim));
        } else {
            // A value of the wrong type, or a string that is not allowed there.
            c[victim] = match self.below(4) {
                0 => json!(self.next() as i64),
                1 => Value::Null,
                2 => json!([self.string()]),
                _ => json!({"nested": self.string()}),
            };
        }
        // Random extra noise in other fields.
        if self.below(2) == 0 {
            c["payload"] = self.json(0);
        }
        c
    }
}

fn is_sync_error(status: u16, body: &str) -> bool {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("");
    [400, 401, 403, 404, 405, 409, 413, 415, 422, 429].contains(&status)
        && code.starts_with("SYNC:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_panics_never_writes_and_always_answers_sync_errors() {
    let seed = std::env::var("BS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64);
    let cases: u64 = std::env::var("BS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed.max(1));
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let a = server.client("alice", "acme");
    let before = db.counts().await;

    for i in 0..cases {
        // Push: random bytes, random JSON, or a batch holding a broken change.
        let body: Vec<u8> = match rng.below(4) {
            0 => rng.bytes(300),
            1 => rng.json(0).to_string().into_bytes(),
            2 => json!({"client_id": rng.string(), "changes": [rng.broken_change()]})
                .to_string()
                .into_bytes(),
            _ => {
                let mut changes: Vec<Value> = (0..rng.below(5)).map(|_| rng.json(1)).collect();
                let at = rng.below(changes.len() as u64 + 1) as usize;
                changes.insert(at, rng.broken_change());
                json!({"changes": changes}).to_string().into_bytes()
            }
        };
        let res = a
            .http
            .post(format!("{}/push", a.base))
            .bearer_auth(&a.token)
            .body(body.clone())
            .send()
            .await
            .expect("push");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        // Random JSON can happen to be a valid, empty batch: that answers 200
        // with no results (and writes nothing, checked at the end).
        let empty_batch = status == 200
            && serde_json::from_str::<Value>(&text).is_ok_and(|v| v["results"] == json!([]));
        assert!(
            empty_batch || is_sync_error(status, &text),
            "seed {seed} case {i}: push {:?} -> {status} {text}",
            String::from_utf8_lossy(&body)
        );

        // Pull and snapshot with random query strings.
        let query: String = (0..rng.below(4))
            .map(|_| {
                let k = ["cursor", "limit", "wait", "model", "after", "x"][rng.below(6) as usize];
                let v = if rng.below(2) == 0 {
                    rng.string()
                } else {
                    format!("{}", rng.next() as i64)
                };
                format!(
                    "{k}={}",
                    v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        for route in ["pull", "snapshot"] {
            // A query the engine accepts answers 200; anything else must be a SYNC error.
            let res = a
                .http
                .get(format!("{}/{route}?{query}&wait=0", a.base))
                .bearer_auth(&a.token)
                .send()
                .await
                .expect("get");
            let status = res.status().as_u16();
            let text = res.text().await.expect("body");
            assert!(
                status == 200 || is_sync_error(status, &text),
                "seed {seed} case {i}: {route}?{query} -> {status} {text}"
            );
        }
    }

    // The WebSocket: random text and binary frames; every answer is an
    // error message (or the connection closes on oversize), the server lives.
    let token = dev_token(SECRET, "alice", "acme", 600);
    let mut ws = ws_connect(server.addr, &token).await;
    for i in 0..cases {
        let frame = match rng.below(3) {
            0 => Message::Binary(rng.bytes(200).into()),
            1 => Message::Text(String::from_utf8_lossy(&rng.bytes(200)).into_owned().into()),
            _ => {
                let mut v = rng.json(0);
                if v.get("type").and_then(Value::as_str) == Some("subscribe")
                    || v.get("type").and_then(Value::as_str) == Some("ping")
                {
                    v["type"] = json!("nonsense");
                }
                Message::Text(v.to_string().into())
            }
        };
        if ws.send(frame).await.is_err() {
            ws = ws_connect(server.addr, &token).await;
            continue;
        }
        match ws_next(&mut ws, 20).await {
            Some(m) => assert_eq!(m["type"], "error", "seed {seed} ws case {i}: {m}"),
            None => ws = ws_connect(server.addr, &token).await,
        }
    }
    assert_eq!(
        db.counts().await,
        before,
        "seed {seed}: hostile input wrote something"
    );
    let meta = server
        .http
        .get(server.url("/api/sync/sync.json"))
        .send()
        .await
        .expect("alive");
    assert_eq!(meta.status(), 200);
}
