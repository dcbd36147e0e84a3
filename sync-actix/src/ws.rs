//! WebSocket on actix-web: the handshake and framing here, the session in
//! the engine.
//!
//! The frames are read and written here with actix-http's codec rather than
//! through actix-ws, because actix-ws cannot bound what a connection costs:
//! its reader buffers a whole frame before looking at the size its header
//! announced (a header announcing 2^40 bytes buffered gigabytes), and its
//! writer queues 32 messages of any size in front of a response body that
//! keeps the connection open after a session ends. Here:
//!
//! - a frame whose header announces more than `max_ws_message_bytes` (or
//!   fragments adding up to more) drops the connection before its payload
//!   is read;
//! - frames on their way out are held within a byte budget (a few pull
//!   pages); a peer that stops reading makes the engine's send wait, its
//!   send timeout end the session, and the connection drop with everything
//!   queued for it;
//! - a session that ends without a close handshake (a timeout, a bad frame)
//!   drops the connection rather than waiting to flush to a silent peer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, Message};
use actix_web::body::MessageBody;
use actix_web::{HttpRequest, HttpResponse, web};
use better_sync::BetterSync;
use better_sync::adapter::WsFrame;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, sink, stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::convert::to_actix;

/// Bytes of frames one connection may hold on their way out: two full pull
/// pages and some live frames. A frame larger than the budget takes all of
/// it (it waits until nothing else is queued).
fn outgoing_budget(max_pull_bytes: usize) -> usize {
    max_pull_bytes
        .saturating_mul(2)
        .saturating_add(64 << 10)
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
}

/// What the reader, the writer and the response body of one connection
/// share.
#[derive(Default)]
struct Connection {
    /// A close frame went out: the body may end normally.
    closed_cleanly: AtomicBool,
    /// The peer broke the protocol or a limit: drop the connection.
    aborted: AtomicBool,
}

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
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(r) => r,
        Err(e) => return HttpResponse::from_error(e),
    };
    let limits = sync.limits();
    let budget = outgoing_budget(limits.max_pull_bytes);
    let connection = Arc::new(Connection::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = Writer {
        codec: Codec::new(),
        tx,
        permits: Arc::new(Semaphore::new(budget)),
        budget,
        connection: connection.clone(),
    };
    let outgoing = sink::unfold(writer, |mut w, frame: WsFrame| async move {
        w.send(frame).await?;
        Ok::<_, io::Error>(w)
    });
    let incoming = incoming(
        payload.into_inner(),
        limits.max_ws_message_bytes,
        connection.clone(),
    );
    // actix runs each worker on one thread; the session future is not Send.
    actix_web::rt::spawn(async move {
        sync.run_socket(accept, Box::pin(incoming), Box::pin(outgoing))
            .await;
    });
    let body = OutgoingBody {
        rx,
        connection,
        ended: false,
    };
    match response.message_body(actix_http::body::BodyStream::new(body).boxed()) {
        Ok(res) => res.into(),
        Err(e) => HttpResponse::from_error(e),
    }
}

/// The engine's side of the outgoing frames: encodes them and queues them
/// within the byte budget.
struct Writer {
    codec: Codec,
    tx: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
    budget: usize,
    connection: Arc<Connection>,
}

