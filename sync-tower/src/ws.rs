//! WebSocket upgrade for `B/ws` over hyper 1.x (also under axum).

use better_sync::BetterSync;
use better_sync::adapter::{SyncBody, WsFrame};
use futures_util::{SinkExt, StreamExt, future};
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Socket buffers: small, since most connections are idle subscribers.
/// The read buffer is also zeroed up to this size on every read attempt
/// (tungstenite), and a subscriber's session polls for input each time it
/// sends a frame: client messages are small, so 512 bytes (a larger one
/// is read in several calls; each idle connection keeps this much).
const READ_BUFFER: usize = 1 << 9;
const WRITE_BUFFER: usize = 4 << 10;

/// Check the request, answer `101`, and run the session on the upgraded
/// connection in its own task.
pub(crate) async fn upgrade<B>(sync: BetterSync, mut req: Request<B>) -> Response<SyncBody>
where
    B: Send,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Keep only the head: the body type need not be Sync.
    let (parts, _body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let accept = match sync.prepare_websocket(&head).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let res = BetterSync::switching_protocols(&accept);
    let max = sync.limits().max_ws_message_bytes;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            // The server was not run `with_upgrades()`, or the client left.
            Err(_) => return,
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let (sink, stream) = ws.split();
        // A protocol error (oversize message, bad frame) ends the stream.
        let incoming = stream
            .take_while(|m| future::ready(m.is_ok()))
            .filter_map(|m| future::ready(m.ok().and_then(to_frame)));
        let outgoing = sink.with(|f: WsFrame| future::ready(Ok::<_, WsError>(to_message(f))));
        sync.run_socket(accept, incoming, Box::pin(outgoing)).await;
    });
    res
}

fn to_frame(m: Message) -> Option<WsFrame> {
    Some(match m {
        Message::Text(t) => WsFrame::Text(t.as_str().to_owned()),
        Message::Binary(b) => WsFrame::Binary(b),
        Message::Ping(p) => WsFrame::Ping(p),
        Message::Pong(p) => WsFrame::Pong(p),
        Message::Close(_) => WsFrame::Close,
        Message::Frame(_) => return None,
    })
}

fn to_message(f: WsFrame) -> Message {
    match f {
        WsFrame::Text(t) => Message::Text(t.into()),
        WsFrame::Binary(b) => Message::Binary(b),
        WsFrame::Ping(p) => Message::Ping(p),
        WsFrame::Pong(p) => Message::Pong(p),
        WsFrame::CloseWith { code, reason } => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
        _ => Message::Close(None),
    }
}
