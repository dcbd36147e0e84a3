//! `GET B/health`: liveness, and readiness (the database answers, the live
//! fan-out runs, and on Postgres its commit listener is connected). No
//! credentials, no tenant data: only what a load balancer needs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Engine;

/// How long the database may take to answer a health check.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which question a health check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Is the process serving? Touches nothing else.
    Live,
    /// Can it serve sync traffic now?
    Ready,
}

impl Engine {
    /// The answer to a health check: whether it passed, and the JSON body.
    pub(crate) async fn health(&self, probe: Probe) -> (bool, Value) {
        // Liveness holds while draining: the process still serves the
        // work in flight, and a restart would cut it.
        if probe == Probe::Live {
            return (true, json!({ "status": "ok", "probe": "live" }));
        }
        let start = Instant::now();
        let database =
            match tokio::time::timeout(DATABASE_TIMEOUT, self.storage.check_ready()).await {
                Ok(Ok(())) => json!({
                    "ok": true,
                    "latencyMs": start.elapsed().as_secs_f64() * 1000.0,
                }),
                // The error's text may name hosts or users: it goes to the log,
                // not to an unauthenticated caller.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "health check: the database did not answer");
                    json!({ "ok": false, "error": "the database did not answer" })
                }
                Err(_) => json!({ "ok": false, "error": "the database did not answer in time" }),
            };
        let fanout = self.fanout.health();
        let fanout_ok = !fanout.started || fanout.running;
        let listener_ok = !(fanout.started && fanout.has_listener) || fanout.listening;
        let draining = self.lifecycle.is_draining();
        let ready = database["ok"] == true && fanout_ok && listener_ok && !draining;
        let status = if draining {
            "draining"
        } else if ready {
            "ok"
        } else {
            "unavailable"
        };
        let body = json!({
            "status": status,
            "probe": "ready",
            "checks": {
                "database": database,
                "fanout": {
                    "ok": fanout_ok,
                    "started": fanout.started,
                    "running": fanout.running,
                },
                "listener": {
                    "ok": listener_ok,
                    "present": fanout.has_listener,
                    "connected": fanout.listening,
                },
            },
        });
        (ready, body)
    }
}
