//! S1: shapes. The bootstrap of a 10,000-row shape out of a tenant of
//! 1,000,000 rows, through its expression index (`shape::index_sql`) and
//! without it, beside the ceiling of the same rows read by the database
//! directly through the same index.

use std::time::Instant;

use better_sync::auth::Jwt;
use better_sync::sea_orm::{ConnectionTrait, Statement};
use better_sync::shape::{ParamType, Shape, field, index_sql, param};
use better_sync::storage::{SnapshotRecord, Storage};
use better_sync::{BetterSync, Ctx, SeaOrmStorage};
use serde_json::json;

use crate::figures::Figure;
use crate::server::migrated;
use crate::{BoxError, Options, SECRET};

/// `rows` todos of tenant `s1` in `projects` projects, written to the
/// snapshots directly (this measures reading them), 1,000 a transaction.
async fn fill(storage: &SeaOrmStorage, rows: usize, projects: usize) -> Result<(), BoxError> {
    let stamp = "[\"2026-01-01T00:00:00.000Z-0000\",\"bench\",\"s1\"]";
    let clocks =
        format!("{{\"f\":{{\"title\":{stamp},\"project_id\":{stamp}}},\"i\":{stamp},\"t\":null}}");
    let mut done = 0;
    while done < rows {
        let n = 1000.min(rows - done);
        let records: Vec<SnapshotRecord> = (done..done + n)
            .map(|i| SnapshotRecord {
                tenant_id: "s1".into(),
                model: "todo".into(),
                id: format!("t{i:07}"),
                value: format!(
                    "{{\"project_id\":\"p{}\",\"title\":\"a todo of about this size, number {i}\"}}",
                    i % projects
                ),
                clocks: clocks.clone(),
                deleted: false,
                seq: 1,
            })
            .collect();
        let mut tx = storage.begin().await?;
        let head = tx.last_seq();
        tx.write_snapshots(&records).await?;
        tx.commit(head).await?;
        done += n;
    }
    Ok(())
}

/// Every page of shape `project` for project `p7`: the rows and the time.
async fn bootstrap(sync: &BetterSync) -> Result<(usize, f64), BoxError> {
    let ctx = Ctx::new("bench", "s1");
    let params = json!({"project": "p7"});
    let start = Instant::now();
    let mut rows = 0;
    let mut after: Option<String> = None;
    loop {
        let page = sync
            .snapshot_shape(&ctx, "project", Some(&params), after.as_deref(), None)
            .await?;
        rows += page.rows.len();
        if !page.has_more {
            break;
        }
        after = page.next_after;
    }
    Ok((rows, start.elapsed().as_secs_f64()))
}

/// S1.bootstrap on the database at `url` (a fresh one).
pub(crate) async fn s1_bootstrap(
    url: &str,
    label: &str,
    opts: &Options,
) -> Result<Vec<Figure>, BoxError> {
    let (total, projects) = (1_000_000 / opts.scale, 100);
    let want = total / projects;
    let db = migrated(url).await?;
    let storage = crate::server::storage(db.clone());
    let start = Instant::now();
    fill(&storage, total, projects).await?;
    println!(
        "S1 {label}: {total} rows written in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let sync = BetterSync::builder()
        .storage(storage)
        .auth(Jwt::hs256(SECRET))
        .model("todo")
        .shape(
            Shape::new("project", "todo")
                .param("project", ParamType::String)
                .filter(field("project_id").eq(param("project"))),
        )
        .build()?;
    let backend = db.get_database_backend();
    let mut figures = Vec::new();
    let (rows, unindexed) = bootstrap(&sync).await?;
    if rows != want {
        return Err(format!("S1: the shape gave {rows} rows, not {want}").into());
    }
    figures.push(Figure::new(
        format!("S1 {label} shape bootstrap, {want} of {total} rows, no index"),
        unindexed * 1000.0,
        "ms",
        "-",
    ));
    let Some(index) = index_sql(backend, "todo", "project_id") else {
        return Ok(figures);
    };
    db.execute_unprepared(&index).await?;
    if backend == better_sync::sea_orm::DbBackend::Postgres {
        db.execute_unprepared("ANALYZE snapshots").await?;
    }
    // The best of three: the first warms the cache the ceiling also reads.
    let mut indexed = f64::MAX;
    for _ in 0..3 {
        indexed = indexed.min(bootstrap(&sync).await?.1);
    }
    // The ceiling: the same rows, read by the driver in one query through
    // the same index, nothing parsed.
    let raw = match backend {
        better_sync::sea_orm::DbBackend::Sqlite => {
            "SELECT id, value, clocks FROM snapshots WHERE tenant_id = 's1' AND model = 'todo' AND json_extract(value, '$.\"project_id\"') = 'p7' ORDER BY id"
        }
        _ => {
            "SELECT id, value, clocks FROM snapshots WHERE tenant_id = 's1' AND model = 'todo' AND ((value)::jsonb ->> 'project_id') COLLATE \"C\" = 'p7' COLLATE \"C\" ORDER BY id"
        }
    };
    let mut ceiling = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let got = db
            .query_all_raw(Statement::from_string(backend, raw))
            .await?;
        ceiling = ceiling.min(start.elapsed().as_secs_f64());
        if got.len() != want {
            return Err(format!("S1 ceiling read {} rows", got.len()).into());
        }
    }
    figures.push(
        Figure::new(
            format!("S1 {label} shape bootstrap, {want} of {total} rows, indexed"),
            indexed * 1000.0,
            "ms",
            "-",
        )
        .against(ceiling * 1000.0),
    );
    Ok(figures)
}
