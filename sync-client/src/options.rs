//! The settings a client is built with, shared by the builder and the client.

use std::sync::Arc;
use std::time::Duration;

use crate::events::Event;

/// How the client receives live changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket subscription (`B/ws`); when it keeps failing (a proxy
    /// that refuses upgrades, say) the client long-polls for a minute and
    /// then tries the WebSocket again.
    #[default]
    WebSocket,
    /// HTTP only: long-poll `B/pull?wait=S`.
    Http,
}

pub(crate) type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// Settings fixed at build time.
pub(crate) struct Options {
    pub(crate) models: Option<Vec<String>>,
    /// Replicate shape subscriptions only, no model whole.
    pub(crate) shapes_only: bool,
    pub(crate) transport: Transport,
    pub(crate) on_event: Option<EventHook>,
    pub(crate) back_off_at: usize,
    pub(crate) long_poll_wait: Duration,
}
