//! Group commit: concurrent pushes share one storage transaction.
//!
//! Every push sends its validated batch to the engine's writer task, which
//! takes everything that queued up while the previous commit ran and commits
//! it in one transaction (one lock wait, one fsync), answering each batch
//! separately. The transaction runs in that task, so a client hanging up
//! cannot cancel a commit other clients are waiting on.

mod merge;
mod row_cache;
mod strategy;
#[cfg(test)]
mod tests;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use self::row_cache::RowCache;
use self::strategy::commit_group;
use crate::error::SyncError;
use crate::live::Handoff;
use crate::materialize::Materializers;
use crate::storage::Storage;
use better_sync_core::hlc::Hlc;
use better_sync_core::protocol::{Change, ChangeResult};

/// A change that passed validation, with its clock parsed.
#[derive(Debug, Clone)]
pub(crate) struct ValidChange {
    pub(crate) change: Change,
    pub(crate) clock: Hlc,
    /// Canonical text of `clock`.
    pub(crate) updated_at: String,
    pub(crate) payload_text: String,
}

type BatchResult = Result<(Vec<ChangeResult>, i64), SyncError>;

struct Pending {
    tenant: String,
    changes: Vec<ValidChange>,
    reply: oneshot::Sender<BatchResult>,
    /// The pusher's span: the commit that takes this batch follows from it.
    span: tracing::Span,
}

/// Most changes one group commit takes; the rest wait for the next one.
const MAX_GROUP_CHANGES: usize = 5000;

/// The engine's single writer: a task that takes every batch queued while
/// the previous commit ran and commits them together.
pub(crate) struct Writer {
    tx: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// Where committed entries go for the live fan-out.
    handoff: Arc<Handoff>,
    /// The application's tables that commits also write.
    tables: Arc<Materializers>,
}

impl Writer {
    pub(crate) fn new(handoff: Arc<Handoff>, tables: Materializers) -> Self {
        Self {
            tx: OnceLock::new(),
            handoff,
            tables: Arc::new(tables),
        }
    }

    /// Commit `changes` for `tenant`: the per-change results and the log head
    /// after the commit.
    pub(crate) async fn submit(
        &self,
        storage: Arc<dyn Storage>,
        tenant: String,
        changes: Vec<ValidChange>,
    ) -> BatchResult {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Started on first use, on the caller's runtime; it ends when the
            // engine (and with it the sender) is dropped.
            tokio::spawn(run(storage, self.tables.clone(), rx, self.handoff.clone()));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Pending {
            tenant,
            changes,
            reply,
            span: tracing::Span::current(),
        })
        .map_err(|_| SyncError::internal("the writer stopped"))?;
        answer.await.unwrap_or_else(|_| {
            Err(SyncError::internal(
                "the server failed while committing this push; it may or may not have been \
                 written, and re-sending the same op ids is safe",
            ))
        })
    }
}

async fn run(
    storage: Arc<dyn Storage>,
    tables: Arc<Materializers>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    handoff: Arc<Handoff>,
) {
    let mut carry: Option<Pending> = None;
    let mut known = RowCache::default();
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut size = first.changes.len();
        let mut group = vec![first];
        while size < MAX_GROUP_CHANGES {
            match rx.try_recv() {
                Ok(p) if size + p.changes.len() > MAX_GROUP_CHANGES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    size += p.changes.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        // Callers that hung up need no answer and get no write.
        group.retain(|p| !p.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        // A panic in a storage call (or a hook the commit runs) fails this
        // group only: its callers' reply channels are dropped during the
        // unwind, which answers them with an internal error, and the writer
        // goes on with the next group.
        let committed = AssertUnwindSafe(commit_group(
            storage.as_ref(),
            &tables,
            &handoff,
            &mut known,
            group,
        ))
        .catch_unwind()
        .await;
        if let Err(panic) = committed {
            // What it holds may be half updated, and whether the commit
            // reached the database is unknown.
            known.forget();
            tracing::error!(
                panic = %panic_message(panic.as_ref()),
                "the writer panicked while committing a group; that group failed"
            );
        }
    }
}

/// The text of a panic's payload, when it is a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A row: tenant, model, primary key.
type RowKey = (String, String, String);
