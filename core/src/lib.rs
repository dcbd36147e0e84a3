//! The part of better-sync that the server and every client share: the wire
//! types of the protocol, the hybrid logical clock, and the field-level
//! last-writer-wins join. A replica that folds changes with
//! [`conflict::RowState`] converges with the server by construction.
//!
//! The server crate (`better-sync`) and the Rust client (`better-sync-client`)
//! re-export these modules; depend on this crate directly only to write
//! another client.

pub mod conflict;
pub mod hlc;
pub mod protocol;

pub use crate::conflict::{Conflict, RowState, Stamp};
pub use crate::hlc::{Hlc, HlcClock};
pub use crate::protocol::{Change, Op, PROTOCOL_VERSION};
