//! Exact values: arbitrary JSON payloads (every double, subnormals, the
//! shortest texts browsers write, negative zero, integers at and beyond 64
//! bits, every string escape, astral characters, nesting up to the limit)
//! come back from push, pull, snapshot and WebSocket (live and catch-up) as
//! the values pushed, and a retry of the same op ids is a duplicate however
//! it is spelled, on SQLite, Postgres and MariaDB.

use crate::common;

use common::json_corpus::{EDGE_FLOATS, Gen, Rng, seed};
use common::{Backend, Client, TestDb, TestServer, builder, ws_connect, ws_next, ws_subscribe};
use serde_json::{Value, json};

/// One generated row: its key, its value, and the op id that wrote it.
struct Sample {
    pk: String,
    op_id: String,
    value: Gen,
}

impl Sample {
    /// The payload the server must give back.
    fn expected(&self) -> Value {
        json!({ "id": self.pk, "v": self.value.expected() })
    }

    /// The change as a browser writes it, or respelled.
    fn change_text(&self, respell: Option<&mut Rng>) -> String {
        let v = match respell {
            None => self.value.js_text(),
            Some(rng) => self.value.respelled(rng),
        };
        format!(
            r#"{{"op_id":"{}","model":"todo","pk":"{}","op":"insert","payload":{{"id":"{}","v":{v}}},"updated_at":"2026-01-01T00:00:00.000Z","actor":"dev-a"}}"#,
            self.op_id, self.pk, self.pk
        )
    }
}

fn corpus(rng: &mut Rng, depth_limit: usize) -> Vec<Sample> {
    let mut values: Vec<Gen> = EDGE_FLOATS.iter().map(|f| Gen::Float(*f)).collect();
    values.push(Gen::BigInt("123456789012345678901234567890".into()));
    values.push(Gen::BigInt("36893488147419103232".into()));
    values.push(Gen::Int(i128::from(u64::MAX)));
    values.push(Gen::Int(i128::from(i64::MIN)));
    values.push(Gen::Int((1 << 53) + 1));
    // The payload object is one level, so `v` may nest one less.
    values.push(Gen::nested(depth_limit - 1, 9.710932949418186e-20));
    while values.len() < 240 {
        values.push(Gen::arbitrary(rng, 5));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Sample {
            pk: format!("r{i:03}"),
            op_id: format!("op-{i:03}"),
            value,
        })
        .collect()
}

fn body(samples: &[Sample], mut respell: Option<&mut Rng>) -> String {
    let changes: Vec<String> = samples
        .iter()
        .map(|s| s.change_text(respell.as_deref_mut()))
        .collect();
    format!(
        r#"{{"client_id":"exact","changes":[{}]}}"#,
        changes.join(",")
    )
}

/// Every change's payload equals its sample's expected value.
fn check(what: &str, seed: u64, samples: &[Sample], payloads: &[(String, Value)]) {
    assert_eq!(payloads.len(), samples.len(), "{what}: count (seed {seed})");
    for (pk, got) in payloads {
        let sample = samples
            .iter()
            .find(|s| s.pk == *pk)
            .unwrap_or_else(|| panic!("{what}: unknown pk {pk}"));
        assert_eq!(
            *got,
            sample.expected(),
            "{what}: {pk} written as {} (BS_TEST_SEED={seed})",
            sample.value.js_text()
        );
    }
}

fn payloads_of(changes: &[Value]) -> Vec<(String, Value)> {
    changes
        .iter()
        .map(|c| {
            (
                c["pk"].as_str().expect("pk").to_owned(),
                c["payload"].clone(),
            )
        })
        .collect()
}

async fn push_all(
    client: &Client,
    samples: &[Sample],
    mut respell: Option<&mut Rng>,
) -> Vec<Value> {
    let mut results = Vec::new();
    for chunk in samples.chunks(40) {
        let a = client.push_raw(body(chunk, respell.as_deref_mut())).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        results.extend(a.body["results"].as_array().expect("results").clone());
    }
    results
}

