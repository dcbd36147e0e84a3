//! better-sync benchmarks, measured beside the machine's own ceilings.
//!
//! `cargo run --release -p better-sync-bench --bin bench` starts the real
//! stack (the axum mounting of the engine, SQLite file in WAL mode) as a
//! separate process on 127.0.0.1 and measures, over loopback:
//!
//! - B1 push: sequential single changes, 64 concurrent clients, batches of 100;
//! - B2 catch-up: pulling 100,000 changes from no cursor, and a snapshot
//!   bootstrap of 100,000 rows;
//! - B3 fan-out: 1,000 WebSocket subscribers while a writer pushes every 10 ms
//!   for 10 s: latency from the push's answer to receipt, and misses;
//! - B4 memory: server RSS per idle WebSocket connection (10,000 of them);
//!
//! and, in the same run, the ceilings: the storage's raw batched insert rate
//! and a hello-world hyper server's request rate with the same load client.
//! `--postgres URL` repeats B1 and B2 on Postgres. `--quick` shrinks every
//! count tenfold (for a smoke run); `--only B2,B3` runs only those phases
//! (the ceilings always run; `B1.seq`, `B1.64` and `B1.batch` are the parts
//! of B1); `--batches N` makes B1.batch and its ceilings N batches of 100
//! instead of 200; `--subscribers N` gives B3 N subscribers instead of
//! 1,000. Results are printed and written to `target/bench-results.json`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use better_sync::auth::Jwt;
use better_sync::sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use better_sync::testing::dev_token;
use better_sync::{BetterSync, Limits, SeaOrmStorage};
use better_sync_tower::BetterSyncLayer;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use migration::{Migrator, MigratorTrait};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

// The allocator the examples use too: glibc malloc spent a quarter of the
// server's CPU in B1 on allocations freed by another thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Http = Client<HttpConnector, Full<Bytes>>;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

/// One measured figure, with the ceiling it is judged against.
#[derive(Debug, Clone)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    ceiling: Option<f64>,
    /// A second yardstick: what the same work costs without the engine.
    reference: Option<f64>,
    target: String,
}

/// The machine's limits, measured in the same run, that figures are
/// reported against.
#[derive(Debug, Clone, Copy)]
struct Ceilings {
    /// Hello-world hyper, one client, requests in sequence.
    hello_sequential: f64,
    /// Hello-world hyper, 64 concurrent clients.
    hello_64: f64,
    /// Raw batched insert of small rows (rows/s).
    raw_insert: f64,
    /// The storage layer writing 100 changes a commit (changes/s).
    schema_writes: f64,
}

impl Figure {
    fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            ceiling: None,
            reference: None,
            target: target.into(),
        }
    }

    fn against(mut self, ceiling: f64) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    fn beside(mut self, reference: f64) -> Self {
        self.reference = Some(reference);
        self
    }
}

struct Options {
    scale: usize,
    postgres: Option<String>,
    /// Skip the SQLite phases: Postgres figures from a fresh process.
    postgres_only: bool,
    /// Run only these phases (`--only B2,B3`); the ceilings always run.
    only: Option<Vec<String>>,
    /// Batches of 100 in B1.batch, the raw insert ceiling and the storage
    /// reference (`--batches N`, default 200): more give a profile time.
    batches: usize,
    /// B3's subscribers (`--subscribers N`, default 1,000): fewer show the
    /// fan-out's latency on a machine that cannot carry 1,000.
    subscribers: usize,
}

impl Options {
    /// B1.batch's batches of 100, shrunk by `--quick` like every count.
    fn batches(&self) -> usize {
        (self.batches / self.scale).max(1)
    }

    /// Whether `phase` runs: named itself, or a part of it (`B1` runs
    /// when `B1.64` was asked for), or a whole it belongs to (`B1.64` runs
    /// when `B1` was asked for).
    fn wants(&self, phase: &str) -> bool {
        let within = |part: &str, whole: &str| {
            part.len() > whole.len()
                && part[..whole.len()].eq_ignore_ascii_case(whole)
                && part.as_bytes()[whole.len()] == b'.'
        };
        self.only.as_ref().is_none_or(|o| {
            o.iter()
                .any(|p| p.eq_ignore_ascii_case(phase) || within(p, phase) || within(phase, p))
        })
    }
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let postgres_only = value("--postgres-only");
    Options {
        scale: if args.iter().any(|a| a == "--quick") {
            10
        } else {
            1
        },
        postgres: postgres_only.clone().or_else(|| value("--postgres")),
        postgres_only: postgres_only.is_some(),
        only: value("--only").map(|o| o.split(',').map(str::to_owned).collect()),
        batches: value("--batches")
            .and_then(|n| n.parse().ok())
            .unwrap_or(200),
        subscribers: value("--subscribers")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000),
    }
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--serve") {
        let url = args.get(2).ok_or("--serve needs a database URL")?.clone();
        return rt.block_on(serve(url));
    }
    rt.block_on(run(options()))
}

