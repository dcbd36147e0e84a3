//! better-sync benchmarks, measured beside the machine's own ceilings.
//!
//! `cargo run --release -p better-sync-bench --bin bench` starts the real
//! stack (the axum mounting of the engine, SQLite file in WAL mode) as a
//! separate process on 127.0.0.1 and measures, over loopback:
//!
//! - B1 push: sequential single changes, 64 concurrent clients, batches of 100
//!   (from one client, then from four at once);
//! - B2 catch-up: pulling 100,000 changes from no cursor, and a snapshot
//!   bootstrap of 100,000 rows;
//! - B3 fan-out: 1,000 WebSocket subscribers while a writer pushes every 10 ms
//!   for 10 s: latency from the push's answer to receipt, and misses;
//! - B4 memory: server RSS per idle WebSocket connection (10,000 of them),
//!   under axum and under actix-web;
//! - R1 retention: compaction's rows removed per second and the database's
//!   size before and after compacting 1,000,000 changes to 10,000 rows
//!   (`R1.space`), and B1's 64-client push rate with and without a
//!   compaction running beside it (`R1.load`);
//! - S1 shapes: the bootstrap of a 10,000-row shape out of 1,000,000 rows,
//!   without and with its expression index, beside the same rows read
//!   directly through the index;
//! - S2 shapes live: 1,000 WebSocket subscribers over 100 shapes while a
//!   writer pushes 100 changes a second (beside B3, the same subscribers
//!   unfiltered); S3: a membership that moves 1,000 rows into a shape;
//! - T1 tenants (Postgres only): 100 tenants pushing 10 new rows at a time
//!   through three server processes, beside 100 raw writers committing
//!   the same rows with no lock in common;
//!
//! and, in the same run, the ceilings: the storage's raw batched insert rate
//! through the engine's driver, the physical ones (the same log and snapshot
//! rows written and read by SQLite through rusqlite, by Postgres through
//! `psql`'s COPY: `physical.rs`), and a hello-world hyper server's request
//! rate with the same load client.
//! `--postgres URL` repeats B1, B2 and R1 on Postgres, `--mysql URL` R1.space
//! on MySQL/MariaDB. `--quick` shrinks every
//! count tenfold (for a smoke run); `--only B2,B3` runs only those phases
//! (the ceilings always run; `B1.seq`, `B1.64` and `B1.batch` are the parts
//! of B1); `--batches N` makes B1.batch and its ceilings N batches of 100
//! instead of 200; `--subscribers N` gives B3 N subscribers instead of
//! 1,000. `BENCH_SQLITE_POOL=1` runs SQLite through the SeaORM pool only
//! (`SeaOrmStorage::sqlite_direct(false)`), the path before the storage's
//! own connections, for old-and-new runs from one build. Results are
//! printed and written to `target/bench-results.json`.

use better_sync::sea_orm::ConnectionTrait;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

// The allocator the examples use too: glibc malloc spent a quarter of the
// server's CPU in B1 on allocations freed by another thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod b1;
mod b2;
mod b3;
mod b4;
mod ceilings;
mod figures;
mod physical;
mod r1;
mod s1;
mod s2;
mod server;
mod t1;

use crate::b1::b1;
use crate::b2::b2;
use crate::b3::b3;
use crate::b4::b4;
use crate::ceilings::{hello_ceiling, raw_insert_ceiling, schema_insert_ceiling};
use crate::figures::{Ceilings, Figure};
use crate::r1::{r1_load, r1_space};
use crate::s1::s1_bootstrap;
use crate::s2::{s2_live, s3_move};
use crate::server::{Server, migrated, serve, serve_actix};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Http = Client<HttpConnector, Full<Bytes>>;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

/// The command line's settings.
pub(crate) struct Options {
    pub(crate) scale: usize,
    pub(crate) postgres: Option<String>,
    /// Skip the SQLite phases: Postgres figures from a fresh process.
    pub(crate) postgres_only: bool,
    /// MySQL/MariaDB URL for R1.space (`--mysql URL`).
    pub(crate) mysql: Option<String>,
    /// Run only these phases (`--only B2,B3`); the ceilings always run.
    pub(crate) only: Option<Vec<String>>,
    /// Batches of 100 in B1.batch, the raw insert ceiling and the storage
    /// reference (`--batches N`, default 200): more give a profile time.
    pub(crate) batches: usize,
    /// B3's subscribers (`--subscribers N`, default 1,000): fewer show the
    /// fan-out's latency on a machine that cannot carry 1,000.
    pub(crate) subscribers: usize,
}

impl Options {
    /// B1.batch's batches of 100, shrunk by `--quick` like every count.
    pub(crate) fn batches(&self) -> usize {
        (self.batches / self.scale).max(1)
    }

