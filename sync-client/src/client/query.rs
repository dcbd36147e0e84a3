//! Live queries: the rows of a model matching a filter, re-emitted when they change.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::state::Inner;
use crate::change::{Filter, Row};

/// A live query from [`crate::SyncClient::subscribe_query`]: the first
/// [`LiveQuery::next`] answers at once with the current rows; each later one
/// waits for a local or remote change that alters the result. Rows come
/// sorted by id. It ends (`None`) when the client is closed.
pub struct LiveQuery {
    inner: Arc<Inner>,
    model: String,
    filter: Filter,
    touched: broadcast::Receiver<Arc<HashSet<String>>>,
    closed: watch::Receiver<bool>,
    last: Option<Vec<Row>>,
}

impl std::fmt::Debug for LiveQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQuery")
            .field("model", &self.model)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl LiveQuery {
    pub(crate) fn new(
        inner: Arc<Inner>,
        model: String,
        filter: Filter,
        touched: broadcast::Receiver<Arc<HashSet<String>>>,
        closed: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner,
            model,
            filter,
            touched,
            closed,
            last: None,
        }
    }

    /// The current rows the first time, then the rows after the next change
    /// that alters them.
    pub async fn next(&mut self) -> Option<Vec<Row>> {
        if *self.closed.borrow() {
            return None;
        }
        if self.last.is_none() {
            let rows = self.inner.query(&self.model, &self.filter).await;
            self.last = Some(rows.clone());
            return Some(rows);
        }
        loop {
            let relevant = tokio::select! {
                t = self.touched.recv() => match t {
                    Ok(models) => models.contains(&self.model),
                    // Missed notifications: look again to be safe.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closed.changed() => return None,
            };
            if !relevant {
                continue;
            }
            let rows = self.inner.query(&self.model, &self.filter).await;
            if self.last.as_ref() != Some(&rows) {
                self.last = Some(rows.clone());
                return Some(rows);
            }
        }
    }

    /// The rows last returned by [`Self::next`].
    pub fn current(&self) -> Option<&[Row]> {
        self.last.as_deref()
    }

    /// The query as a [`Stream`] of row sets.
    pub fn into_stream(self) -> impl Stream<Item = Vec<Row>> + Send {
        futures_util::stream::unfold(self, |mut q| async move {
            let rows = q.next().await?;
            Some((rows, q))
        })
    }
}
