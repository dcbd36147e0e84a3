//! Between actix-web's request/response types and `http` 1.x.

use actix_web::http::StatusCode as ActixStatus;
use actix_web::{HttpRequest, HttpResponse};
use better_sync::adapter::SyncBody;
use http_body_util::BodyExt;

/// The request head as `http` 1.x (actix-web uses its own header types).
pub(crate) fn to_http_head(req: &HttpRequest) -> http::Request<()> {
    let mut out = http::Request::new(());
    *out.method_mut() =
        http::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(http::Method::GET);
    *out.uri_mut() = req.uri().to_string().parse().unwrap_or_default();
    if let Some(peer) = req.peer_addr() {
        out.extensions_mut()
            .insert(better_sync::adapter::ClientAddr(peer.ip()));
    }
    let headers = out.headers_mut();
    for (name, value) in req.headers() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    out
}

/// An engine response as an actix-web response.
pub(crate) async fn to_actix(res: http::Response<SyncBody>) -> HttpResponse {
    let (parts, body) = res.into_parts();
    let status =
        ActixStatus::from_u16(parts.status.as_u16()).unwrap_or(ActixStatus::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        out.append_header((name.as_str(), value.as_bytes()));
    }
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    out.body(bytes)
}
