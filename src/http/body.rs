//! Request bodies, read up to the body limit.
//!
//! Not `http_body_util::Limited`: past the limit this reads on and throws
//! away up to a cap, so that a client still sending gets the `413` answer
//! rather than a reset connection, which `Limited` cannot do (it stops at
//! the limit and gives the body up).

use std::pin::Pin;

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

use super::BoxError;
use crate::error::{ErrorCode, SyncError};

pub(super) async fn read_body<B>(
    body: B,
    max: usize,
    content_length: Option<u64>,
) -> Result<Bytes, SyncError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        SyncError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {max} bytes"),
        )
        .with_meta(serde_json::json!({ "max": max }))
    };
    let mut body = Box::pin(body);
    if content_length.is_some_and(|n| n > max as u64) {
        discard(body, drain_cap(max)).await;
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        // Errors are boxed at once: the body's own error type need not be Send.
        let next = body
            .frame()
            .await
            .map(|r| r.map_err(Into::<BoxError>::into));
        match next {
            None => return Ok(buf.freeze()),
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    if buf.len() + data.remaining() > max {
                        discard(body, drain_cap(max)).await;
                        return Err(too_large());
                    }
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        buf.extend_from_slice(chunk);
                        let n = chunk.len();
                        data.advance(n);
                    }
                }
            }
            Some(Err(e)) => {
                return Err(SyncError::new(
                    ErrorCode::MalformedJson,
                    format!("could not read the request body: {e}"),
                ));
            }
        }
    }
}

/// How much of an oversize body is read and thrown away so that the client,
/// still sending, gets the 413 answer instead of a reset connection. Bodies
/// larger than this are cut off.
fn drain_cap(max: usize) -> usize {
    max.saturating_mul(4).max(8 << 20)
}

/// Read and drop up to `cap` bytes of a body, never holding more than one frame.
async fn discard<B>(body: Pin<Box<B>>, cap: usize)
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let mut body = body;
    let mut seen = 0usize;
    while seen <= cap {
        let Some(Ok(frame)) = body.frame().await.map(|r| r.map_err(drop)) else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            seen += data.remaining();
        }
    }
}
