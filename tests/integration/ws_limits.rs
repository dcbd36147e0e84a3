//! Hostile WebSocket peers, the same checks against every adapter (axum,
//! hyper, actix): a frame header announcing more than the message limit, a
//! fragmented message adding up to more, a subscriber that stops reading,
//! and subscribers that never read a long catch-up.

use crate::common;

use std::time::Duration;

use better_sync::Limits;
use common::{Adapter, TestDb, TestServer, change, ws_connect, ws_next, ws_send};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upgraded connection, spoken to in raw frames.
async fn raw_ws(server: &TestServer, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let req = format!(
        "GET /api/sync/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A client frame header (masked with a zero key, which leaves the payload
/// as it is).
fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=65535 => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Whether the server ends the connection within `secs`: EOF, a reset, or
/// a close frame, read while draining whatever else it sends.
async fn ends_within(s: &mut TcpStream, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(n)) if buf[..n].contains(&0x88) && n < 200 => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn limits() -> Limits {
    Limits {
        max_pull_bytes: 256 << 10,
        ..Limits::default()
    }
}

async fn server(adapter: Adapter, db: &TestDb) -> TestServer {
    let sync = common::builder(&db.db)
        .limits(limits())
        .heartbeat(Duration::from_secs(1))
        .heartbeat_timeout(Duration::from_secs(2))
        .build()
        .expect("build");
    TestServer::start_with(adapter, sync).await
}

/// A header announcing 2^40 bytes: the connection ends before the peer
/// manages to send 16 MiB of it (nothing buffers the frame whole).
async fn an_oversize_frame_header_ends_the_connection(adapter: Adapter) {
    let db = TestDb::new(common::Backend::Sqlite).await;
    let server = server(adapter, &db).await;
    let token = server.client("ann", "acme").token;
    let mut s = raw_ws(&server, &token).await;
    s.write_all(&header(true, 0x1, 1 << 40))
        .await
        .expect("header");
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    let refused = loop {
        if sent >= 16 << 20 {
            break false;
        }
        match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            // A reset, or a peer that stopped reading and closed.
            Ok(Err(_)) => break true,
            Err(_) => break ends_within(&mut s, 5).await,
        }
    };
    assert!(
        refused,
        "{adapter:?}: {sent} bytes of an oversize frame were taken"
    );
}

/// Fragments adding up to more than the message limit end the connection.
async fn oversize_fragments_end_the_connection(adapter: Adapter) {
    let db = TestDb::new(common::Backend::Sqlite).await;
    let server = server(adapter, &db).await;
    let token = server.client("ann", "acme").token;
    let mut s = raw_ws(&server, &token).await;
    let max = server.sync.limits().max_ws_message_bytes;
    let part = vec![b' '; max / 2 + 1];
    let mut frames = header(false, 0x1, part.len() as u64);
    frames.extend_from_slice(&part);
    for _ in 0..3 {
        frames.extend_from_slice(&header(false, 0x0, part.len() as u64));
        frames.extend_from_slice(&part);
    }
    // The server may drop the connection while this is still being sent.
    let _ = s.write_all(&frames).await;
    assert!(
        ends_within(&mut s, 10).await,
        "{adapter:?}: the connection stayed open"
    );
}

/// A subscriber that stops reading is dropped at the send timeout with what
/// was queued for it: when it reads again it finds the end of the
/// connection, not everything pushed meanwhile.
async fn a_subscriber_that_stops_reading_is_dropped(adapter: Adapter) {
    let db = TestDb::new(common::Backend::Sqlite).await;
    let server = server(adapter, &db).await;
    let a = server.client("ann", "acme");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/api/sync/ws", server.addr),
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", a.token).parse().expect("header"),
    );
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("ws");
    common::ws_subscribe(&mut ws, None).await;
    // It stops reading; 24 MiB of changes are pushed.
    let big = "x".repeat(100 << 10);
    let pushes = 240;
    for i in 0..pushes {
        let r = a
            .push(json!([change(
                &format!("p{i}"),
                "todo",
                &format!("r{i}"),
                "insert",
                json!({"big": big}),
                "2026-11-25T10:00:00.000Z",
                "d"
            )]))
            .await;
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Reading again: whatever the kernel still holds, then the end of the
    // connection; not a connection kept open (a read that times out).
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut got = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => break false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break true,
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: serde_json::Value = serde_json::from_str(&t).expect("json");
                got += m["changes"].as_array().map_or(0, Vec::len);
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(
        ended,
        "{adapter:?}: the connection was kept open after the send timeout"
    );
    assert!(
        got < pushes,
        "{adapter:?}: all {got} changes came out: the queue was kept for a peer that stopped reading"
    );
}

/// Eight subscribers that never read, from the start of a 24 MiB log: the
/// server's memory grows by a bounded amount per connection, not by the
/// log. The server runs in a process of its own, so that its memory is its
/// own (other tests share this one).
async fn catch_up_is_bounded_per_connection(adapter: Adapter) {
    let db = TestDb::new(common::Backend::Sqlite).await;
    let name = match adapter {
        Adapter::Axum => "axum",
        Adapter::Hyper => "hyper",
        Adapter::Actix => "actix",
    };
    let (mut child, addr) = common::spawn_child_server_with(
        &db.url,
        &[
            ("BS_CHILD_ADAPTER", name),
            ("BS_CHILD_SMALL_PAGES", "1"),
            // glibc keeps an arena per thread that touched the heap and
            // returns little of it: two keep the RSS about what the
            // connections hold rather than how many threads served them.
            ("MALLOC_ARENA_MAX", "2"),
        ],
    );
    let a = common::Client {
        http: reqwest::Client::new(),
        base: format!("http://{addr}/api/sync"),
        token: better_sync::testing::dev_token(common::SECRET, "ann", "acme", 3600),
    };
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let big = "y".repeat(100 << 10);
    for i in 0..240 {
        let r = a
            .push(json!([change(
                &format!("c{i}"),
                "todo",
                &format!("r{i}"),
                "insert",
                json!({"big": big}),
                "2026-11-25T10:00:00.000Z",
                "d"
            )]))
            .await;
        assert_eq!(r.status, 200);
    }
    // Warm the server up first (its database pages and pools, the live
    // fan-out): two subscribers read the whole catch-up.
    for _ in 0..2 {
        let mut ws = ws_connect(addr, &a.token).await;
        let (changes, _) = common::ws_subscribe(&mut ws, None).await;
        assert_eq!(changes.len(), 240);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_of(child.id());
    assert!(
        before > 0,
        "the server's anonymous memory could not be read"
    );
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let mut ws = ws_connect(addr, &a.token).await;
        ws_send(&mut ws, json!({"type": "subscribe"})).await;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_of(child.id()).saturating_sub(before);
    eprintln!(
        "{adapter:?}: RSS grew {} KiB for 8 non-reading subscribers",
        grown >> 10
    );
    // Kernel buffers aside, each connection holds at most its outgoing
    // budget (two pull pages), a page being read and its frame: 1 to 3 MiB
    // here (measured 0 to 32 MiB for the eight, depending on how many
    // catch-ups are in flight at once), where actix-ws queued 32 frames of a
    // page each, 8 MiB a connection, on top.
    let result = (grown < 48 << 20).then_some(()).ok_or(grown);
    // And they still work once they read.
    let mut first = sockets.remove(0);
    let works = ws_next(&mut first, 10).await.is_some();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        result.is_ok(),
        "{adapter:?}: RSS grew {} MiB for 8 non-reading subscribers",
        grown >> 20
    );
    assert!(
        works,
        "{adapter:?}: a subscriber that reads again gets its catch-up"
    );
}

/// The process's anonymous resident memory (its heap and stacks): the
/// SQLite readers map the database file, and the file's pages they touch
/// count in `VmRSS` too (`RssFile`), once per reader, though they are the
/// kernel's page cache rather than memory the connections hold.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

macro_rules! per_adapter {
    ($($name:ident),* $(,)?) => {
        mod axum {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Adapter::Axum).await } )*
        }
        mod hyper {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Adapter::Hyper).await } )*
        }
        mod actix {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Adapter::Actix).await } )*
        }
    };
}

per_adapter!(
    an_oversize_frame_header_ends_the_connection,
    oversize_fragments_end_the_connection,
    a_subscriber_that_stops_reading_is_dropped,
    catch_up_is_bounded_per_connection,
);
