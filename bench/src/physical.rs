//! The physical ceilings: the same log and snapshot rows the engine writes
//! and reads, moved by the database itself with no async driver between:
//! SQLite through rusqlite (prepared statements on the calling thread, one
//! transaction per 100 changes, `synchronous=FULL` as the engine's), and
//! Postgres through `psql`'s `COPY` (the fastest way in and out it has).
//! The driver ceilings in `ceilings.rs` go through sqlx like the engine.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use migration::schema::{OP_LOG, OP_LOG_COLUMNS, SNAPSHOT_COLUMNS, SNAPSHOTS, SYNC_COUNTER, col};

use crate::BoxError;
use crate::server::migrated;

/// The file of a `sqlite://path?...` URL.
pub(crate) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    Some(PathBuf::from(rest.split('?').next()?))
}

const CLOCK: &str = "2026-01-01T00:00:00.000Z-0000";

/// The log entry and snapshot of change `n` (a new row), as the engine
/// stores them.
fn change(n: usize) -> ([String; 8], [String; 5]) {
    let id = format!("p{n}");
    let payload = format!("{{\"title\":\"todo {n}\",\"done\":false}}");
    let stamp = format!("[\"{CLOCK}\",\"bench\",\"{id}\"]");
    let clocks =
        format!("{{\"f\":{{\"done\":{stamp},\"title\":{stamp}}},\"i\":{stamp},\"t\":null}}");
    (
        [
            id.clone(),
            "physical".into(),
            "todo".into(),
            id.clone(),
            "insert".into(),
            "bench".into(),
            CLOCK.into(),
            payload.clone(),
        ],
        ["physical".into(), "todo".into(), id, payload, clocks],
    )
}

/// SQLite itself writing `batches` x 100 changes: each a log entry and a
/// new snapshot, the head moved, one transaction a batch. Changes/s.
pub(crate) async fn sqlite_write(url: &str, batches: usize) -> Result<f64, BoxError> {
    migrated(url).await?;
    let path = sqlite_path(url).ok_or("not a sqlite URL")?;
    tokio::task::spawn_blocking(move || sqlite_write_blocking(&path, batches * 100, 100)).await?
}

/// SQLite itself committing `n` changes one a transaction (a log entry, a
/// new snapshot, the head), one after the other: the most single pushes a
/// second a server could answer in sequence, with no HTTP, JSON or engine
/// between (each commit waits for its `fsync`). Commits/s.
pub(crate) async fn sqlite_single_commits(url: &str, n: usize) -> Result<f64, BoxError> {
    migrated(url).await?;
    let path = sqlite_path(url).ok_or("not a sqlite URL")?;
    tokio::task::spawn_blocking(move || sqlite_write_blocking(&path, n, 1)).await?
}

/// `changes` changes, `per_tx` a transaction. Changes/s.
fn sqlite_write_blocking(path: &Path, changes: usize, per_tx: usize) -> Result<f64, BoxError> {
    let mut db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    let log_sql = format!(
        "INSERT INTO {OP_LOG} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        OP_LOG_COLUMNS.join(", ")
    );
    let snap_sql = format!(
        "INSERT INTO {SNAPSHOTS} ({}) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
        SNAPSHOT_COLUMNS.join(", ")
    );
    let head_sql = format!(
        "UPDATE {SYNC_COUNTER} SET {last} = ?1 WHERE {id} = 1",
        last = col::LAST_SEQ,
        id = col::ID
    );
    let rows: Vec<_> = (0..changes).map(change).collect();
    let start = Instant::now();
    for (b, batch) in rows.chunks(per_tx).enumerate() {
        let tx = db.transaction()?;
        {
            let mut log = tx.prepare_cached(&log_sql)?;
            let mut snap = tx.prepare_cached(&snap_sql)?;
            for (i, (entry, snapshot)) in batch.iter().enumerate() {
                let seq = (b * per_tx + i + 1) as i64;
                log.execute(rusqlite::params![
                    seq, entry[0], entry[1], entry[2], entry[3], entry[4], entry[5], entry[6],
                    entry[7]
                ])?;
                snap.execute(rusqlite::params![
                    snapshot[0],
                    snapshot[1],
                    snapshot[2],
                    snapshot[3],
                    snapshot[4],
                    seq
                ])?;
            }
            tx.prepare_cached(&head_sql)?
                .execute([(b * per_tx + batch.len()) as i64])?;
        }
        tx.commit()?;
    }
    Ok(changes as f64 / start.elapsed().as_secs_f64())
}

/// SQLite itself reading a tenant's log (by seq) and its todo snapshots
/// (by id) in pages of 1,000, every column seen in place. Rows/s of each.
pub(crate) async fn sqlite_read(url: &str, tenant: &str) -> Result<(f64, f64), BoxError> {
    let path = sqlite_path(url).ok_or("not a sqlite URL")?;
    let tenant = tenant.to_owned();
    tokio::task::spawn_blocking(move || sqlite_read_blocking(&path, &tenant)).await?
}