impl Writer {
    async fn send(&mut self, frame: WsFrame) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "websocket connection closed");
        if self.connection.closed_cleanly.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let (message, closing) = match frame {
            WsFrame::Text(t) => (Message::Text(t.into()), false),
            WsFrame::Binary(b) => (Message::Binary(b), false),
            WsFrame::Ping(p) => (Message::Ping(p), false),
            WsFrame::Pong(p) => (Message::Pong(p), false),
            WsFrame::CloseWith { code, reason } => (
                Message::Close(Some(CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason),
                })),
                true,
            ),
            _ => (Message::Close(None), true),
        };
        let mut buf = BytesMut::new();
        self.codec
            .encode(message, &mut buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let bytes = buf.freeze();
        // Waits while the peer is behind: the engine's send timeout bounds
        // the wait and ends the session.
        let need = bytes.len().clamp(1, self.budget) as u32;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| gone())?;
        self.tx.send((bytes, permit)).map_err(|_| gone())?;
        if closing {
            self.connection.closed_cleanly.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// The response body: the queued frames, handed to actix as it can write
/// them (it asks for more only while its write buffer is small).
struct OutgoingBody {
    rx: mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>,
    connection: Arc<Connection>,
    ended: bool,
}

impl Stream for OutgoingBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            // The permit goes with the frame into actix's write buffer.
            Poll::Ready(Some((bytes, _permit))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(None) => {
                self.ended = true;
                let c = &self.connection;
                if c.closed_cleanly.load(Ordering::SeqCst) && !c.aborted.load(Ordering::SeqCst) {
                    Poll::Ready(None)
                } else {
                    // An error drops the connection at once, with whatever
                    // actix still holds for a peer that stopped reading.
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "websocket session ended without a close handshake",
                    ))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The size a frame's header announces, once the header's length bytes
/// have arrived (RFC 6455 section 5.2).
fn announced_len(buf: &[u8]) -> Option<u64> {
    let second = *buf.get(1)?;
    match second & 0x7f {
        126 => buf
            .get(2..4)
            .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf
            .get(2..10)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes),
        n => Some(u64::from(n)),
    }
}

struct Reader {
    payload: actix_web::dev::Payload,
    buf: BytesMut,
    codec: Codec,
    max: usize,
    /// A fragmented message being put together: text or not, and its bytes.
    partial: Option<(bool, BytesMut)>,
    connection: Arc<Connection>,
}

impl Reader {
    /// The next whole message, or `None` when the peer is gone or broke a
    /// rule (then the connection is marked to drop).
    async fn next_frame(&mut self) -> Option<WsFrame> {
        match self.next_message().await {
            Ok(message) => message,
            Err(()) => {
                self.connection.aborted.store(true, Ordering::SeqCst);
                None
            }
        }
    }

    async fn next_message(&mut self) -> Result<Option<WsFrame>, ()> {
        loop {
            // Refuse an oversize frame on its header, before its payload.
            if announced_len(&self.buf).is_some_and(|n| n > self.max as u64) {
                return Err(());
            }
            match self.codec.decode(&mut self.buf).map_err(|_| ())? {
                Some(frame) => {
                    if let Some(message) = self.assemble(frame)? {
                        return Ok(Some(message));
                    }
                }
                None => match self.payload.next().await {
                    Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                    Some(Err(_)) | None => return Ok(None),
                },
            }
        }
    }

    /// A frame as a message, joining fragments within the size limit; a
    /// protocol error (a data frame inside a fragmented message, a
    /// continuation without a start, text that is not UTF-8) is `Err`.
    fn assemble(&mut self, frame: Frame) -> Result<Option<WsFrame>, ()> {
        let text = |bytes: Bytes| String::from_utf8(bytes.to_vec()).map_err(|_| ());
        let data_allowed = self.partial.is_none();
        Ok(match frame {
            Frame::Text(b) if data_allowed => Some(WsFrame::Text(text(b)?)),
            Frame::Binary(b) if data_allowed => Some(WsFrame::Binary(b)),
            Frame::Text(_) | Frame::Binary(_) => return Err(()),
            Frame::Ping(p) => Some(WsFrame::Ping(p)),
            Frame::Pong(p) => Some(WsFrame::Pong(p)),
            Frame::Close(_) => Some(WsFrame::Close),
            Frame::Continuation(Item::FirstText(b)) if data_allowed => {
                self.partial = Some((true, BytesMut::from(&b[..])));
                None
            }
            Frame::Continuation(Item::FirstBinary(b)) if data_allowed => {
                self.partial = Some((false, BytesMut::from(&b[..])));
                None
            }
            Frame::Continuation(Item::FirstText(_) | Item::FirstBinary(_)) => return Err(()),
            Frame::Continuation(Item::Continue(b) | Item::Last(b))
                if self
                    .partial
                    .as_ref()
                    .is_some_and(|(_, acc)| acc.len() + b.len() > self.max) =>
            {
                return Err(());
            }
            Frame::Continuation(Item::Continue(b)) => {
                let (_, acc) = self.partial.as_mut().ok_or(())?;
                acc.extend_from_slice(&b);
                None
            }
            Frame::Continuation(Item::Last(b)) => {
                let (is_text, mut acc) = self.partial.take().ok_or(())?;
                acc.extend_from_slice(&b);
                let whole = acc.freeze();
                Some(if is_text {
                    WsFrame::Text(text(whole)?)
                } else {
                    WsFrame::Binary(whole)
                })
            }
        })
    }
}

fn incoming(
    payload: actix_web::dev::Payload,
    max: usize,
    connection: Arc<Connection>,
) -> impl Stream<Item = WsFrame> {
    let reader = Reader {
        payload,
        buf: BytesMut::new(),
        codec: Codec::new().max_size(max),
        max,
        partial: None,
        connection,
    };
    stream::unfold(reader, |mut r| async move {
        let frame = r.next_frame().await?;
        Some((frame, r))
    })
}