async fn exact_values(backend: Backend) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let db = TestDb::new(backend).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let depth_limit = server.sync.limits().max_payload_depth;
    let samples = corpus(&mut rng, depth_limit);
    let alice = server.client("alice", "acme");

    // A live subscriber from before the pushes.
    let mut live = ws_connect(server.addr, &alice.token).await;
    let (caught, _) = ws_subscribe(&mut live, None).await;
    assert!(caught.is_empty());

    let first = push_all(&alice, &samples, None).await;
    assert!(first.iter().all(|r| r["duplicate"] != json!(true)));

    // Pull.
    let (pulled, _) = alice.pull_all().await;
    check("pull", seed, &samples, &payloads_of(&pulled));

    // Snapshot, every page.
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("?model=todo&limit=50&after={a}"),
            None => "?model=todo&limit=50".into(),
        };
        let a = alice.snapshot(&q).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        for r in a.body["rows"].as_array().expect("rows") {
            rows.push((r["id"].as_str().expect("id").to_owned(), r["value"].clone()));
        }
        match a.body["next_after"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    check("snapshot", seed, &samples, &rows);

    // WebSocket: live, and catch-up from the start.
    let mut live_changes = Vec::new();
    while live_changes.len() < samples.len() {
        let m = ws_next(&mut live, 30).await.expect("live message");
        assert_eq!(m["type"], "changes", "{m}");
        live_changes.extend(m["changes"].as_array().expect("changes").clone());
    }
    check("live", seed, &samples, &payloads_of(&live_changes));
    let mut late = ws_connect(server.addr, &alice.token).await;
    let (caught, _) = ws_subscribe(&mut late, None).await;
    check("catch-up", seed, &samples, &payloads_of(&caught));

    // Retries, as sent and respelled, are duplicates with the first seqs.
    for respell in [false, true] {
        let again = push_all(&alice, &samples, respell.then_some(&mut rng)).await;
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(b["duplicate"], json!(true), "respelled {respell}: {b}");
            assert_eq!(a["seq"], b["seq"]);
        }
    }

    // The check is not blind: the same op id with a value one unit in the
    // last place away is a conflict.
    let sample = &samples[0];
    let Gen::Float(f) = sample.value else {
        panic!("the corpus starts with the edge floats")
    };
    let nudged = Sample {
        pk: sample.pk.clone(),
        op_id: sample.op_id.clone(),
        value: Gen::Float(f64::from_bits(f.to_bits() + 1)),
    };
    let a = alice.push_raw(body(&[nudged], None)).await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.code(), "SYNC:OP_ID_CONFLICT");

    // Nothing moved.
    let (after_retries, _) = alice.pull_all().await;
    assert_eq!(after_retries.len(), samples.len());
}

/// A string with a lone surrogate is not Unicode text: refused as
/// malformed, nothing written.
async fn lone_surrogates_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(builder(&db.db).build().expect("build")).await;
    let alice = server.client("alice", "acme");
    let a = alice
        .push_raw(
            r#"{"changes":[{"op_id":"s","model":"todo","pk":"1","op":"insert","payload":{"t":"\ud800"},"updated_at":"2026-01-01T00:00:00.000Z"}]}"#,
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(a.code(), "SYNC:MALFORMED_JSON");
    let a = alice
        .push_raw(
            r#"{"changes":[{"op_id":"s","model":"todo","pk":"1","op":"insert","payload":{"t":1e400},"updated_at":"2026-01-01T00:00:00.000Z"}]}"#,
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    assert_eq!(a.code(), "SYNC:MALFORMED_JSON");
    let (pulled, _) = alice.pull_all().await;
    assert!(pulled.is_empty());
}

per_backend!(exact_values, lone_surrogates_are_refused);

/// The float parser itself: serde_json (with `float_roundtrip`) reads every
/// double's shortest text, and its JavaScript spelling, as that double.
#[test]
fn every_double_reads_back_as_itself() {
    let mut rng = Rng::new(seed());
    for i in 0..200_000u64 {
        let bits = match i % 3 {
            0 => rng.next_u64(),
            1 => rng.next_u64() & 0x800f_ffff_ffff_ffff,
            _ => rng.next_u64() >> 2,
        };
        let f = f64::from_bits(bits);
        if !f.is_finite() {
            continue;
        }
        for text in [format!("{f:e}"), common::json_corpus::js_number(f)] {
            let v: Value = serde_json::from_str(&text).expect("parse");
            let back = v.as_f64().expect("number");
            assert!(
                back.to_bits() == f.to_bits() || (f == 0.0 && back == 0.0),
                "{text} read as {back:e}"
            );
            let written = serde_json::to_string(&v).expect("write");
            let again: f64 = written.parse().expect("std parse");
            assert!(
                again == back || (again.is_nan() && back.is_nan()),
                "{written}"
            );
        }
    }
}