    /// Whether `phase` runs: named itself, or a part of it (`B1` runs
    /// when `B1.64` was asked for), or a whole it belongs to (`B1.64` runs
    /// when `B1` was asked for).
    pub(crate) fn wants(&self, phase: &str) -> bool {
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

pub(crate) fn options() -> Options {
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
        mysql: value("--mysql"),
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
    if args.get(1).map(String::as_str) == Some("--serve-actix") {
        let url = args
            .get(2)
            .ok_or("--serve-actix needs a database URL")?
            .clone();
        return serve_actix(url);
    }
    if args.get(1).map(String::as_str) == Some("--serve") {
        let url = args.get(2).ok_or("--serve needs a database URL")?.clone();
        return rt.block_on(serve(url));
    }
    rt.block_on(run(options()))
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
    if let Some(my) = &opts.mysql
        && opts.wants("R1.space")
    {
        figures.extend(mysql_r1_space(&opts, my).await?);
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
    let single = file("physical-single.db");
    let ceilings = storage_ceilings(
        ScratchDbs {
            raw: &file("raw.db"),
            schema: &file("schema.db"),
            physical: &file("physical.db"),
            physical_single: Some(&single),
        },
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
    if opts.wants("R1.load") {
        figures.extend(r1_load(&server, &sqlite, "sqlite", opts).await?);
    }
    if opts.wants("S2") {
        figures.extend(s2_live(&server, opts).await?);
    }
    if opts.wants("S3") {
        figures.extend(s3_move(&server, opts).await?);
    }
    drop(server);
    if opts.wants("R1.space") {
        figures.extend(r1_space(&file("r1.db"), "sqlite", opts).await?);
    }
    if opts.wants("S1") {
        figures.extend(s1_bootstrap(&file("s1.db"), "sqlite", opts).await?);
    }
    if opts.wants("B4") {
        // B4 on a fresh process: memory the allocator kept from earlier
        // phases would hide what the connections cost.
        let server = Server::start(&sqlite)?;
        figures.extend(b4(&server, "axum", opts.scale).await?);
        drop(server);
        let server = Server::start_actix(&sqlite)?;
        figures.extend(b4(&server, "actix", opts.scale).await?);
    }
    Ok(())
}

/// The raw insert ceiling and the schema reference, on scratch databases.
/// The scratch databases the storage ceilings write to, one a ceiling.
struct ScratchDbs<'a> {
    raw: &'a str,
    schema: &'a str,
    physical: &'a str,
    /// Only SQLite has the one-change commit ceiling.
    physical_single: Option<&'a str>,
}

async fn storage_ceilings(
    scratch: ScratchDbs<'_>,
    label: &str,
    (hello_sequential, hello_64): (f64, f64),
    batches: usize,
    figures: &mut Vec<Figure>,
) -> Result<Ceilings, BoxError> {
    let ScratchDbs {
        raw: raw_url,
        schema: schema_url,
        physical: physical_url,
        physical_single: physical_single_url,
    } = scratch;
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
    let physical_write = if physical_url.starts_with("sqlite:") {
        physical::sqlite_write(physical_url, batches).await?
    } else {
        physical::postgres_write(physical_url, batches).await?
    };
    figures.push(Figure::new(
        format!("ceiling: physical write of log and snapshot rows, {label}"),
        physical_write,
        "changes/s",
        "-",
    ));
    let physical_single_commits = match physical_single_url {
        Some(url) => {
            let rate = physical::sqlite_single_commits(url, 2000).await?;
            figures.push(Figure::new(
                format!("ceiling: physical one-change commits in sequence, {label}"),
                rate,
                "commits/s",
                "-",
            ));
            Some(rate)
        }
        None => None,
    };
    Ok(Ceilings {
        hello_sequential,
        hello_64,
        raw_insert,
        schema_writes,
        physical_write,
        physical_single_commits,
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
    let physical_db = format!("{name}_physical");
    for db in [&name, &schema_db, &physical_db] {
        admin
            .execute_unprepared(&format!("CREATE DATABASE {db}"))
            .await?;
    }
    let url = format!("{base}/{name}");
    migrated(&url).await?;
    let ceilings = storage_ceilings(
        ScratchDbs {
            raw: &url,
            schema: &format!("{base}/{schema_db}"),
            physical: &format!("{base}/{physical_db}"),
            physical_single: None,
        },
        "Postgres",
        hello,
        opts.batches(),
        figures,
    )
    .await?;
    for db in [&schema_db, &physical_db] {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await?;
    }
    let server = Server::start(&url)?;
    if opts.wants("B1") {
        figures.extend(b1(&server, "postgres", opts, &ceilings).await?);
    }
    if opts.wants("B2") {
        figures.extend(b2(&server.addr, &url, "postgres", opts.scale).await?);
    }
    if opts.wants("R1.load") {
        figures.extend(r1_load(&server, &url, "postgres", opts).await?);
    }
    if opts.wants("S2") {
        figures.extend(s2_live(&server, opts).await?);
    }
    if opts.wants("S3") {
        figures.extend(s3_move(&server, opts).await?);
    }
    drop(server);
    if opts.wants("T1") {
        figures.extend(t1::t1(&url, opts.scale).await?);
    }
    if opts.wants("R1.space") {
        let r1 = format!("{name}_r1");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {r1}"))
            .await?;
        figures.extend(r1_space(&format!("{base}/{r1}"), "postgres", opts).await?);
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {r1} WITH (FORCE)"))
            .await?;
    }
    if opts.wants("S1") {
        let s1 = format!("{name}_s1");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {s1}"))
            .await?;
        figures.extend(s1_bootstrap(&format!("{base}/{s1}"), "postgres", opts).await?);
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {s1} WITH (FORCE)"))
            .await?;
    }
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// R1.space on a MySQL/MariaDB database of its own (`--mysql URL`).
async fn mysql_r1_space(opts: &Options, my: &str) -> Result<Vec<Figure>, BoxError> {
    let name = format!("bs_bench_r1_{}", std::process::id());
    let admin = better_sync::sea_orm::Database::connect(my).await?;
    let (base, _) = my.rsplit_once('/').ok_or("mysql URL without a database")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let figures = r1_space(&format!("{base}/{name}"), "mariadb", opts).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    figures
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
