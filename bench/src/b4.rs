//! B4: server memory per idle WebSocket connection.

use std::time::Duration;

use better_sync::testing::dev_token;

use crate::figures::Figure;
use crate::server::{Server, ws_open, ws_subscribe};
use crate::{BoxError, SECRET};

/// B4: server memory per idle WebSocket connection.
pub(crate) async fn b4(
    server: &Server,
    adapter: &str,
    scale: usize,
) -> Result<Vec<Figure>, BoxError> {
    let n = 10_000 / scale;
    let token = dev_token(SECRET, "bench", "b4", 3600);
    // Warm the server's pools and the fan-out with one subscriber first.
    let mut first = ws_open(&server.addr, &token).await?;
    ws_subscribe(&mut first).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss()?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ws = ws_open(&server.addr, &token).await?;
        ws_subscribe(&mut ws).await?;
        conns.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss()?;
    let per = after.saturating_sub(before) as f64 / n as f64 / 1024.0;
    drop(conns);
    Ok(vec![
        Figure::new(
            format!("B4 {adapter} server RSS with {n} idle subscribers"),
            after as f64 / (1 << 20) as f64,
            "MiB",
            "-",
        ),
        Figure::new(
            format!("B4 {adapter} RSS per idle connection"),
            per,
            "KiB",
            "<= 5",
        ),
    ])
}
