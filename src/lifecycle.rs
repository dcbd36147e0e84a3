//! Graceful shutdown: an engine that drains. Once
//! [`Lifecycle::shutdown`] starts, new pushes and WebSocket handshakes are
//! refused (`503 SYNC:UNAVAILABLE`, retryable: another instance takes them),
//! pushes already accepted commit, WebSocket sessions are closed with code
//! 1012 (service restart) so clients reconnect elsewhere from their cursor,
//! and long-polls answer at once with what they have. It ends when nothing
//! is left in flight, or at its deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// What the engine is doing that a shutdown waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A push between its checks and its answer.
    Push,
    /// A WebSocket session.
    Session,
    /// A long-poll waiting for a commit.
    LongPoll,
}

/// The engine's state for graceful shutdown.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    draining: watch::Sender<bool>,
    pushes: AtomicUsize,
    sessions: AtomicUsize,
    long_polls: AtomicUsize,
    /// Woken whenever a piece of work ends.
    ended: Notify,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: watch::channel(false).0,
            pushes: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            long_polls: AtomicUsize::new(0),
            ended: Notify::new(),
        }
    }
}

/// Counts one piece of work while it lives.
#[derive(Debug)]
pub(crate) struct Working<'a> {
    lifecycle: &'a Lifecycle,
    work: Work,
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.lifecycle
            .counter(self.work)
            .fetch_sub(1, Ordering::SeqCst);
        self.lifecycle.ended.notify_waiters();
    }
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Pushes still committing at the deadline (0 when it drained).
    pub pushes_left: usize,
    /// WebSocket sessions still open at the deadline.
    pub sessions_left: usize,
    /// Long-polls still waiting at the deadline.
    pub long_polls_left: usize,
}

impl ShutdownReport {
    /// Whether everything ended before the deadline.
    pub fn drained(&self) -> bool {
        self.pushes_left == 0 && self.sessions_left == 0 && self.long_polls_left == 0
    }
}

impl Lifecycle {
    fn counter(&self, work: Work) -> &AtomicUsize {
        match work {
            Work::Push => &self.pushes,
            Work::Session => &self.sessions,
            Work::LongPoll => &self.long_polls,
        }
    }

    /// Whether a shutdown has started.
    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once a shutdown starts (at once if it has).
    pub(crate) async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Count a piece of work until the guard is dropped.
    pub(crate) fn start(&self, work: Work) -> Working<'_> {
        self.counter(work).fetch_add(1, Ordering::SeqCst);
        Working {
            lifecycle: self,
            work,
        }
    }

    fn left(&self) -> ShutdownReport {
        ShutdownReport {
            pushes_left: self.pushes.load(Ordering::SeqCst),
            sessions_left: self.sessions.load(Ordering::SeqCst),
            long_polls_left: self.long_polls.load(Ordering::SeqCst),
        }
    }

    /// Start draining, and wait until nothing is in flight or `deadline`
    /// has passed.
    pub(crate) async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.draining.send_replace(true);
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let ended = self.ended.notified();
            let left = self.left();
            if left.drained() || tokio::time::Instant::now() >= until {
                return left;
            }
            // A short tick as well: a guard dropped between the check and
            // the wait is seen at the next tick at the latest.
            let tick = until.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(tick, ended).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_work_and_stops_at_the_deadline() {
        let l = Lifecycle::default();
        assert!(!l.is_draining());
        let push = l.start(Work::Push);
        let session = l.start(Work::Session);
        let report = l.shutdown(Duration::from_millis(50)).await;
        assert!(l.is_draining());
        assert_eq!((report.pushes_left, report.sessions_left), (1, 1));
        drop(push);
        let ending = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(session);
        };
        let (report, ()) = tokio::join!(l.shutdown(Duration::from_secs(5)), ending);
        assert!(report.drained(), "{report:?}");
        // `draining` resolves at once after a shutdown started.
        tokio::time::timeout(Duration::from_millis(100), l.draining())
            .await
            .expect("draining");
    }
}
