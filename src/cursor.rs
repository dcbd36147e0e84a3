//! Opaque cursors: a log position bound to the tenant it was issued to.
//!
//! A cursor is `base64url("bs1." + seq + "." + tag)`, where `tag` is a
//! truncated SHA-256 of the server's cursor key and the tenant id. Clients
//! must treat it as opaque; the server rejects cursors it did not issue and
//! cursors issued to another tenant with clear errors instead of silently
//! answering from a wrong position.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, SyncError};

const PREFIX: &str = "bs1.";

/// Issues and checks cursors for one deployment.
#[derive(Clone)]
pub(crate) struct CursorCodec {
    key: Vec<u8>,
}

impl CursorCodec {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn tag(&self, tenant: &str) -> String {
        let mut h = Sha256::new();
        h.update((self.key.len() as u64).to_be_bytes());
        h.update(&self.key);
        h.update(tenant.as_bytes());
        let d = h.finalize();
        d[..9].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor for position `seq` of `tenant`.
    pub(crate) fn encode(&self, tenant: &str, seq: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("{PREFIX}{seq}.{}", self.tag(tenant)))
    }

    /// The position of a cursor, checked to belong to `tenant`.
    pub(crate) fn decode(&self, tenant: &str, cursor: &str) -> Result<i64, SyncError> {
        let invalid = || {
            SyncError::new(
                ErrorCode::InvalidCursor,
                "cursor was not issued by this server; drop it and pull from the start or bootstrap from a snapshot",
            )
        };
        if cursor.len() > 128 {
            return Err(invalid());
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(raw).map_err(|_| invalid())?;
        let rest = text.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let (seq, tag) = rest.split_once('.').ok_or_else(invalid)?;
        let seq: i64 = seq.parse().map_err(|_| invalid())?;
        if seq < 0 || tag.len() != 18 {
            return Err(invalid());
        }
        if tag != self.tag(tenant) {
            return Err(SyncError::new(
                ErrorCode::ForeignCursor,
                "cursor belongs to another tenant or deployment",
            ));
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let c = CursorCodec::new(b"k");
        let cur = c.encode("t1", 42);
        assert_eq!(c.decode("t1", &cur), Ok(42));
        assert_eq!(
            c.decode("t2", &cur).map_err(|e| e.code()),
            Err(ErrorCode::ForeignCursor)
        );
        assert_eq!(
            CursorCodec::new(b"other")
                .decode("t1", &cur)
                .map_err(|e| e.code()),
            Err(ErrorCode::ForeignCursor)
        );
        for bad in [
            "",
            "42",
            "!!!",
            &URL_SAFE_NO_PAD.encode("bs1.-1.aaaaaaaaaaaaaaaaaa"),
            &URL_SAFE_NO_PAD.encode("bs1.x.aaaaaaaaaaaaaaaaaa"),
        ] {
            assert_eq!(
                c.decode("t1", bad).map_err(|e| e.code()),
                Err(ErrorCode::InvalidCursor),
                "{bad}"
            );
        }
    }
}
