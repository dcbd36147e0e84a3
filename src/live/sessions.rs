//! The WebSocket sessions this instance holds, with what they subscribed to
//! and how far they were sent: what the inspector shows. Sessions register
//! themselves and are gone when they end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One session, as the inspector sees it.
#[derive(Debug)]
pub(crate) struct SessionInfo {
    pub(crate) id: u64,
    pub(crate) tenant: String,
    pub(crate) user: String,
    pub(crate) opened: SystemTime,
    /// The highest sequence number sent to it.
    pub(crate) delivered: AtomicI64,
    /// Its subscriptions: id and models (all when `None`).
    pub(crate) subscriptions: Mutex<Vec<(String, Option<Vec<String>>)>>,
}

/// Every session of this instance.
#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    next: AtomicU64,
    sessions: Mutex<HashMap<u64, Arc<SessionInfo>>>,
}

/// A registered session; dropped, it is removed.
#[derive(Debug)]
pub(crate) struct Registered<'a> {
    registry: &'a SessionRegistry,
    pub(crate) info: Arc<SessionInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.info.id);
    }
}

impl SessionRegistry {
    /// Register a session of `user` in `tenant`.
    pub(crate) fn register(&self, tenant: &str, user: &str) -> Registered<'_> {
        let info = Arc::new(SessionInfo {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            opened: SystemTime::now(),
            delivered: AtomicI64::new(0),
            subscriptions: Mutex::default(),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.id, info.clone());
        Registered {
            registry: self,
            info,
        }
    }

    /// The sessions of `tenant`, oldest first.
    pub(crate) fn of_tenant(&self, tenant: &str) -> Vec<Arc<SessionInfo>> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = sessions
            .values()
            .filter(|s| s.tenant == tenant)
            .cloned()
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }
}

impl SessionInfo {
    /// Note a subscription (replacing one with the same id).
    pub(crate) fn subscribed(&self, id: &str, models: Option<&[String]>) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|(s, _)| s != id);
        subs.push((id.to_owned(), models.map(<[String]>::to_vec)));
    }

    /// Note that a subscription ended.
    pub(crate) fn unsubscribed(&self, id: &str) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|(s, _)| s != id);
    }

    /// Note what was sent.
    pub(crate) fn sent_up_to(&self, seq: i64) {
        self.delivered.fetch_max(seq, Ordering::Relaxed);
    }
}
