//! The `Scope` (and `ServiceConfig` hook) serving every route under the base path.

use actix_web::{HttpRequest, HttpResponse, Scope, web};
use better_sync::BetterSync;
use better_sync::adapter::is_websocket_upgrade;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::channel::Channel;

use crate::convert::{to_actix, to_http_head};

/// A `Scope` at the engine's base path serving the whole protocol.
///
/// ```no_run
/// # fn f(sync: better_sync::BetterSync) {
/// let app = actix_web::App::new().service(better_sync_actix::sync_scope(sync));
/// # }
/// ```
pub fn sync_scope(sync: BetterSync) -> Scope {
    web::scope(sync.base_path())
        .app_data(web::Data::new(sync))
        .default_service(web::to(handle))
}

/// Mount the scope through `App::configure`.
pub fn configure(sync: BetterSync) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(sync_scope(sync));
    }
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    sync: web::Data<BetterSync>,
) -> HttpResponse {
    let head = to_http_head(&req);
    if is_websocket_upgrade(head.headers()) {
        return crate::ws::upgrade(sync.get_ref().clone(), req, head, payload).await;
    }
    // The body streams into the engine, which applies its own limit and
    // errors (the same as under every adapter): the actix payload is not
    // `Send`, so it is pumped into a channel body beside the handler.
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
    let mut payload = payload;
    let pump = async move {
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(bytes) => {
                    // The engine stopped reading (an answer is ready).
                    if tx.send_data(bytes).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tx.abort(std::io::Error::other(e.to_string()));
                    return;
                }
            }
        }
    };
    let (parts, ()) = head.into_parts();
    let req = http::Request::from_parts(parts, body);
    let (res, ()) = futures_util::future::join(sync.handle(req), pump).await;
    to_actix(res).await
}
