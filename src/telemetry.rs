//! Telemetry: the engine's metrics, through the `metrics` facade: their names and what
//! they measure, in one place. No exporter is forced on the library; an app
//! installs one (the examples serve Prometheus text at `GET /metrics`), and
//! without one every record is a no-op.
//!
//! | metric | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `better_sync_push_seconds` | histogram | `outcome` | a push, from validation to its answer |
//! | `better_sync_push_changes_refused_total` | counter | `code` | changes of pushes refused, by `SYNC:*` code |
//! | `better_sync_commit_groups_total` | counter | `path` | group commits, by the strategy that committed them |
//! | `better_sync_commit_group_changes` | histogram | | changes per group commit |
//! | `better_sync_commit_seconds` | histogram | `path` | a group commit, from taking the group to its answer |
//! | `better_sync_changes_committed_total` | counter | | log entries written |
//! | `better_sync_log_head` | gauge | | the last sequence number this instance knows committed |
//! | `better_sync_pulls_total` | counter | `kind` | pull pages answered (`pull`, `long_poll`, `catch_up`) |
//! | `better_sync_pulled_changes_total` | counter | | changes in pull pages |
//! | `better_sync_pulled_bytes_total` | counter | | estimated bytes of pull pages |
//! | `better_sync_ws_sessions` | gauge | | open WebSocket sessions |
//! | `better_sync_ws_sessions_opened_total` | counter | | WebSocket sessions started |
//! | `better_sync_ws_sessions_closed_total` | counter | `reason` | WebSocket sessions ended, by why |
//! | `better_sync_live_subscriptions` | gauge | | live subscriptions held by open sessions |
//! | `better_sync_fanout_lag_seconds` | histogram | | from a commit reaching the fan-out to a subscriber's frame being sent |
//! | `better_sync_resyncs_total` | counter | | subscribers that fell behind and caught up by pull |
//! | `better_sync_rate_limited_total` | counter | `key` | requests refused by a rate limit |
//! | `better_sync_errors_total` | counter | `code` | error answers, by `SYNC:*` code |
//! | `better_sync_compactions_total` | counter | `outcome` | compaction runs (`done`, `skipped`: another holds the lease, `failed`) |
//! | `better_sync_compacted_total` | counter | `what` | rows compaction deleted (`log`, `tombstones`) |
//! | `better_sync_erased_rows_total` | counter | | rows erased |
//! | `better_sync_stale_cursors_total` | counter | | reads refused with `SYNC:CURSOR_STALE` |
//!
//! Labels never carry tenants, users or payload values: their number is
//! bounded by the code, not by the data.

/// A push's duration; `outcome` is `ok` or the `SYNC:*` code.
pub(crate) const PUSH_SECONDS: &str = "better_sync_push_seconds";
/// Changes of refused pushes; `code`.
pub(crate) const PUSH_CHANGES_REFUSED: &str = "better_sync_push_changes_refused_total";
/// Group commits; `path`.
pub(crate) const COMMIT_GROUPS: &str = "better_sync_commit_groups_total";
/// Changes per group commit.
pub(crate) const COMMIT_GROUP_CHANGES: &str = "better_sync_commit_group_changes";
/// A group commit's duration; `path`.
pub(crate) const COMMIT_SECONDS: &str = "better_sync_commit_seconds";
/// Log entries written.
pub(crate) const CHANGES_COMMITTED: &str = "better_sync_changes_committed_total";
/// The log head this instance knows.
pub(crate) const LOG_HEAD: &str = "better_sync_log_head";
/// Pull pages; `kind`.
pub(crate) const PULLS: &str = "better_sync_pulls_total";
/// Changes in pull pages.
pub(crate) const PULLED_CHANGES: &str = "better_sync_pulled_changes_total";
/// Estimated bytes of pull pages.
pub(crate) const PULLED_BYTES: &str = "better_sync_pulled_bytes_total";
/// Open WebSocket sessions.
pub(crate) const WS_SESSIONS: &str = "better_sync_ws_sessions";
/// WebSocket sessions started.
pub(crate) const WS_OPENED: &str = "better_sync_ws_sessions_opened_total";
/// WebSocket sessions ended; `reason`.
pub(crate) const WS_CLOSED: &str = "better_sync_ws_sessions_closed_total";
/// Live subscriptions of open sessions.
pub(crate) const LIVE_SUBSCRIPTIONS: &str = "better_sync_live_subscriptions";
/// From a commit reaching the fan-out to a frame sent.
pub(crate) const FANOUT_LAG_SECONDS: &str = "better_sync_fanout_lag_seconds";
/// Subscribers that caught up by pull after falling behind.
pub(crate) const RESYNCS: &str = "better_sync_resyncs_total";
/// Requests refused by a rate limit; `key`.
pub(crate) const RATE_LIMITED: &str = "better_sync_rate_limited_total";
/// Error answers; `code`.
pub(crate) const ERRORS: &str = "better_sync_errors_total";

/// Compaction runs; `outcome`.
pub(crate) const COMPACTIONS: &str = "better_sync_compactions_total";
/// Rows compaction deleted; `what`.
pub(crate) const COMPACTED: &str = "better_sync_compacted_total";
/// Rows erased.
pub(crate) const ERASED_ROWS: &str = "better_sync_erased_rows_total";
/// Reads refused because their cursor is below the tenant's horizon.
pub(crate) const STALE_CURSORS: &str = "better_sync_stale_cursors_total";
/// Rows of materialized models left out of the application's table because
/// their fields do not make the entity's model; `table`.
pub(crate) const MATERIALIZE_SKIPPED: &str = "better_sync_materialize_skipped_total";

