//! B3: fan-out latency to many WebSocket subscribers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use better_sync::testing::dev_token;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::figures::{Figure, ms, percentile};
use crate::server::{Server, change, http_client, post, ws_open, ws_subscribe};
use crate::{BoxError, Options, SECRET};

/// The part of a live `changes` frame B3 reads.
#[derive(Default, serde::Deserialize)]
pub(crate) struct LiveFrame<'a> {
    #[serde(borrow, default)]
    pub(crate) changes: Vec<LiveChange<'a>>,
}

#[derive(serde::Deserialize)]
pub(crate) struct LiveChange<'a> {
    #[serde(borrow)]
    pub(crate) pk: std::borrow::Cow<'a, str>,
}

/// B3: fan-out latency to 1,000 subscribers.
pub(crate) async fn b3(server: &Server, opts: &Options) -> Result<Vec<Figure>, BoxError> {
    let (addr, scale) = (server.addr.as_str(), opts.scale);
    let subscribers = (opts.subscribers / scale).max(1);
    let pushes = 1000 / scale;
    let token = dev_token(SECRET, "bench", "b3", 3600);
    let answered: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; pushes]));
    let mut receivers = Vec::new();
    for _ in 0..subscribers {
        let mut ws = ws_open(addr, &token).await?;
        ws_subscribe(&mut ws).await?;
        receivers.push(tokio::spawn(async move {
            let mut seen: Vec<(usize, Instant)> = Vec::with_capacity(pushes);
            while seen.len() < pushes {
                let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
                let Ok(Some(Ok(msg))) = next else { break };
                if let Message::Text(t) = msg {
                    let now = Instant::now();
                    // Only the keys: the load client must not be what B3
                    // measures (it shares the two cores with the server).
                    let frame: LiveFrame = serde_json::from_str(&t).unwrap_or_default();
                    for c in frame.changes {
                        if let Some(i) = c.pk.strip_prefix('f').and_then(|n| n.parse().ok()) {
                            seen.push((i, now));
                        }
                    }
                }
            }
            seen
        }));
    }
    let http = http_client();
    let url = format!("http://{addr}/api/sync/push");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let cpu = server.cpu()?;
    let started = Instant::now();
    for i in 0..pushes {
        tick.tick().await;
        post(
            &http,
            &url,
            &token,
            json!({"changes": [change(&format!("f{i}"), &format!("f{i}"), json!({}))]}).to_string(),
        )
        .await?;
        answered.lock().await[i] = Some(Instant::now());
    }
    let push_rate = pushes as f64 / started.elapsed().as_secs_f64();
    let answered = answered.lock().await.clone();
    // Receipt by the last subscribers can trail the last push's answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = (server.cpu()? - cpu).as_secs_f64() * 1e6 / (pushes * subscribers) as f64;
    let mut lat = Vec::with_capacity(subscribers * pushes);
    let mut missed = 0usize;
    for r in receivers {
        let seen = r.await?;
        missed += pushes.saturating_sub(seen.len());
        for (i, at) in seen {
            if let Some(Some(sent)) = answered.get(i) {
                // Receipt can precede the push's answer (the answer is still
                // on its way back); that counts as zero latency.
                lat.push(at.saturating_duration_since(*sent));
            }
        }
    }
    lat.sort();
    Ok(vec![
        Figure::new(
            format!("B3 fan-out p50 ({subscribers} subscribers)"),
            ms(percentile(&lat, 0.5)),
            "ms",
            "-",
        ),
        Figure::new(
            format!("B3 fan-out p99 ({subscribers} subscribers)"),
            ms(percentile(&lat, 0.99)),
            "ms",
            // Issue 20's targets: 1,000 subscribers and 10,000.
            if subscribers >= 10_000 {
                "<= 25"
            } else {
                "<= 5"
            },
        ),
        Figure::new(
            format!("B3 fan-out max ({subscribers} subscribers)"),
            ms(lat.last().copied().unwrap_or_default()),
            "ms",
            "-",
        ),
        Figure::new("B3 changes missed", missed as f64, "changes", "0"),
        // Below 100/s when the machine cannot keep up: each push waits for
        // its answer.
        Figure::new("B3 pushes achieved", push_rate, "pushes/s", "100"),
        Figure::new(
            "B3 server CPU per frame (one change to one subscriber)",
            cpu,
            "µs",
            "-",
        ),
    ])
}
