//! R1: bounded storage. How fast compaction removes log rows, what it gives
//! back on disk (1,000,000 changes down to 10,000 live rows), and what it
//! costs B1's 64-client push load to run beside it.

use std::time::{Duration, Instant};

use better_sync::auth::Jwt;
use better_sync::protocol::Op;
use better_sync::sea_orm::{ConnectionTrait, DatabaseBackend};
use better_sync::storage::{LogEntry, SnapshotRecord, Storage, Writes};
use better_sync::testing::dev_token;
use better_sync::{BetterSync, RetentionPolicy, SeaOrmStorage};
use serde_json::json;

use crate::figures::Figure;
use crate::server::{Server, change, http_client, migrated, post};
use crate::{BoxError, Options, SECRET};

/// Fill `tenant`'s log with `changes` updates spread over `rows` rows,
/// through the storage (not the engine: this measures compaction, not the
/// fill), 1,000 entries a commit.
async fn fill(
    storage: &SeaOrmStorage,
    tenant: &str,
    changes: usize,
    rows: usize,
) -> Result<(), BoxError> {
    let clock = "2026-01-01T00:00:00.000Z-0000";
    let mut head = storage.head().await?;
    let mut done = 0;
    while done < changes {
        let n = 1000.min(changes - done);
        let mut entries = Vec::with_capacity(n);
        let mut snapshots = std::collections::BTreeMap::new();
        for i in done..done + n {
            let seq = head + (i - done) as i64 + 1;
            let id = format!("r{}", i % rows);
            // A payload of about 100 bytes, like a todo's.
            let payload = format!(
                "{{\"title\":\"a todo of about this size, edited {i} times\",\"done\":false,\"n\":{i}}}"
            );
            let stamp = format!("[\"{clock}\",\"bench\",\"{tenant}-{i}\"]");
            snapshots.insert(
                id.clone(),
                SnapshotRecord {
                    tenant_id: tenant.into(),
                    model: "todo".into(),
                    id: id.clone(),
                    value: payload.clone(),
                    clocks: format!(
                        "{{\"f\":{{\"title\":{stamp},\"done\":{stamp},\"n\":{stamp}}},\"i\":{stamp},\"t\":null}}"
                    ),
                    deleted: false,
                    seq,
                },
            );
            entries.push(LogEntry {
                seq,
                op_id: format!("{tenant}-{i}"),
                tenant_id: tenant.into(),
                model: "todo".into(),
                pk: id,
                op: Op::Update,
                actor: "bench".into(),
                updated_at: clock.into(),
                payload,
            });
        }
        let snapshots: Vec<SnapshotRecord> = snapshots.into_values().collect();
        let last_seq = head + n as i64;
        let committed = storage
            .commit_if_head(
                head,
                Writes {
                    entries: &entries,
                    created: &[],
                    updated: &snapshots,
                    last_seq,
                    materialized: &[],
                },
            )
            .await?;
        if !committed {
            return Err("the fill's commit found the head moved".into());
        }
        head = last_seq;
        done += n;
    }
    Ok(())
}

/// An engine in this process over `url`, for compacting (no transport).
fn engine(storage: SeaOrmStorage) -> Result<BetterSync, BoxError> {
    Ok(BetterSync::builder()
        .storage(storage)
        .auth(Jwt::hs256(SECRET))
        .build()?)
}

