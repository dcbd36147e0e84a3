//! B2: catch-up of a fresh client by pull, and snapshot bootstrap.

use std::time::Instant;

use better_sync::testing::dev_token;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::ceilings::raw_read_ceilings;
use crate::figures::Figure;
use crate::server::{change, get, http_client, post, ws_open};
use crate::{BoxError, SECRET};

/// What B2's load client reads of a pull page: it counts the changes and
/// follows the cursor, checking that the JSON is well formed, without
/// building values (it shares the two cores with the server, and pages are
/// fetched one after the other).
#[derive(serde::Deserialize)]
pub(crate) struct PullPage {
    pub(crate) changes: Vec<serde::de::IgnoredAny>,
    pub(crate) cursor: String,
    pub(crate) has_more: bool,
}

/// What B2's load client reads of a snapshot page (as [`PullPage`]).
#[derive(serde::Deserialize)]
pub(crate) struct SnapshotPage {
    pub(crate) rows: Vec<serde::de::IgnoredAny>,
    pub(crate) next_after: Option<String>,
    pub(crate) has_more: bool,
}

/// B2: catch-up of a fresh client, and snapshot bootstrap.
pub(crate) async fn b2(
    addr: &str,
    db_url: &str,
    label: &str,
    scale: usize,
) -> Result<Vec<Figure>, BoxError> {
    let http = http_client();
    let tenant = format!("b2-{label}");
    let token = dev_token(SECRET, "bench", &tenant, 3600);
    let total = 100_000 / scale;
    let push = format!("http://{addr}/api/sync/push");
    for b in 0..total / 1000 {
        let changes: Vec<Value> = (0..1000)
            .map(|i| {
                let k = b * 1000 + i;
                change(
                    &format!("p{k}"),
                    &format!("row{k:07}"),
                    json!({"title": format!("todo {k}"), "done": false}),
                )
            })
            .collect();
        post(
            &http,
            &push,
            &token,
            json!({ "changes": changes }).to_string(),
        )
        .await?;
    }
    let mut out = Vec::new();
    let (read_log, read_snapshots) = raw_read_ceilings(db_url, &tenant).await?;
    out.push(Figure::new(
        format!("ceiling: raw paged read of the log, {label}"),
        read_log,
        "rows/s",
        "-",
    ));
    out.push(Figure::new(
        format!("ceiling: raw paged read of snapshots, {label}"),
        read_snapshots,
        "rows/s",
        "-",
    ));
    let (physical_log, physical_snapshots) = if db_url.starts_with("sqlite:") {
        crate::physical::sqlite_read(db_url, &tenant).await?
    } else {
        crate::physical::postgres_read(db_url, &tenant).await?
    };
    out.push(Figure::new(
        format!("ceiling: physical read of the log, {label}"),
        physical_log,
        "rows/s",
        "-",
    ));
    out.push(Figure::new(
        format!("ceiling: physical read of snapshots, {label}"),
        physical_snapshots,
        "rows/s",
        "-",
    ));

    let start = Instant::now();
    let mut cursor: Option<String> = None;
    let mut got = 0usize;
    loop {
        let url = match &cursor {
            Some(c) => format!("http://{addr}/api/sync/pull?limit=1000&cursor={c}"),
            None => format!("http://{addr}/api/sync/pull?limit=1000"),
        };
        let page: PullPage = get(&http, &url, &token).await?;
        got += page.changes.len();
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    if got != total {
        return Err(format!("pulled {got} of {total} changes").into());
    }
    let pull_rate = total as f64 / start.elapsed().as_secs_f64();
    out.push(
        Figure::new(
            format!("B2 {label} pull {total} changes"),
            pull_rate,
            "changes/s",
            ">= 200,000",
        )
        .against(read_log),
    );
    out.push(
        Figure::new(
            format!("B2 {label} pull, against the physical read"),
            pull_rate,
            "changes/s",
            ">= 1,000,000",
        )
        .against(physical_log),
    );

    // The same catch-up over a WebSocket: subscribe without a cursor, count
    // the changes until `synced`.
    let start = Instant::now();
    let mut ws = ws_open(addr, &token).await?;
    ws.send(Message::Text(
        json!({"type": "subscribe"}).to_string().into(),
    ))
    .await?;
    let mut got = 0usize;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            #[derive(serde::Deserialize)]
            struct Frame<'a> {
                #[serde(rename = "type")]
                kind: &'a str,
                #[serde(default)]
                changes: Vec<serde::de::IgnoredAny>,
            }
            let frame: Frame = serde_json::from_str(&t)?;
            got += frame.changes.len();
            if frame.kind == "synced" {
                break;
            }
        }
    }
    if got != total {
        return Err(format!("caught up {got} of {total} changes over the WebSocket").into());
    }
    out.push(
        Figure::new(
            format!("B2 {label} WebSocket catch-up {total} changes"),
            total as f64 / start.elapsed().as_secs_f64(),
            "changes/s",
            ">= 1,000,000",
        )
        .against(physical_log)
        .beside(pull_rate),
    );

    let start = Instant::now();
    let mut after: Option<String> = None;
    let mut rows = 0usize;
    loop {
        let url = match &after {
            Some(k) => format!("http://{addr}/api/sync/snapshot?model=todo&limit=1000&after={k}"),
            None => format!("http://{addr}/api/sync/snapshot?model=todo&limit=1000"),
        };
        let page: SnapshotPage = get(&http, &url, &token).await?;
        rows += page.rows.len();
        after = page.next_after;
        if !page.has_more {
            break;
        }
    }
    if rows != total {
        return Err(format!("bootstrapped {rows} of {total} rows").into());
    }
    out.push(
        Figure::new(
            format!("B2 {label} snapshot {total} rows"),
            total as f64 / start.elapsed().as_secs_f64(),
            "rows/s",
            "-",
        )
        .against(read_snapshots)
        .beside(physical_snapshots),
    );
    Ok(out)
}