/// The server half: the engine behind axum, as the examples mount it.
async fn serve(url: String) -> Result<(), BoxError> {
    let db = SeaOrmStorage::connect(&url).await?;
    let limits = Limits {
        max_body_bytes: 4 << 20,
        ..Limits::default()
    };
    let sync = BetterSync::builder()
        .storage(SeaOrmStorage::new(db))
        .auth(Jwt::hs256(SECRET))
        .models(["todo"])
        .limits(limits)
        .build()?;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(BetterSyncLayer::new(sync));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    // Small frames must not wait for the peer's delayed ACK (Nagle).
    // `BS_BENCH_NAGLE=1` leaves Nagle on, to show what that costs.
    let nodelay = std::env::var_os("BS_BENCH_NAGLE").is_none();
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(nodelay);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(url: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve", url])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().ok_or("server exited")??;
            if let Some(a) = line.strip_prefix("LISTENING ") {
                break a.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, addr })
    }

    /// Resident set size of the server process, in bytes.
    fn rss(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .ok_or("no VmRSS")?;
        Ok(kb * 1024)
    }

    /// CPU time the server process has used (user and system, all threads).
    /// Less noisy than throughput on a shared machine: what a phase costs
    /// the server, whatever else ran meanwhile.
    fn cpu(&self) -> Result<Duration, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // After the command name (which may hold spaces) come state, ppid,
        // ...: utime and stime are fields 14 and 15, in USER_HZ (100/s).
        let rest = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64, BoxError> {
            Ok(fields.get(i).ok_or("short /proc stat")?.parse()?)
        };
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn migrated(url: &str) -> Result<DatabaseConnection, BoxError> {
    let db = SeaOrmStorage::connect(url).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

async fn post(http: &Http, url: &str, token: &str, body: String) -> Result<Value, BoxError> {
    let req = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let res = http.request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &Http,
    url: &str,
    token: &str,
) -> Result<T, BoxError> {
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())?;
    let res = http.request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn change(op_id: &str, pk: &str, payload: Value) -> Value {
    json!({"op_id": op_id, "model": "todo", "pk": pk, "op": "insert", "payload": payload,
           "updated_at": "2026-01-01T00:00:00.000Z", "actor": "bench"})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// B1: push throughput and latency.
async fn b1(
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
        let bodies: Vec<String> = (0..batches)
            .map(|b| {
                let changes: Vec<Value> = (0..100)
                    .map(|i| change(&format!("b{b}-{i}"), &format!("b{b}-{i}"), json!({"i": i})))
                    .collect();
                json!({ "changes": changes }).to_string()
            })
            .collect();
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
        out.push(Figure::new(
            format!("B1 {label} batches server CPU"),
            cpu_per(cpu, batches * 100)?,
            "µs/change",
            "-",
        ));
    }
    Ok(out)
}

/// What B2's load client reads of a pull page: it counts the changes and
/// follows the cursor, checking that the JSON is well formed, without
/// building values (it shares the two cores with the server, and pages are
/// fetched one after the other).
#[derive(serde::Deserialize)]
struct PullPage {
    changes: Vec<serde::de::IgnoredAny>,
    cursor: String,
    has_more: bool,
}

/// What B2's load client reads of a snapshot page (as [`PullPage`]).
#[derive(serde::Deserialize)]
struct SnapshotPage {
    rows: Vec<serde::de::IgnoredAny>,
    next_after: Option<String>,
    has_more: bool,
}

/// B2: catch-up of a fresh client, and snapshot bootstrap.
async fn b2(addr: &str, db_url: &str, label: &str, scale: usize) -> Result<Vec<Figure>, BoxError> {
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
    out.push(
        Figure::new(
            format!("B2 {label} pull {total} changes"),
            total as f64 / start.elapsed().as_secs_f64(),
            "changes/s",
            ">= 200,000",
        )
        .against(read_log),
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
        .against(read_snapshots),
    );
    Ok(out)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(addr: &str, token: &str) -> Result<Ws, BoxError> {
    // A small read buffer: tungstenite zeroes it on every read, which at
    // the default 128 KiB made the load client the bottleneck of B3.
    let config = WebSocketConfig::default().read_buffer_size(8 << 10);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/api/sync/ws?access_token={token}"),
        Some(config),
        true,
    )
    .await?;
    Ok(ws)
}

/// Subscribe and wait for `synced`.
async fn ws_subscribe(ws: &mut Ws) -> Result<(), BoxError> {
    ws.send(Message::Text(
        json!({"type": "subscribe"}).to_string().into(),
    ))
    .await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m?
            && serde_json::from_str::<Value>(&t)?["type"] == "synced"
        {
            return Ok(());
        }
    }
    Err("closed before synced".into())
}