/// Describe every metric to the installed recorder (units and help texts
/// for exporters); called when an engine is built.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        PUSH_SECONDS,
        Unit::Seconds,
        "A push, from validation to its answer"
    );
    describe_counter!(
        PUSH_CHANGES_REFUSED,
        Unit::Count,
        "Changes of refused pushes, by SYNC code"
    );
    describe_counter!(COMMIT_GROUPS, Unit::Count, "Group commits, by commit path");
    describe_histogram!(
        COMMIT_GROUP_CHANGES,
        Unit::Count,
        "Changes per group commit"
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "A group commit, by commit path"
    );
    describe_counter!(CHANGES_COMMITTED, Unit::Count, "Log entries written");
    describe_gauge!(
        LOG_HEAD,
        Unit::Count,
        "The last sequence number this instance knows committed"
    );
    describe_counter!(PULLS, Unit::Count, "Pull pages answered, by kind");
    describe_counter!(PULLED_CHANGES, Unit::Count, "Changes in pull pages");
    describe_counter!(PULLED_BYTES, Unit::Bytes, "Estimated bytes of pull pages");
    describe_gauge!(WS_SESSIONS, Unit::Count, "Open WebSocket sessions");
    describe_counter!(WS_OPENED, Unit::Count, "WebSocket sessions started");
    describe_counter!(
        WS_CLOSED,
        Unit::Count,
        "WebSocket sessions ended, by reason"
    );
    describe_gauge!(
        LIVE_SUBSCRIPTIONS,
        Unit::Count,
        "Live subscriptions of open WebSocket sessions"
    );
    describe_histogram!(
        FANOUT_LAG_SECONDS,
        Unit::Seconds,
        "From a commit reaching the fan-out to a subscriber's frame sent"
    );
    describe_counter!(
        RESYNCS,
        Unit::Count,
        "Subscribers that fell behind and caught up by pull"
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Requests refused by a rate limit, by key"
    );
    describe_counter!(ERRORS, Unit::Count, "Error answers, by SYNC code");
    describe_counter!(COMPACTIONS, Unit::Count, "Compaction runs, by outcome");
    describe_counter!(
        COMPACTED,
        Unit::Count,
        "Rows compaction deleted (log entries, tombstones)"
    );
    describe_counter!(ERASED_ROWS, Unit::Count, "Rows erased");
    describe_counter!(
        STALE_CURSORS,
        Unit::Count,
        "Reads refused because their cursor is below the tenant's horizon"
    );
    describe_counter!(
        MATERIALIZE_SKIPPED,
        Unit::Count,
        "Rows left out of a materialized table: their fields do not make the entity's model"
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use migration::{Migrator, MigratorTrait};
    use tracing_subscriber::fmt::format::FmtSpan;

    use crate::auth::Jwt;
    use crate::{BetterSync, SeaOrmStorage};

    /// What the spans print, kept for the assertions.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One push followed by its spans: the request (route, tenant, user,
    /// status), the push (changes, outcome), the commit it led to (path,
    /// head) and the fan-out round that published it; no token, no
    /// payload value anywhere.
    /// The process-wide subscriber, installed once: a scoped one misses
    /// spans whose interest another test's thread cached first.
    fn captured() -> &'static Captured {
        static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        CAPTURED.get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_span_events(FmtSpan::CLOSE)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            captured
        })
    }

    #[test]
    fn a_push_is_followed_by_its_spans_and_nothing_secret_is_in_them() {
        let captured = captured();
        let secret = b"spans-test-secret-spans-test-secret";
        let token = crate::testing::dev_token(secret, "alice", "spans-tenant", 3600);
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
                let db = SeaOrmStorage::connect(&url).await.expect("connect");
                Migrator::up(&db, None).await.expect("migrate");
                let sync = BetterSync::builder()
                    .storage(SeaOrmStorage::new(db))
                    .auth(Jwt::hs256(secret))
                    .build()
                    .expect("build");
                // A subscriber starts the fan-out, so the commit is published.
                let fanout = &sync.inner.engine.fanout;
                fanout.ensure_started();
                fanout.wait_ready().await;
                let _live = fanout.subscribe("spans-tenant", 16);
                let body = r#"{"changes":[{"op_id":"o1","model":"todo","pk":"1","op":"insert","payload":{"title":"secret-payload-value"},"updated_at":"2026-01-01T00:00:00.000Z"}]}"#;
                let req = http::Request::post("/api/sync/push?debug=query-value")
                    .header("authorization", format!("Bearer {token}"))
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .expect("request");
                let res = sync.handle(req).await;
                assert_eq!(res.status(), 200);
                // Let the fan-out round end.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            });
        }
        let out = String::from_utf8(captured.0.lock().expect("out").clone()).expect("utf-8");
        for expected in [
            "sync.request{",
            "path=\"/api/sync/push\"",
            "tenant=\"spans-tenant\"",
            "user=\"alice\"",
            "status=200",
            "sync.push{changes=1",
            "outcome=\"ok\"",
            "sync.commit{batches=1 changes=1 path=\"optimistic\" head=1}",
            "sync.fanout{changes=1 head=1}",
        ] {
            assert!(out.contains(expected), "{expected} missing from:\n{out}");
        }
        for secret in [token.as_str(), "secret-payload-value", "query-value"] {
            assert!(!out.contains(secret), "{secret} leaked into:\n{out}");
        }
    }
}
