//! What the client knows: rows (the server's state with the outbox folded
//! on top), the outbox, status, and the helpers every loop shares.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use better_sync_core::hlc::{Hlc, HlcClock};
use better_sync_core::protocol::Change as WireChange;
use better_sync_core::{RowState, Stamp};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::backoff::backoff_delay;
use crate::change::{Filter, Row};
use crate::error::{ClientError, codes};
use crate::events::{Event, LiveMode};
use crate::options::Options;
use crate::remote::{Metadata, Remote};
use crate::store::{OutboxEntry, Store};

/// Most changes per push, whatever the server allows.
pub(crate) const MAX_BATCH: usize = 1000;
/// Most bytes of changes per push, whatever the server allows.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Rejected changes kept for [`SyncClient::rejected`].
pub(crate) const MAX_REJECTED_KEPT: usize = 100;
/// After this many WebSocket failures in a row, use long-poll for a while.
pub(crate) const WS_FAILURES_BEFORE_FALLBACK: u32 = 2;
/// Pause between empty polls when the server cannot hold a long-poll.
pub(crate) const PLAIN_POLL_PAUSE: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long to stay on long-poll before trying the WebSocket again.
pub(crate) const LONG_POLL_PERIOD: Duration = Duration::from_secs(60);

/// A change the server refused for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The change as it was queued.
    pub change: WireChange,
    /// The server's answer.
    pub error: ClientError,
    /// When it was refused, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl Rejected {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "change": self.change,
            "error": {
                "code": self.error.code(),
                "message": self.error.message(),
                "status": self.error.status(),
                "meta": self.error.meta(),
            },
            "at": self.at_ms,
        })
    }

    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        let e = v.get("error")?;
        let mut error = ClientError::new(e.get("code")?.as_str()?, e.get("message")?.as_str()?)
            .with_status(u16::try_from(e.get("status")?.as_u64()?).ok()?);
        if let Some(meta) = e.get("meta").filter(|m| !m.is_null()) {
            error = error.with_meta(meta.clone());
        }
        Some(Self {
            change: serde_json::from_value(v.get("change")?.clone()).ok()?,
            error,
            at_ms: v.get("at")?.as_i64()?,
        })
    }
}

pub(crate) type Rows = HashMap<String, BTreeMap<String, RowState>>;

/// One shape subscription: what it asked for and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct ShapeSub {
    pub(crate) name: String,
    pub(crate) params: Value,
    /// The shape's model, learned from the server's first answer.
    pub(crate) model: Option<String>,
    /// Where its shape pulls go on from (HTTP only; the WebSocket restarts
    /// a shape from its current rows).
    pub(crate) cursor: Option<String>,
    pub(crate) held: HashSet<String>,
}

/// The subscriptions by key (the shape's name and its canonical params).
pub(crate) type ShapeSubs = BTreeMap<String, ShapeSub>;

/// What the client knows, in memory; the store holds the same.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) rows: Rows,
    pub(crate) outbox: VecDeque<OutboxEntry>,
    /// Queued changes per `(model, pk)`: rows with local writes in flight.
    pub(crate) pending: HashMap<(String, String), usize>,
    pub(crate) next_key: i64,
    pub(crate) cursor: Option<String>,
    pub(crate) needs_resync: bool,
    pub(crate) rejected: Vec<Rejected>,
    /// Shape subscriptions and the rows each holds.
    pub(crate) shapes: ShapeSubs,
}

impl State {
    pub(crate) fn row(&self, model: &str, id: &str) -> Option<&RowState> {
        self.rows.get(model)?.get(id)
    }

    pub(crate) fn put_row(&mut self, model: &str, id: &str, state: RowState) {
        self.rows
            .entry(model.to_owned())
            .or_default()
            .insert(id.to_owned(), state);
    }

    pub(crate) fn push_outbox(&mut self, entry: OutboxEntry) {
        *self
            .pending
            .entry((entry.change.model.clone(), entry.change.pk.clone()))
            .or_default() += 1;
        self.outbox.push_back(entry);
    }