fn sqlite_read_blocking(path: &Path, tenant: &str) -> Result<(f64, f64), BoxError> {
    let db = rusqlite::Connection::open(path)?;
    let touch = |row: &rusqlite::Row<'_>, n: usize| -> rusqlite::Result<()> {
        for i in 0..n {
            std::hint::black_box(row.get_ref(i)?);
        }
        Ok(())
    };
    let log_sql = format!(
        "SELECT {} FROM {OP_LOG} WHERE {tenant_col} = ?1 AND {seq} > ?2 ORDER BY {seq} LIMIT 1000",
        OP_LOG_COLUMNS.join(", "),
        tenant_col = col::TENANT_ID,
        seq = col::SEQ,
    );
    let start = Instant::now();
    let (mut after, mut rows) = (0i64, 0usize);
    let mut stmt = db.prepare(&log_sql)?;
    loop {
        let mut page = 0;
        let mut q = stmt.query(rusqlite::params![tenant, after])?;
        while let Some(row) = q.next()? {
            after = row.get(0)?;
            touch(row, OP_LOG_COLUMNS.len())?;
            page += 1;
        }
        rows += page;
        if page < 1000 {
            break;
        }
    }
    let log = rows as f64 / start.elapsed().as_secs_f64();
    let snap_sql = format!(
        "SELECT {} FROM {SNAPSHOTS} WHERE {tenant_col} = ?1 AND {model} = 'todo' AND {id} > ?2 ORDER BY {id} LIMIT 1000",
        SNAPSHOT_COLUMNS.join(", "),
        tenant_col = col::TENANT_ID,
        model = col::MODEL,
        id = col::ID,
    );
    let start = Instant::now();
    let (mut after, mut rows) = (String::new(), 0usize);
    let mut stmt = db.prepare(&snap_sql)?;
    loop {
        let mut page = 0;
        let mut q = stmt.query(rusqlite::params![tenant, after])?;
        while let Some(row) = q.next()? {
            after = row.get(2)?;
            touch(row, SNAPSHOT_COLUMNS.len())?;
            page += 1;
        }
        rows += page;
        if page < 1000 {
            break;
        }
    }
    Ok((log, rows as f64 / start.elapsed().as_secs_f64()))
}

/// `psql` on `url` with `sql`, stdin fed from `input`; its stdout.
fn psql(url: &str, sql: &str, input: Option<&[u8]>) -> Result<Vec<u8>, BoxError> {
    let mut child = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("psql (the Postgres physical ceiling needs it): {e}"))?;
    let mut stdin = child.stdin.take().ok_or("psql stdin")?;
    if let Some(input) = input {
        stdin.write_all(input)?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("psql {sql:?} failed: {}", out.status).into());
    }
    Ok(out.stdout)
}

/// Postgres itself taking `batches` x 100 changes by `COPY` (the log and
/// the snapshots, one `COPY` each, in one transaction). Changes/s.
pub(crate) async fn postgres_write(url: &str, batches: usize) -> Result<f64, BoxError> {
    migrated(url).await?;
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let (mut log, mut snapshots) = (Vec::new(), Vec::new());
        for n in 0..batches * 100 {
            let (entry, snapshot) = change(n);
            let csv = |fields: &[&str]| {
                fields
                    .iter()
                    .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let seq = (n + 1).to_string();
            let mut e: Vec<&str> = vec![&seq];
            e.extend(entry.iter().map(String::as_str));
            writeln!(log, "{}", csv(&e))?;
            let mut s: Vec<&str> = snapshot.iter().map(String::as_str).collect();
            s.extend(["false", &seq]);
            writeln!(snapshots, "{}", csv(&s))?;
        }
        // psql's own start (about 20 ms) is measured apart and taken off.
        let start = Instant::now();
        psql(&url, "SELECT 1", None)?;
        let startup = start.elapsed();
        let start = Instant::now();
        psql(
            &url,
            &format!(
                "COPY {OP_LOG} ({}) FROM STDIN WITH (FORMAT csv)",
                OP_LOG_COLUMNS.join(", ")
            ),
            Some(&log),
        )?;
        psql(
            &url,
            &format!(
                "COPY {SNAPSHOTS} ({}) FROM STDIN WITH (FORMAT csv)",
                SNAPSHOT_COLUMNS.join(", ")
            ),
            Some(&snapshots),
        )?;
        let took = start.elapsed().saturating_sub(startup * 2);
        Ok((batches * 100) as f64 / took.as_secs_f64())
    })
    .await?
}

/// Postgres itself reading a tenant's log and todo snapshots by `COPY ...
/// TO STDOUT` of the same ordered queries. Rows/s of each.
pub(crate) async fn postgres_read(url: &str, tenant: &str) -> Result<(f64, f64), BoxError> {
    let (url, tenant) = (url.to_owned(), tenant.replace('\'', "''"));
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        psql(&url, "SELECT 1", None)?;
        let startup = start.elapsed();
        let mut rates = Vec::new();
        for sql in [
            format!(
                "COPY (SELECT {} FROM {OP_LOG} WHERE {} = '{tenant}' ORDER BY {}) TO STDOUT",
                OP_LOG_COLUMNS.join(", "),
                col::TENANT_ID,
                col::SEQ
            ),
            format!(
                "COPY (SELECT {} FROM {SNAPSHOTS} WHERE {} = '{tenant}' AND {} = 'todo' ORDER BY {}) TO STDOUT",
                SNAPSHOT_COLUMNS.join(", "),
                col::TENANT_ID,
                col::MODEL,
                col::ID
            ),
        ] {
            let start = Instant::now();
            let out = psql(&url, &sql, None)?;
            let took = start.elapsed().saturating_sub(startup);
            let rows = out.iter().filter(|b| **b == b'\n').count();
            rates.push(rows as f64 / took.as_secs_f64());
        }
        Ok((rates[0], rates[1]))
    })
    .await?
}
