//! S2 and S3: shapes live. S2: 1,000 WebSocket subscribers spread over 100
//! shapes (a project's todos each) while a writer pushes 100 changes a
//! second, each in one project: delivery latency to the subscribers whose
//! shape it is in, misses, leaks, and server CPU per change. S3: a
//! membership added that moves 1,000 rows into a subscriber's shape: time
//! until the subscriber holds them all.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use better_sync::testing::dev_token;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::figures::{Figure, ms, percentile};
use crate::server::{Server, Ws, http_client, post, ws_open};
use crate::{BoxError, Options, SECRET};

/// Projects (one shape each) in S2.
const PROJECTS: usize = 100;

/// The part of a `rows` message S2 reads: the ids.
#[derive(Default, serde::Deserialize)]
struct RowsFrame<'a> {
    #[serde(borrow, default)]
    rows: Vec<RowId<'a>>,
}

#[derive(serde::Deserialize)]
struct RowId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

fn todo(op_id: &str, pk: &str, project: &str) -> Value {
    json!({"op_id": op_id, "model": "todo", "pk": pk, "op": "insert",
           "payload": {"title": pk, "project_id": project},
           "updated_at": "2026-01-01T00:00:00.000Z", "actor": "bench"})
}

/// Subscribe `ws` to `shape` with `params` and wait for its `synced`.
async fn subscribe_shape(ws: &mut Ws, shape: &str, params: Value) -> Result<(), BoxError> {
    let message = json!({"type": "subscribe", "id": "s", "shape": shape, "params": params});
    ws.send(Message::Text(message.to_string().into())).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            let v: Value = serde_json::from_str(&t)?;
            if v["type"] == "synced" {
                return Ok(());
            }
            if v["type"] == "error" {
                return Err(format!("subscribe {shape}: {t}").into());
            }
        }
    }
    Err("closed before synced".into())
}

/// S2: live filtering, 1,000 subscribers over 100 shapes at 100 pushes/s.
pub(crate) async fn s2_live(server: &Server, opts: &Options) -> Result<Vec<Figure>, BoxError> {
    let (addr, scale) = (server.addr.as_str(), opts.scale);
    let subscribers = (opts.subscribers / scale).max(PROJECTS);
    let pushes = 1000 / scale;
    let token = dev_token(SECRET, "bench", "s2", 3600);
    let mut receivers = Vec::new();
    for n in 0..subscribers {
        let project = n % PROJECTS;
        let mut ws = ws_open(addr, &token).await?;
        subscribe_shape(
            &mut ws,
            "project_todos",
            json!({"project": format!("p{project}")}),
        )
        .await?;
        // What this subscriber must receive: the pushes into its project.
        let expected = (0..pushes).filter(|i| i % PROJECTS == project).count();
        receivers.push(tokio::spawn(async move {
            let mut seen: Vec<(usize, Instant)> = Vec::with_capacity(expected);
            let mut foreign = 0usize;
            while seen.len() < expected {
                let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
                let Ok(Some(Ok(msg))) = next else { break };
                if let Message::Text(t) = msg {
                    let now = Instant::now();
                    let frame: RowsFrame = serde_json::from_str(&t).unwrap_or_default();
                    for r in frame.rows {
                        match r.id.strip_prefix('f').and_then(|n| n.parse::<usize>().ok()) {
                            Some(i) if i % PROJECTS == project => seen.push((i, now)),
                            _ => foreign += 1,
                        }
                    }
                }
            }
            (seen, expected, foreign)
        }));
    }
    let http = http_client();
    let url = format!("http://{addr}/api/sync/push");
    let answered: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; pushes]));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let cpu = server.cpu()?;
    let started = Instant::now();
    for i in 0..pushes {
        tick.tick().await;
        let project = format!("p{}", i % PROJECTS);
        let body = json!({"changes": [todo(&format!("f{i}"), &format!("f{i}"), &project)]});
        post(&http, &url, &token, body.to_string()).await?;
        answered.lock().await[i] = Some(Instant::now());
    }
    let push_rate = pushes as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_per_change = (server.cpu()? - cpu).as_secs_f64() * 1e6 / pushes as f64;
    let answered = answered.lock().await.clone();
    let (mut lat, mut missed, mut leaked) = (Vec::new(), 0usize, 0usize);
    for r in receivers {
        let (seen, expected, foreign) = r.await?;
        missed += expected.saturating_sub(seen.len());
        leaked += foreign;
        for (i, at) in seen {
            if let Some(Some(sent)) = answered.get(i) {
                lat.push(at.saturating_duration_since(*sent));
            }
        }
    }
    lat.sort();
    let label = format!("{subscribers} subscribers, {PROJECTS} shapes");
    Ok(vec![
        Figure::new(
            format!("S2 shape delivery p50 ({label})"),
            ms(percentile(&lat, 0.5)),
            "ms",
            "-",
        ),
        Figure::new(
            format!("S2 shape delivery p99 ({label})"),
            ms(percentile(&lat, 0.99)),
            "ms",
            "-",
        ),
        Figure::new("S2 rows missed", missed as f64, "rows", "0"),
        Figure::new(
            "S2 rows sent outside their shape",
            leaked as f64,
            "rows",
            "0",
        ),
        Figure::new("S2 pushes achieved", push_rate, "pushes/s", "100"),
        Figure::new(
            "S2 server CPU per change (all subscribers)",
            cpu_per_change,
            "µs",
            "-",
        ),
    ])
}

