//! The machine's ceilings, measured in the same run: raw inserts, the
//! storage layer alone, raw reads, and a hello-world hyper server.

use std::time::Instant;

use better_sync::SeaOrmStorage;
use better_sync::sea_orm::{ConnectionTrait, Statement};
use bytes::Bytes;
use http_body_util::Full;

use migration::schema::{OP_LOG, OP_LOG_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOTS, SYNC_COUNTER, col};

use crate::BoxError;
use crate::server::{http_client, migrated, post};

/// Ceiling: raw batched inserts (100 rows a statement, one transaction per
/// batch) through a connection like the engine's, into a scratch table.
pub(crate) async fn raw_insert_ceiling(url: &str, batches: usize) -> Result<f64, BoxError> {
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
pub(crate) async fn schema_insert_ceiling(url: &str, batches: usize) -> Result<f64, BoxError> {
    use better_sync::protocol::Op;
    use better_sync::storage::{LogEntry, SnapshotRecord, Storage, Writes};
    let storage = crate::server::storage(migrated(url).await?);
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
                    materialized: &[],
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
pub(crate) async fn raw_read_ceilings(url: &str, tenant: &str) -> Result<(f64, f64), BoxError> {
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
        "SELECT {columns} FROM {OP_LOG} \
         WHERE {tenant} = {} AND {seq} > {} AND {seq} <= {} ORDER BY {seq} LIMIT 1000",
        mark(1),
        mark(2),
        mark(3),
        columns = OP_LOG_COLUMNS.join(", "),
        tenant = col::TENANT_ID,
        seq = col::SEQ,
    );
    let start = Instant::now();
    let head: i64 = db
        .query_one_raw(Statement::from_string(
            backend,
            format!(
                "SELECT {last} FROM {SYNC_COUNTER} WHERE {id} = 1",
                last = col::LAST_SEQ,
                id = col::ID
            ),
        ))
        .await?
        .ok_or("no counter row")?
        .try_get("", col::LAST_SEQ)?;
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
            after = r.try_get("", col::SEQ)?;
            for column in &OP_LOG_COLUMNS[1..] {
                std::hint::black_box(r.try_get::<String>("", column)?);
            }
        }
        rows += page.len();
        if page.len() < 1000 {
            break;
        }
    }
    let read_log = rows as f64 / start.elapsed().as_secs_f64();

    let snap_sql = format!(
        "SELECT {columns} FROM {SNAPSHOTS} \
         WHERE {tenant} = {} AND {model} = 'todo' AND {id} > {} ORDER BY {id} LIMIT 1000",
        mark(1),
        mark(2),
        columns = SNAPSHOT_COLUMNS.join(", "),
        tenant = col::TENANT_ID,
        model = col::MODEL,
        id = col::ID,
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
            after = r.try_get("", col::ID)?;
            for column in [col::TENANT_ID, col::MODEL, col::VALUE, col::CLOCKS] {
                std::hint::black_box(r.try_get::<String>("", column)?);
            }
            std::hint::black_box(r.try_get::<bool>("", col::DELETED)?);
            std::hint::black_box(r.try_get::<i64>("", col::SEQ)?);
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
pub(crate) async fn hello_ceiling(scale: usize) -> Result<(f64, f64), BoxError> {
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
