//! Answers: JSON bodies, errors with their headers, static assets.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use super::{SyncBody, client_assets};
use crate::error::{ErrorCode, SyncError};

/// A static asset with a content hash as `ETag`; `If-None-Match` gets a 304.
pub(super) fn asset<B>(
    req: &Request<B>,
    body: &'static str,
    content_type: &'static str,
) -> Response<SyncBody> {
    let etag = client_assets::etag(body);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

pub(super) fn empty(status: StatusCode) -> Response<SyncBody> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<SyncBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = Response::new(Full::new(Bytes::from(bytes)));
            *res.status_mut() = status;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The response for an error: status, `SYNC:*` JSON body and the headers the
/// code calls for.
pub fn error_response(err: &SyncError) -> Response<SyncBody> {
    let mut res = json(err.status(), &err.to_json());
    let h = res.headers_mut();
    if err.code() == ErrorCode::Unauthorized {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(ms) = err.retry_after_ms() {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    res
}

pub(super) fn not_found(path: &str) -> SyncError {
    SyncError::new(ErrorCode::NotFound, format!("no sync route at {path}"))
}

pub(super) fn set_allow(res: &mut Response<SyncBody>, methods: &[Method]) {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .chain(["OPTIONS"])
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(header::ALLOW, v);
    }
}

/// The answer of `B/ws` to a request that cannot upgrade.
pub(crate) fn upgrade_required(why: &str) -> Response<SyncBody> {
    let mut res = error_response(&SyncError::new(
        ErrorCode::UpgradeRequired,
        format!(
            "{why}: connect with a WebSocket client (Upgrade: websocket, Sec-WebSocket-Version: 13)"
        ),
    ));
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    res.headers_mut().insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    res
}
