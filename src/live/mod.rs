//! The live stream: every committed range of the log, read once and
//! published in sequence order to the subscribers of each tenant.
//!
//! The writer hands its commits over ([`Handoff`]); commits of other
//! instances are found through the storage's commit listener, gaps in the
//! hand-off and a poll. WebSocket sessions (the `ws` room) subscribe here;
//! long-polls wait on the head it keeps. This room knows nothing of HTTP or
//! of the engine's handle: it gets its storage, read filter and limits when
//! it is made.

mod fanout;
mod handoff;
mod sessions;

pub(crate) use self::fanout::{Batch, Fanout, FanoutConfig, FanoutDeps};
pub(crate) use self::handoff::Handoff;
pub(crate) use self::sessions::{SessionInfo, SessionRegistry};