/// The part of a live `changes` frame B3 reads.
#[derive(Default, serde::Deserialize)]
struct LiveFrame<'a> {
    #[serde(borrow, default)]
    changes: Vec<LiveChange<'a>>,
}

#[derive(serde::Deserialize)]
struct LiveChange<'a> {
    #[serde(borrow)]
    pk: std::borrow::Cow<'a, str>,
}

/// B3: fan-out latency to 1,000 subscribers.
async fn b3(server: &Server, opts: &Options) -> Result<Vec<Figure>, BoxError> {
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
            "<= 10",
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

/// B4: server memory per idle WebSocket connection.
async fn b4(server: &Server, scale: usize) -> Result<Vec<Figure>, BoxError> {
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
            format!("B4 server RSS with {n} idle subscribers"),
            after as f64 / (1 << 20) as f64,
            "MiB",
            "-",
        ),
        Figure::new("B4 RSS per idle connection", per, "KiB", "<= 32"),
    ])
}

/// Ceiling: raw batched inserts (100 rows a statement, one transaction per
/// batch) through a connection like the engine's, into a scratch table.
async fn raw_insert_ceiling(url: &str, batches: usize) -> Result<f64, BoxError> {
    let db = SeaOrmStorage::connect(url).await?;
    let backend = db.get_database_backend();
    let exec = |sql: String| db.execute_raw(Statement::from_string(backend, sql));
    exec("DROP TABLE IF EXISTS bench_raw".into()).await?;
    exec("CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, tenant_id VARCHAR(128) NOT NULL, payload TEXT NOT NULL)".into()).await?;
    let start = Instant::now();
    for b in 0..batches {
        use better_sync::sea_orm::TransactionTrait;
        let txn = db.begin().await?;
        let values: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "({}, 't', '{{\"title\":\"todo {i}\",\"done\":false}}')",
                    b * 100 + i
                )
            })
            .collect();
        txn.execute_raw(Statement::from_string(
            backend,
            format!(
                "INSERT INTO bench_raw (id, tenant_id, payload) VALUES {}",
                values.join(",")
            ),
        ))
        .await?;
        txn.commit().await?;
    }
    let rate = (batches * 100) as f64 / start.elapsed().as_secs_f64();
    exec("DROP TABLE bench_raw".into()).await?;
    Ok(rate)
}

/// Reference: the storage layer alone writing what a push of 100 new rows
/// writes (100 log entries, 100 new snapshots, the head), one commit per
/// 100 through `Storage::commit_if_head` as the engine's writer calls it,
/// with every row built beforehand: what the schema and the storage cost,
/// without HTTP, JSON, validation or the merge.
async fn schema_insert_ceiling(url: &str, batches: usize) -> Result<f64, BoxError> {
    use better_sync::protocol::Op;
    use better_sync::storage::{LogEntry, SnapshotRecord, Storage, Writes};
    let storage = SeaOrmStorage::new(migrated(url).await?);
    let clock = "2026-01-01T00:00:00.000Z-0000";
    let rows: Vec<(Vec<LogEntry>, Vec<SnapshotRecord>)> = (0..batches)
        .map(|b| {
            (0..100)
                .map(|i| {
                    let (seq, id) = ((b * 100 + i + 1) as i64, format!("b{b}-{i}"));
                    let entry = LogEntry {
                        seq,
                        op_id: id.clone(),
                        tenant_id: "ceiling".into(),
                        model: "todo".into(),
                        pk: id.clone(),
                        op: Op::Insert,
                        actor: "bench".into(),
                        updated_at: clock.into(),
                        payload: format!("{{\"i\":{i}}}"),
                    };
                    let stamp = format!("[\"{clock}\",\"bench\",\"{id}\"]");
                    let snapshot = SnapshotRecord {
                        tenant_id: "ceiling".into(),
                        model: "todo".into(),
                        id,
                        value: entry.payload.clone(),
                        clocks: format!("{{\"f\":{{\"i\":{stamp}}},\"i\":{stamp},\"t\":null}}"),
                        deleted: false,
                        seq,
                    };
                    (entry, snapshot)
                })
                .unzip()
        })
        .collect();
    let start = Instant::now();
    for (b, (entries, snapshots)) in rows.iter().enumerate() {
        let head = (b * 100) as i64;
        if !storage
            .commit_if_head(
                head,
                Writes {
                    entries,
                    created: snapshots,
                    updated: &[],
                    last_seq: head + 100,
                },
            )
            .await?
        {
            return Err("the reference's commit was refused".into());
        }
    }
    Ok((batches * 100) as f64 / start.elapsed().as_secs_f64())
}

