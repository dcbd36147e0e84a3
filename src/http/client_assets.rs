//! The browser client, compiled into the engine and served at `B/client.js`.

use sha2::{Digest, Sha256};

/// The ES module (`client/better-sync.js`).
pub(crate) const CLIENT_JS: &str = include_str!("../../client/better-sync.js");

/// A strong `ETag` for an asset.
pub(crate) fn etag(body: &str) -> String {
    let d = Sha256::digest(body.as_bytes());
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
