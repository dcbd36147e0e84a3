//! WebSocket on actix-web: actix-ws does the upgrade, the engine runs the session.

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use better_sync::BetterSync;
use better_sync::adapter::WsFrame;
use futures_util::{StreamExt, future, sink};

use crate::convert::to_actix;

pub(crate) async fn upgrade(
    sync: BetterSync,
    req: HttpRequest,
    head: http::Request<()>,
    payload: web::Payload,
) -> HttpResponse {
    let accept = match sync.prepare_websocket(&head).await {
        Ok(a) => a,
        Err(res) => return to_actix(res).await,
    };
    let (res, session, stream) = match actix_ws::handle(&req, payload) {
        Ok(x) => x,
        Err(e) => return e.error_response(),
    };
    let max = sync.limits().max_ws_message_bytes;
    let incoming = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max)
        .take_while(|m| future::ready(m.is_ok()))
        .filter_map(|m| {
            future::ready(match m {
                Ok(AggregatedMessage::Text(t)) => Some(WsFrame::Text(t.to_string())),
                Ok(AggregatedMessage::Binary(b)) => Some(WsFrame::Binary(b)),
                Ok(AggregatedMessage::Ping(p)) => Some(WsFrame::Ping(p)),
                Ok(AggregatedMessage::Pong(p)) => Some(WsFrame::Pong(p)),
                Ok(AggregatedMessage::Close(_)) => Some(WsFrame::Close),
                Err(_) => None,
            })
        });
    let outgoing = sink::unfold(Some(session), |session, frame: WsFrame| async move {
        let Some(mut s) = session else {
            return Err(actix_ws::Closed);
        };
        match frame {
            WsFrame::Text(t) => s.text(t).await.map(|()| Some(s)),
            WsFrame::Binary(b) => s.binary(b).await.map(|()| Some(s)),
            WsFrame::Ping(p) => s.ping(&p).await.map(|()| Some(s)),
            WsFrame::Pong(p) => s.pong(&p).await.map(|()| Some(s)),
            WsFrame::CloseWith { code, reason } => s
                .close(Some(actix_ws::CloseReason {
                    code: actix_ws::CloseCode::from(code),
                    description: Some(reason),
                }))
                .await
                .map(|()| None),
            _ => s.close(None).await.map(|()| None),
        }
    });
    // actix runs each worker on one thread; the session future is not Send.
    actix_web::rt::spawn(async move {
        sync.run_socket(accept, Box::pin(incoming), Box::pin(outgoing))
            .await;
    });
    res
}