/// R1.space: compact 1,000,000 changes of 10,000 rows down to their last
/// 10,000 entries; throughput, and the database's size before and after.
pub(crate) async fn r1_space(
    url: &str,
    label: &str,
    opts: &Options,
) -> Result<Vec<Figure>, BoxError> {
    let (changes, rows) = (1_000_000 / opts.scale, 10_000 / opts.scale);
    let storage = crate::server::storage(migrated(url).await?);
    fill(&storage, "r1", changes, rows).await?;
    let retention = better_sync::storage::Storage::retention(&storage).ok_or("no retention")?;
    let before = retention.space_used().await?;
    let sync = engine(storage.clone())?;
    let policy = RetentionPolicy::default().max_entries(rows as u64);
    let start = Instant::now();
    let report = sync.compact_with(&policy).await?;
    let elapsed = start.elapsed();
    let after = retention.space_used().await?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    // Postgres and MySQL keep the freed space in their files for reuse
    // (autovacuum, InnoDB purge); what `better-sync-admin vacuum` runs
    // gives it back.
    let db = storage.connection();
    let rewrite: &[&str] = match db.get_database_backend() {
        DatabaseBackend::Postgres => &["VACUUM FULL op_log", "VACUUM FULL snapshots"],
        DatabaseBackend::MySql => &["OPTIMIZE TABLE op_log, snapshots"],
        _ => &[],
    };
    let mut rewritten = Vec::new();
    if !rewrite.is_empty() {
        for sql in rewrite {
            db.execute_unprepared(sql).await?;
        }
        let vacuumed = retention.space_used().await?;
        rewritten.push(
            Figure::new(
                format!("R1 {label} database after better-sync-admin vacuum"),
                mb(vacuumed.bytes),
                "MiB",
                "-",
            )
            .against(mb(before.bytes)),
        );
    }
    Ok(vec![
        Figure::new(
            format!("R1 {label} compaction, {changes} changes to {rows} rows"),
            report.log_deleted as f64 / elapsed.as_secs_f64(),
            "rows/s",
            "-",
        ),
        Figure::new(
            format!("R1 {label} database before compaction"),
            mb(before.bytes),
            "MiB",
            "-",
        ),
        Figure::new(
            format!("R1 {label} database after compaction"),
            mb(after.bytes),
            "MiB",
            "-",
        )
        .against(mb(before.bytes)),
    ]
    .into_iter()
    .chain(rewritten)
    .collect())
}

/// R1.load: B1's 64 clients pushing single changes, alone and then while
/// another tenant's 500,000-entry log is compacted beside them.
pub(crate) async fn r1_load(
    server: &Server,
    url: &str,
    label: &str,
    opts: &Options,
) -> Result<Vec<Figure>, BoxError> {
    let storage = crate::server::storage(SeaOrmStorage::connect(url).await?);
    let sync = engine(storage.clone())?;
    let push = |round: &'static str| {
        let http = http_client();
        let url = format!("http://{}/api/sync/push", server.addr);
        let token = dev_token(SECRET, "bench", &format!("r1-{label}"), 3600);
        let per = 300 / opts.scale;
        async move {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..64 {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..per {
                        let id = format!("{round}-{c}-{i}");
                        let body = json!({"changes": [change(&id, &id, json!({"i": i}))]});
                        post(&http, &url, &token, body.to_string()).await?;
                    }
                    Ok::<_, BoxError>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            Ok::<_, BoxError>((64 * per) as f64 / start.elapsed().as_secs_f64())
        }
    };
    let alone = push("alone").await?;
    fill(&storage, "r1-old", 500_000 / opts.scale, 1000).await?;
    let policy = RetentionPolicy::default().max_entries(1).chunk(1000);
    let compaction = tokio::spawn(async move {
        let start = Instant::now();
        let report = sync.compact_with(&policy).await?;
        Ok::<_, BoxError>((report.log_deleted, start.elapsed()))
    });
    // Let the compaction begin before the load does.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let beside = push("beside").await?;
    let (deleted, took) = compaction.await??;
    Ok(vec![
        Figure::new(
            format!("R1 {label} 64 clients single pushes, no compaction"),
            alone,
            "ops/s",
            "-",
        ),
        Figure::new(
            format!("R1 {label} 64 clients single pushes, compaction beside"),
            beside,
            "ops/s",
            "-",
        )
        .against(alone),
        Figure::new(
            format!("R1 {label} compaction under push load"),
            deleted as f64 / took.as_secs_f64(),
            "rows/s",
            "-",
        ),
    ])
}