/// S3: a membership added moves 1,000 rows into a subscriber's shape.
pub(crate) async fn s3_move(server: &Server, opts: &Options) -> Result<Vec<Figure>, BoxError> {
    let addr = server.addr.as_str();
    let rows = 1000 / opts.scale;
    let token = dev_token(SECRET, "mover", "s3", 3600);
    let http = http_client();
    let url = format!("http://{addr}/api/sync/push");
    // The project's rows, and as many of another project that must stay out.
    for (project, prefix) in [("pm", "m"), ("other", "o")] {
        for chunk in (0..rows).collect::<Vec<_>>().chunks(100) {
            let changes: Vec<Value> = chunk
                .iter()
                .map(|i| todo(&format!("{prefix}{i}"), &format!("{prefix}{i}"), project))
                .collect();
            post(
                &http,
                &url,
                &token,
                json!({ "changes": changes }).to_string(),
            )
            .await?;
        }
    }
    let mut ws = ws_open(addr, &token).await?;
    subscribe_shape(&mut ws, "member_todos", Value::Null).await?;
    let receiver = tokio::spawn(async move {
        let mut held: HashSet<String> = HashSet::new();
        let mut foreign = 0usize;
        while held.len() < rows {
            let next = tokio::time::timeout(Duration::from_secs(60), ws.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            if let Message::Text(t) = msg {
                let frame: RowsFrame = serde_json::from_str(&t).unwrap_or_default();
                for r in frame.rows {
                    if r.id.starts_with('m') {
                        held.insert(r.id.into_owned());
                    } else {
                        foreign += 1;
                    }
                }
            }
        }
        (held.len(), foreign, Instant::now())
    });
    let member = json!({"op_id": "member-1", "model": "member", "pk": "mover@pm", "op": "insert",
        "payload": {"user_id": "mover", "project_id": "pm"},
        "updated_at": "2026-01-01T00:00:00.000Z", "actor": "bench"});
    let cpu = server.cpu()?;
    let started = Instant::now();
    post(
        &http,
        &url,
        &token,
        json!({ "changes": [member] }).to_string(),
    )
    .await?;
    let (held, foreign, done) = receiver.await?;
    let cpu = (server.cpu()? - cpu).as_secs_f64() * 1e3;
    Ok(vec![
        Figure::new(
            format!("S3 membership moving {rows} rows in: all received"),
            ms(done.saturating_duration_since(started)),
            "ms",
            "-",
        ),
        Figure::new(
            "S3 rows received of them",
            held as f64,
            "rows",
            rows.to_string(),
        ),
        Figure::new(
            "S3 rows received of another project",
            foreign as f64,
            "rows",
            "0",
        ),
        Figure::new("S3 server CPU for the move", cpu, "ms", "-"),
    ])
}