    pub(crate) fn remove_outbox(&mut self, keys: &HashSet<i64>) {
        let pending = &mut self.pending;
        self.outbox.retain(|e| {
            if !keys.contains(&e.key) {
                return true;
            }
            let k = (e.change.model.clone(), e.change.pk.clone());
            if let Some(n) = pending.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(&k);
                }
            }
            false
        });
    }

    pub(crate) fn is_pending(&self, model: &str, pk: &str) -> bool {
        self.pending
            .contains_key(&(model.to_owned(), pk.to_owned()))
    }

    pub(crate) fn rows_json(&self, model: &str, filter: &Filter) -> Vec<Row> {
        let Some(rows) = self.rows.get(model) else {
            return Vec::new();
        };
        rows.iter()
            .filter(|(_, s)| s.is_live())
            .map(|(id, s)| Row {
                id: id.clone(),
                value: s.value(),
            })
            .filter(|r| filter.matches(r))
            .collect()
    }
}

#[derive(Default)]
pub(crate) struct Status {
    pub(crate) online: bool,
    pub(crate) last_error: Option<ClientError>,
    pub(crate) in_flight: usize,
    pub(crate) live: Option<LiveMode>,
    /// The credentials were refused and nothing succeeded since.
    pub(crate) auth_failed: bool,
    /// The server refused this client's model versions and nothing
    /// succeeded since.
    pub(crate) version_unsupported: bool,
    /// The server asked us to slow down until then.
    pub(crate) slow_down_until: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Tasks {
    pub(crate) sync: Option<JoinHandle<()>>,
    pub(crate) push: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) remote: Remote,
    pub(crate) store: Store,
    pub(crate) opts: Options,
    pub(crate) actor: String,
    pub(crate) clock: HlcClock,
    pub(crate) state: Mutex<State>,
    /// Models touched by a local or remote change: live queries re-run.
    pub(crate) touched: broadcast::Sender<Arc<HashSet<String>>>,
    pub(crate) queued: watch::Sender<usize>,
    /// Wakes the push loop (new outbox entries, drain).
    pub(crate) work: Notify,
    /// Cuts the live round short (local state must be rebuilt).
    pub(crate) resync: Notify,
    /// Bumped when shape subscriptions are added or dropped: the live
    /// round starts again with the new set.
    pub(crate) shapes_changed: watch::Sender<u64>,
    pub(crate) status: StdMutex<Status>,
    /// `sync.json` once read; a std mutex, never held across the fetch, so
    /// local writes never wait for the network.
    pub(crate) metadata: StdMutex<Option<Arc<Metadata>>>,
    pub(crate) tasks: StdMutex<Tasks>,
    pub(crate) connected: AtomicBool,
    pub(crate) closed: watch::Sender<bool>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fold the queued changes into `rows` (optimistic local state on top of
/// the server's).
pub(crate) fn fold_outbox(rows: &mut Rows, outbox: &VecDeque<OutboxEntry>) {
    for e in outbox {
        let c = &e.change;
        let Ok(clock) = c.updated_at.parse::<Hlc>() else {
            continue;
        };
        rows.entry(c.model.clone())
            .or_default()
            .entry(c.pk.clone())
            .or_default()
            .apply(
                c.op,
                &c.payload,
                &Stamp::new(clock, c.actor.clone(), c.op_id.clone()),
            );
    }
}

impl Inner {
    pub(crate) fn emit(&self, event: Event) {
        if let Some(hook) = &self.opts.on_event {
            // A panicking hook must not take the push or sync loop down with it.
            let run = std::panic::AssertUnwindSafe(|| hook(&event));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("sync client: the on_event hook panicked; event dropped");
            }
        }
    }

    /// Tell the outbox's new size: the event first, then the watch that
    /// `drain()` waits on, so that whoever sees the outbox empty has also
    /// been told so through the event hook.
    pub(crate) fn report_outbox(&self, queued: usize) {
        self.emit(Event::Outbox { queued });
        self.queued.send_replace(queued);
    }

    pub(crate) fn notify_models(&self, models: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = models.into_iter().collect();
        if !set.is_empty() {
            let _ = self.touched.send(Arc::new(set));
        }
    }

    pub(crate) async fn query(&self, model: &str, filter: &Filter) -> Vec<Row> {
        self.state.lock().await.rows_json(model, filter)
    }

    /// An authenticated request succeeded.
    pub(crate) fn note_success(&self) {
        let (changed, auth_back) = {
            let mut status = lock(&self.status);
            status.last_error = None;
            status.version_unsupported = false;
            (
                !std::mem::replace(&mut status.online, true),
                std::mem::replace(&mut status.auth_failed, false),
            )
        };
        if changed {
            self.emit(Event::Online(true));
        }
        if auth_back {
            self.emit(Event::Auth {
                ok: true,
                error: None,
            });
        }
    }

    /// The server answered a request that needs no credentials.
    pub(crate) fn note_reachable(&self) {
        let changed = !std::mem::replace(&mut lock(&self.status).online, true);
        if changed {
            self.emit(Event::Online(true));
        }
    }

    pub(crate) fn note_failure(&self, error: &ClientError) {
        let offline = error.code() == codes::NETWORK || error.status() >= 500;
        let changed = {
            let mut status = lock(&self.status);
            status.last_error = Some(error.clone());
            if error.status() == 429 {
                let pause = error
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .min(MAX_RETRY_AFTER);
                status.slow_down_until = Instant::now().checked_add(pause);
            }
            offline && std::mem::replace(&mut status.online, false)
        };
        if changed {
            self.emit(Event::Online(false));
        }
        // Refused credentials are not being offline: the app must renew them.
        let refused = error.status() == 401
            || (error.status() == 403 && error.meta().is_none_or(|m| m.get("index").is_none()));
        if refused && !std::mem::replace(&mut lock(&self.status).auth_failed, true) {
            self.emit(Event::Auth {
                ok: false,
                error: Some(error.clone()),
            });
        }
        if error.code() == "SYNC:VERSION_UNSUPPORTED"
            && !std::mem::replace(&mut lock(&self.status).version_unsupported, true)
        {
            self.emit(Event::VersionUnsupported {
                error: error.clone(),
            });
        }
    }

    pub(crate) fn set_live(&self, mode: Option<LiveMode>) {
        let changed = {
            let mut status = lock(&self.status);
            std::mem::replace(&mut status.live, mode) != mode
        };
        if let (true, Some(mode)) = (changed, mode) {
            self.emit(Event::Live(mode));
        }
    }

    pub(crate) fn cached_metadata(&self) -> Option<Arc<Metadata>> {
        lock(&self.metadata).clone()
    }

    /// The server's `sync.json`, read once (two loops may both read it the
    /// first time; either answer will do).
    pub(crate) async fn metadata(&self) -> Result<Arc<Metadata>, ClientError> {
        if let Some(m) = self.cached_metadata() {
            return Ok(m);
        }
        let meta = Arc::new(self.remote.metadata().await?);
        self.note_reachable();
        *lock(&self.metadata) = Some(meta.clone());
        Ok(meta)
    }

    /// Whether remote changes of `model` belong in local state: pull has no
    /// model filter, the WebSocket and snapshots do.
    pub(crate) fn syncs_model(&self, model: &str) -> bool {
        self.opts
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    pub(crate) async fn sleep_backoff(
        &self,
        operation: &'static str,
        attempt: &mut u32,
        error: ClientError,
    ) {
        // A server may ask for a pause, not for silence for ever.
        let asked = error.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER);
        let delay = backoff_delay(*attempt).max(asked);
        *attempt = attempt.saturating_add(1);
        tracing::debug!(operation, attempt = *attempt, ?delay, %error, "sync client: retrying");
        self.emit(Event::Retry {
            operation,
            attempt: *attempt,
            delay,
            error,
        });
        tokio::time::sleep(delay).await;
    }
}
