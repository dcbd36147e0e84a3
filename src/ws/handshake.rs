//! The WebSocket handshake: route, method, upgrade headers, rate limits
//! and credentials, checked before the adapter upgrades.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::{WsAccept, accept_key, is_websocket_upgrade};
use crate::auth::AuthRequest;
use crate::engine::Engine;
use crate::error::{ErrorCode, SyncError};
use crate::http::routes::{RouteKind, route_of};
use crate::http::{HttpConfig, SyncBody, error_response, upgrade_required};

/// Check a WebSocket request on `B/ws`: route, method, upgrade headers
/// and credentials. On failure the answer to send instead.
pub(crate) async fn prepare<B>(
    engine: &Engine,
    http: &HttpConfig,
    req: &Request<B>,
) -> Result<WsAccept, Response<SyncBody>> {
    let path = req.uri().path();
    if route_of(&http.base_path, path, &Method::GET).map(|r| r.kind) != Some(RouteKind::WebSocket) {
        return Err(error_response(&SyncError::new(
            ErrorCode::NotFound,
            format!("no WebSocket route at {path}"),
        )));
    }
    if req.method() != Method::GET {
        return Err(error_response(&SyncError::new(
            ErrorCode::MethodNotAllowed,
            "the WebSocket route takes GET",
        )));
    }
    if engine.lifecycle.is_draining() {
        return Err(error_response(
            &SyncError::new(
                ErrorCode::Unavailable,
                "the server is shutting down; connect to another instance",
            )
            .with_retry_after_ms(1000),
        ));
    }
    let headers = req.headers();
    if !is_websocket_upgrade(headers) {
        return Err(upgrade_required("not a WebSocket upgrade request"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(upgrade_required("unsupported WebSocket version"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(upgrade_required("missing Sec-WebSocket-Key"));
    };
    let accept_key = accept_key(key.as_bytes());
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.headers_mut() = headers.clone();
    if let Some(addr) = req.extensions().get::<crate::http::ratelimit::ClientAddr>() {
        head.extensions_mut().insert(*addr);
    }
    let (parts, ()) = head.into_parts();
    http.rate_check(&parts, None)
        .map_err(|e| error_response(&e))?;
    engine
        .admit_versions(&parts.headers, parts.uri.query())
        .map_err(|e| error_response(&e))?;
    // A ticket from `POST B/ws/ticket` stands for the credentials it was
    // issued against, once.
    let ticket = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(ticket) = ticket {
        let (ctx, expires_at) = engine.tickets.redeem(&ticket).ok_or_else(|| {
            error_response(&SyncError::unauthorized(
                "unknown, used or expired ticket: ask POST ws/ticket for a new one",
            ))
        })?;
        http.rate_check(&parts, Some(&ctx))
            .map_err(|e| error_response(&e))?;
        return Ok(WsAccept {
            ctx,
            accept_key,
            expires_at,
        });
    }
    // A panicking hook is a 500 for this handshake, as on every route.
    let auth = AssertUnwindSafe(engine.authorize_until(AuthRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        identity: None,
    }))
    .catch_unwind()
    .await
    .map_err(|_| {
        error_response(&SyncError::internal(
            "the server failed while checking this request",
        ))
    })?;
    let (ctx, expires_at) = auth.map_err(|e| error_response(&e))?;
    http.rate_check(&parts, Some(&ctx))
        .map_err(|e| error_response(&e))?;
    Ok(WsAccept {
        ctx,
        accept_key,
        expires_at,
    })
}

/// The `101 Switching Protocols` answer for an accepted request.
pub(crate) fn switching_protocols(accept: &WsAccept) -> Response<SyncBody> {
    let mut res = Response::new(SyncBody::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept.accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}