/// Ceilings for B2: the tenant's log and snapshot rows read straight from
/// the database through the same kind of connection, in pages of 1,000
/// (keyset paging on the same indexes the engine uses), every column
/// decoded; no HTTP, no JSON.
async fn raw_read_ceilings(url: &str, tenant: &str) -> Result<(f64, f64), BoxError> {
    let db = SeaOrmStorage::connect(url).await?;
    let backend = db.get_database_backend();
    let mark = |i: usize| {
        if backend == better_sync::sea_orm::DatabaseBackend::Postgres {
            format!("${i}")
        } else {
            "?".to_owned()
        }
    };
    // The shape of the engine's pull query (bounded by the head), so that
    // the planner sees the same statement.
    let log_sql = format!(
        "SELECT seq, op_id, tenant_id, model, pk, op, actor, updated_at, payload FROM op_log \
         WHERE tenant_id = {} AND seq > {} AND seq <= {} ORDER BY seq LIMIT 1000",
        mark(1),
        mark(2),
        mark(3)
    );
    let start = Instant::now();
    let head: i64 = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT last_seq FROM sync_counter WHERE id = 1",
        ))
        .await?
        .ok_or("no sync_counter row")?
        .try_get("", "last_seq")?;
    let (mut after, mut rows) = (0i64, 0usize);
    loop {
        let page = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                &log_sql,
                [tenant.into(), after.into(), head.into()],
            ))
            .await?;
        for r in &page {
            after = r.try_get("", "seq")?;
            for col in [
                "op_id",
                "tenant_id",
                "model",
                "pk",
                "op",
                "actor",
                "updated_at",
                "payload",
            ] {
                std::hint::black_box(r.try_get::<String>("", col)?);
            }
        }
        rows += page.len();
        if page.len() < 1000 {
            break;
        }
    }
    let read_log = rows as f64 / start.elapsed().as_secs_f64();

    let snap_sql = format!(
        "SELECT tenant_id, model, id, value, clocks, deleted, seq FROM snapshots \
         WHERE tenant_id = {} AND model = 'todo' AND id > {} ORDER BY id LIMIT 1000",
        mark(1),
        mark(2)
    );
    let start = Instant::now();
    let (mut after, mut rows) = (String::new(), 0usize);
    loop {
        let page = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                &snap_sql,
                [tenant.into(), after.clone().into()],
            ))
            .await?;
        for r in &page {
            after = r.try_get("", "id")?;
            for col in ["tenant_id", "model", "value", "clocks"] {
                std::hint::black_box(r.try_get::<String>("", col)?);
            }
            std::hint::black_box(r.try_get::<bool>("", "deleted")?);
            std::hint::black_box(r.try_get::<i64>("", "seq")?);
        }
        rows += page.len();
        if page.len() < 1000 {
            break;
        }
    }
    Ok((read_log, rows as f64 / start.elapsed().as_secs_f64()))
}

/// Ceilings: a hello-world hyper server with the same load client, one
/// client in sequence and 64 concurrent clients (sequential requests each).
async fn hello_ceiling(scale: usize) -> Result<(f64, f64), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let http = http_client();
    let url = format!("http://{addr}/");
    let n = 2000 / scale;
    let start = Instant::now();
    for _ in 0..n {
        post(&http, &url, "x", "{}".into()).await?;
    }
    let sequential = n as f64 / start.elapsed().as_secs_f64();
    let per = 300 / scale;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                post(&http, &url, "x", "{}".into()).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    server.abort();
    Ok((
        sequential,
        (64 * per) as f64 / start.elapsed().as_secs_f64(),
    ))
}

async fn run(opts: Options) -> Result<(), BoxError> {
    let mut figures = Vec::new();
    // Independent of the database: measured once.
    let hello = hello_ceiling(opts.scale).await?;
    figures.push(Figure::new(
        "ceiling: hello-world hyper, 1 client",
        hello.0,
        "req/s",
        "-",
    ));
    figures.push(Figure::new(
        "ceiling: hello-world hyper, 64 clients",
        hello.1,
        "req/s",
        "-",
    ));
    if !opts.postgres_only {
        sqlite_phases(&opts, hello, &mut figures).await?;
    }
    if let Some(pg) = &opts.postgres {
        postgres_phases(&opts, pg, hello, &mut figures).await?;
    }
    report(&figures)
}

