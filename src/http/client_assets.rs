//! The browser client, compiled into the engine: its entry module served at
//! `B/client.js`, the modules it imports at `B/lib/<name>.js` (the same
//! layout as `client/`, so relative imports resolve with no build step).

use sha2::{Digest, Sha256};

/// The ES module (`client/better-sync.js`).
pub(crate) const CLIENT_JS: &str = include_str!("../../client/better-sync.js");

/// The modules of `client/lib/`, by file name.
pub(crate) const CLIENT_MODULES: &[(&str, &str)] = &[
    ("client.js", include_str!("../../client/lib/client.js")),
    ("conflict.js", include_str!("../../client/lib/conflict.js")),
    ("errors.js", include_str!("../../client/lib/errors.js")),
    ("hlc.js", include_str!("../../client/lib/hlc.js")),
    ("ids.js", include_str!("../../client/lib/ids.js")),
    ("query.js", include_str!("../../client/lib/query.js")),
    ("shapes.js", include_str!("../../client/lib/shapes.js")),
    ("storage.js", include_str!("../../client/lib/storage.js")),
    (
        "transport.js",
        include_str!("../../client/lib/transport.js"),
    ),
    ("util.js", include_str!("../../client/lib/util.js")),
];

/// The module named `name` (`hlc.js`), if the client has one.
pub(crate) fn client_module(name: &str) -> Option<&'static str> {
    CLIENT_MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// A strong `ETag` for an asset.
pub(crate) fn etag(body: &str) -> String {
    let d = Sha256::digest(body.as_bytes());
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the entry and the modules import is served.
    #[test]
    fn every_imported_module_is_served() {
        let mut texts: Vec<&str> = CLIENT_MODULES.iter().map(|(_, t)| *t).collect();
        texts.push(CLIENT_JS);
        for text in texts {
            for line in text.lines() {
                let Some((_, from)) = line.split_once(" from './") else {
                    continue;
                };
                let path = from.trim_end_matches(['\'', ';']);
                let name = path.strip_prefix("lib/").unwrap_or(path);
                assert!(client_module(name).is_some(), "{line}");
            }
        }
    }
}
