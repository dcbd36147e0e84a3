//! B1: push throughput and latency (sequential, 64 clients, batches of 100).

use std::time::{Duration, Instant};

use better_sync::testing::dev_token;
use serde_json::{Value, json};

use crate::figures::{Ceilings, Figure, ms, percentile};
use crate::server::{Server, change, http_client, post};
use crate::{BoxError, Options, SECRET};

/// B1: push throughput and latency.
pub(crate) async fn b1(
    server: &Server,
    label: &str,
    opts: &Options,
    ceilings: &Ceilings,
) -> Result<Vec<Figure>, BoxError> {
    let scale = opts.scale;
    let http = http_client();
    let url = format!("http://{}/api/sync/push", server.addr);
    // The server's CPU time per change of a part, in µs.
    let cpu_per = |since: Duration, changes: usize| -> Result<f64, BoxError> {
        Ok((server.cpu()? - since).as_secs_f64() * 1e6 / changes as f64)
    };
    let token = dev_token(SECRET, "bench", &format!("b1-{label}"), 3600);
    let mut out = Vec::new();

    if opts.wants("B1.seq") {
        // Sequential single changes.
        let n = 2000 / scale;
        let mut lat = Vec::with_capacity(n);
        let cpu = server.cpu()?;
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            post(
                &http,
                &url,
                &token,
                json!({"changes": [change(&format!("s{i}"), &format!("s{i}"), json!({"i": i}))]})
                    .to_string(),
            )
            .await?;
            lat.push(t.elapsed());
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        lat.sort();
        out.push(
            Figure::new(
                format!("B1 {label} sequential single pushes"),
                rate,
                "ops/s",
                "-",
            )
            .against(ceilings.hello_sequential),
        );
        if let Some(physical) = ceilings.physical_single_commits {
            out.push(
                Figure::new(
                    format!("B1 {label} sequential single pushes, against physical commits"),
                    rate,
                    "ops/s",
                    "-",
                )
                .against(physical),
            );
        }
        out.push(Figure::new(
            format!("B1 {label} sequential p50"),
            ms(percentile(&lat, 0.5)),
            "ms",
            "-",
        ));
        out.push(Figure::new(
            format!("B1 {label} sequential p99"),
            ms(percentile(&lat, 0.99)),
            "ms",
            "-",
        ));
        out.push(Figure::new(
            format!("B1 {label} sequential server CPU"),
            cpu_per(cpu, n)?,
            "µs/change",
            "-",
        ));
    }
    if opts.wants("B1.64") {
        // 64 concurrent clients, single changes.
        let per = 300 / scale;
        let cpu = server.cpu()?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..64 {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t = Instant::now();
                    let body = json!({"changes": [change(&format!("c{c}-{i}"), &format!("c{c}-{i}"), json!({"i": i}))]});
                    post(&http, &url, &token, body.to_string()).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, BoxError>(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let rate = (64 * per) as f64 / start.elapsed().as_secs_f64();
        lat.sort();
        out.push(
            Figure::new(
                format!("B1 {label} 64 clients single pushes"),
                rate,
                "ops/s",
                ">= 10,000",
            )
            .against(ceilings.hello_64),
        );
        out.push(Figure::new(
            format!("B1 {label} 64 clients p99"),
            ms(percentile(&lat, 0.99)),
            "ms",
            "-",
        ));
        out.push(Figure::new(
            format!("B1 {label} 64 clients server CPU"),
            cpu_per(cpu, 64 * per)?,
            "µs/change",
            "-",
        ));
    }
    if opts.wants("B1.batch") {
        // Batches of 100.
        let batches = opts.batches();
        // Bodies are made beforehand, as a client's outbox holds its
        // changes' JSON text: the load client shares the two cores, and
        // building 100 changes is not what this measures.
        let bodies = batch_bodies(batches, "b");
        let cpu = server.cpu()?;
        let start = Instant::now();
        for body in bodies {
            post(&http, &url, &token, body).await?;
        }
        let rate = (batches * 100) as f64 / start.elapsed().as_secs_f64();
        out.push(
            Figure::new(
                format!("B1 {label} batches of 100"),
                rate,
                "changes/s",
                ">= 50% of raw insert ceiling",
            )
            .against(ceilings.raw_insert)
            .beside(ceilings.schema_writes),
        );
        out.push(
            Figure::new(
                format!("B1 {label} batches of 100, against the physical write"),
                rate,
                "changes/s",
                ">= 50% of the physical ceiling",
            )
            .against(ceilings.physical_write),
        );
        out.push(Figure::new(
            format!("B1 {label} batches server CPU"),
            cpu_per(cpu, batches * 100)?,
            "µs/change",
            "-",
        ));

        // The same batches from four clients at once, as many outboxes
        // push: one client's next batch waits for the last one's answer,
        // four let the engine merge one while the writer commits another.
        let clients = 4;
        let bodies = batch_bodies(batches, "q");
        let mut shares: Vec<Vec<String>> = vec![Vec::new(); clients];
        for (i, body) in bodies.into_iter().enumerate() {
            shares[i % clients].push(body);
        }
        let start = Instant::now();
        let sending = shares.into_iter().map(|share| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                for body in share {
                    post(&http, &url, &token, body).await?;
                }
                Ok::<_, BoxError>(())
            }
        });
        for sent in futures_util::future::join_all(sending).await {
            sent?;
        }
        let rate = (batches * 100) as f64 / start.elapsed().as_secs_f64();
        out.push(
            Figure::new(
                format!("B1 {label} batches of 100, {clients} clients, against the physical write"),
                rate,
                "changes/s",
                ">= 50% of the physical ceiling",
            )
            .against(ceilings.physical_write),
        );
    }
    Ok(out)
}

/// `batches` push bodies of 100 new rows each, ids starting with `prefix`.
fn batch_bodies(batches: usize, prefix: &str) -> Vec<String> {
    (0..batches)
        .map(|b| {
            let changes: Vec<Value> = (0..100)
                .map(|i| {
                    let id = format!("{prefix}{b}-{i}");
                    change(&id, &id, json!({"i": i}))
                })
                .collect();
            json!({ "changes": changes }).to_string()
        })
        .collect()
}