/// The ceilings, then B1-B4 on a SQLite file.
async fn sqlite_phases(
    opts: &Options,
    hello: (f64, f64),
    figures: &mut Vec<Figure>,
) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let file = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let sqlite = file("bench.db");
    migrated(&sqlite).await?;
    let ceilings = storage_ceilings(
        &file("raw.db"),
        &file("schema.db"),
        "SQLite",
        hello,
        opts.batches(),
        figures,
    )
    .await?;

    let server = Server::start(&sqlite)?;
    if opts.wants("B1") {
        figures.extend(b1(&server, "sqlite", opts, &ceilings).await?);
    }
    if opts.wants("B2") {
        figures.extend(b2(&server.addr, &sqlite, "sqlite", opts.scale).await?);
    }
    if opts.wants("B3") {
        figures.extend(b3(&server, opts).await?);
    }
    drop(server);
    if opts.wants("B4") {
        // B4 on a fresh process: memory the allocator kept from earlier
        // phases would hide what the connections cost.
        let server = Server::start(&sqlite)?;
        figures.extend(b4(&server, opts.scale).await?);
    }
    Ok(())
}

/// The raw insert ceiling and the schema reference, on scratch databases.
async fn storage_ceilings(
    raw_url: &str,
    schema_url: &str,
    label: &str,
    (hello_sequential, hello_64): (f64, f64),
    batches: usize,
    figures: &mut Vec<Figure>,
) -> Result<Ceilings, BoxError> {
    let raw_insert = raw_insert_ceiling(raw_url, batches).await?;
    figures.push(Figure::new(
        format!("ceiling: raw batched insert, {label}"),
        raw_insert,
        "rows/s",
        "-",
    ));
    let schema_writes = schema_insert_ceiling(schema_url, batches).await?;
    figures.push(
        Figure::new(
            format!("reference: the storage layer's writes, {label}"),
            schema_writes,
            "changes/s",
            "-",
        )
        .against(raw_insert),
    );
    Ok(Ceilings {
        hello_sequential,
        hello_64,
        raw_insert,
        schema_writes,
    })
}

/// The storage ceilings, B1 and B2 on a Postgres database of their own.
async fn postgres_phases(
    opts: &Options,
    pg: &str,
    hello: (f64, f64),
    figures: &mut Vec<Figure>,
) -> Result<(), BoxError> {
    let name = format!("bs_bench_{}", std::process::id());
    let admin = better_sync::sea_orm::Database::connect(pg).await?;
    let (base, _) = pg
        .rsplit_once('/')
        .ok_or("postgres URL without a database")?;
    let schema_db = format!("{name}_schema");
    for db in [&name, &schema_db] {
        admin
            .execute_unprepared(&format!("CREATE DATABASE {db}"))
            .await?;
    }
    let url = format!("{base}/{name}");
    migrated(&url).await?;
    let ceilings = storage_ceilings(
        &url,
        &format!("{base}/{schema_db}"),
        "Postgres",
        hello,
        opts.batches(),
        figures,
    )
    .await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {schema_db} WITH (FORCE)"))
        .await?;
    let server = Server::start(&url)?;
    if opts.wants("B1") {
        figures.extend(b1(&server, "postgres", opts, &ceilings).await?);
    }
    if opts.wants("B2") {
        figures.extend(b2(&server.addr, &url, "postgres", opts.scale).await?);
    }
    drop(server);
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// Print the figures and write them to `target/bench-results.json`.
fn report(figures: &[Figure]) -> Result<(), BoxError> {
    println!(
        "\n{:<52} {:>12} {:<10} {:>8} {:>8}  target",
        "figure", "value", "unit", "ceiling", "ref"
    );
    let mut json_out = Vec::new();
    let percent = |of: Option<f64>, value: f64| {
        of.map(|c| format!("{:.0}%", 100.0 * value / c))
            .unwrap_or_default()
    };
    for f in figures {
        println!(
            "{:<52} {:>12.1} {:<10} {:>8} {:>8}  {}",
            f.name,
            f.value,
            f.unit,
            percent(f.ceiling, f.value),
            percent(f.reference, f.value),
            f.target
        );
        json_out.push(json!({"name": f.name, "value": f.value, "unit": f.unit,
            "ceiling": f.ceiling, "reference": f.reference, "target": f.target}));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json_out)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}
