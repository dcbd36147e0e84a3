//! The `Scope` (and `ServiceConfig` hook) serving every route under the base path.

use actix_web::{HttpRequest, HttpResponse, Scope, web};
use better_sync::adapter::{error_response, is_websocket_upgrade};
use better_sync::{BetterSync, ErrorCode, SyncError};

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
    let max = sync.limits().max_body_bytes;
    let body = match payload.to_bytes_limited(max).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return to_actix(error_response(&SyncError::new(
                ErrorCode::MalformedJson,
                format!("could not read the request body: {e}"),
            )))
            .await;
        }
        Err(_) => {
            return to_actix(error_response(
                &SyncError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body is larger than {max} bytes"),
                )
                .with_meta(serde_json::json!({ "max": max })),
            ))
            .await;
        }
    };
    let (parts, ()) = head.into_parts();
    let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
    to_actix(sync.handle(req).await).await
}
