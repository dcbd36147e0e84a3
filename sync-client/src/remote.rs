//! One server's protocol over HTTP and WebSocket: metadata, push, pull,
//! snapshot and live subscriptions, with credentials and the `401` refresh.
//!
//! [`crate::SyncClient`] drives it; it is public for tools (the CLI) and apps
//! that want the raw protocol without a local store.

use std::sync::Arc;
use std::time::Duration;

use better_sync_core::protocol::{
    Change, PullResponse, PulledChange, PushRequest, PushResponse, SnapshotResponse, SnapshotRow,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::auth::{Auth, AuthState};
use crate::error::ClientError;

/// How long a request may take beyond its long-poll wait (a 4 MiB pull page
/// must fit in it on a slow link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's `sync.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Metadata {
    /// Wire protocol version (1).
    pub protocol_version: u32,
    /// The base path the server mounts the protocol under.
    #[serde(default)]
    pub base_path: String,
    /// Capabilities (`snapshot`, `websocket`, `long-poll`, ...).
    #[serde(default)]
    pub features: Vec<String>,
    /// WebSocket ping interval, seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: f64,
    /// Registered models, `None` when the server accepts any model name.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// The server's limits.
    #[serde(default)]
    pub limits: ServerLimits,
}

fn default_heartbeat() -> f64 {
    30.0
}

impl Metadata {
    /// Whether the server announces a feature.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// The limits announced in `sync.json` (absent ones take the server defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Largest push body, bytes.
    pub max_body_bytes: usize,
    /// Most changes per push.
    pub max_batch: usize,
    /// Largest payload of one change, bytes of compact JSON.
    pub max_payload_bytes: usize,
    /// Longest long-poll wait, seconds.
    pub max_wait_secs: f64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_048_576,
            max_batch: 1000,
            max_payload_bytes: 262_144,
            max_wait_secs: 60.0,
        }
    }
}

/// A connection to one server's sync routes.
///
/// ```no_run
/// # async fn run() -> Result<(), better_sync_client::ClientError> {
/// use better_sync_client::{Auth, Remote};
/// let remote = Remote::new("http://127.0.0.1:3000", "/api/sync", Auth::bearer("token"))?;
/// let page = remote.pull(None, Some(100), None).await?;
/// println!("{} changes, next cursor {}", page.changes.len(), page.cursor);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    base: String,
    auth: Arc<AuthState>,
    /// `X-Sync-Versions`: the model versions this app was built for.
    versions: Option<http::HeaderValue>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("base", &self.base).finish()
    }
}

impl Remote {
    /// Routes under `base_url` + `base_path` (e.g. `http://127.0.0.1:3000`
    /// and `/api/sync`).
    pub fn new(base_url: &str, base_path: &str, auth: Auth) -> Result<Self, ClientError> {
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::config(format!(
                "base URL {base_url:?} must start with http:// or https://"
            )));
        }
        let path = base_path.trim_end_matches('/');
        if !path.is_empty() && !path.starts_with('/') {
            return Err(ClientError::config(format!(
                "base path {base_path:?} must start with /"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(ClientError::config)?;
        Ok(Self {
            http,
            base: format!("{base_url}{path}"),
            auth: Arc::new(AuthState::new(auth)),
            versions: None,
        })
    }

    /// Announce these model versions with every request (see
    /// [`crate::ClientBuilder::model_versions`]).
    pub fn with_model_versions(mut self, versions: &[(String, u32)]) -> Result<Self, ClientError> {
        if versions.is_empty() {
            self.versions = None;
            return Ok(self);
        }
        if let Some((m, _)) = versions
            .iter()
            .find(|(m, v)| *v == 0 || !better_sync_core::protocol::is_valid_model_name(m))
        {
            return Err(ClientError::config(format!(
                "model version of {m:?}: a model name and a version of 1 or more"
            )));
        }
        let text = versions
            .iter()
            .map(|(m, v)| format!("{m}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        self.versions = Some(http::HeaderValue::from_str(&text).map_err(ClientError::config)?);
        Ok(self)
    }

    /// The full URL of a route, e.g. `url("pull")`.
    pub fn url(&self, route: &str) -> String {
        format!("{}/{route}", self.base)
    }

    /// How many token refreshes ran (for tests and metrics).
    pub fn token_refreshes(&self) -> u64 {
        self.auth.refreshes()
    }

    /// `GET B/sync.json`.
    pub async fn metadata(&self) -> Result<Metadata, ClientError> {
        let response = self
            .http
            .get(self.url("sync.json"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(network)?;
        let meta: Metadata = decode(response).await?;
        if meta.protocol_version != better_sync_core::PROTOCOL_VERSION {
            return Err(ClientError::bad_response(format!(
                "server speaks protocol {}, this client {}",
                meta.protocol_version,
                better_sync_core::PROTOCOL_VERSION
            )));
        }
        Ok(meta)
    }

    /// `POST B/push`: one batch, all or nothing.
    pub async fn push(
        &self,
        client_id: &str,
        changes: &[Change],
    ) -> Result<PushResponse, ClientError> {
        let body = serde_json::to_vec(&PushRequest {
            client_id: client_id.to_owned(),
            changes: changes.to_vec(),
        })
        .map_err(ClientError::bad_response)?;
        let response: PushResponse = self
            .send(|http| {
                http.post(self.url("push"))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        if response.results.len() != changes.len() {
            return Err(ClientError::bad_response(format!(
                "push answered {} results for {} changes",
                response.results.len(),
                changes.len()
            )));
        }
        Ok(response)
    }

    /// `GET B/pull`: the changes after `cursor` (`None` = from the start).
    /// With `wait`, the server holds the request until a change arrives or
    /// the wait ends (long-poll).
    pub async fn pull(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
        wait: Option<Duration>,
    ) -> Result<PullResponse, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(w) = wait {
            query.push(("wait", format!("{:.3}", w.as_secs_f64())));
        }
        let timeout = REQUEST_TIMEOUT + wait.unwrap_or_default();
        self.send(|http| http.get(self.url("pull")).query(&query).timeout(timeout))
            .await
    }

    /// `GET B/snapshot`: one page of a model's current rows.
    pub async fn snapshot(
        &self,
        model: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SnapshotResponse, ClientError> {
        self.snapshot_page(vec![("model", model.to_owned())], after, limit)
            .await
    }

    /// `GET B/snapshot?shape=..&params=..`: one page of a shape's rows
    /// (PROTOCOL.md 16.2). `params` is the JSON object of the shape's
    /// parameters (`Value::Null` when it declares none).
    pub async fn snapshot_shape(
        &self,
        shape: &str,
        params: &Value,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SnapshotResponse, ClientError> {
        let mut query: Vec<(&str, String)> = vec![("shape", shape.to_owned())];
        if !params.is_null() {
            query.push(("params", params.to_string()));
        }
        self.snapshot_page(query, after, limit).await
    }

    /// `GET B/snapshot` with `query` (what to read) and the page's place.
    async fn snapshot_page(
        &self,
        mut query: Vec<(&str, String)>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SnapshotResponse, ClientError> {
        if let Some(a) = after {
            query.push(("after", a.to_owned()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.send(|http| {
            http.get(self.url("snapshot"))
                .query(&query)
                .timeout(REQUEST_TIMEOUT)
        })
        .await
    }

    /// `GET B/pull?shape=..&params=..&cursor=..`: what changed in a shape
    /// after `cursor` (PROTOCOL.md 16.5), long-polled with `wait`.
    pub async fn pull_shape(
        &self,
        shape: &str,
        params: &Value,
        cursor: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<ShapePage, ClientError> {
        let mut query: Vec<(&str, String)> = vec![("shape", shape.to_owned())];
        if !params.is_null() {
            query.push(("params", params.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        if let Some(w) = wait {
            query.push(("wait", format!("{:.3}", w.as_secs_f64())));
        }
        let timeout = REQUEST_TIMEOUT + wait.unwrap_or_default();
        self.send(|http| http.get(self.url("pull")).query(&query).timeout(timeout))
            .await
    }

    /// Open `B/ws` and subscribe from `cursor` to `models` (`None` = all).
    pub async fn subscribe(
        &self,
        cursor: Option<&str>,
        models: Option<&[String]>,
    ) -> Result<Subscription, ClientError> {
        let mut sub = self.open_live().await?;
        sub.subscribe(None, cursor, models).await?;
        Ok(sub)
    }

    /// Open `B/ws` without subscribing to anything yet: send
    /// [`Subscription::subscribe`] and [`Subscription::subscribe_shape`]
    /// on it (several subscriptions share one connection).
    pub async fn open_live(&self) -> Result<Subscription, ClientError> {
        let url = self.url("ws");
        let url = if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url
        };
        let mut retried = false;
        let socket = loop {
            let (headers, generation) = self.auth.headers().await?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(ClientError::config)?;
            request.headers_mut().extend(headers);
            if let Some(v) = &self.versions {
                request.headers_mut().insert(VERSIONS_HEADER, v.clone());
            }
            // tungstenite zeroes its read buffer on every read; the 128 KiB
            // default costs more than the frames it reads. `true`: no Nagle
            // delay on our small frames (pongs, subscribe).
            let config = WebSocketConfig::default().read_buffer_size(16 << 10);
            let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
            match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
                Err(_) => return Err(ClientError::network("WebSocket handshake timed out")),
                Ok(Ok((socket, _))) => break socket,
                Ok(Err(tungstenite::Error::Http(response))) => {
                    let status = response.status().as_u16();
                    let body = response.body().clone().unwrap_or_default();
                    let error = error_from_body(status, None, &body);
                    if status == 401 && !retried && self.auth.refresh_after(generation).await? {
                        retried = true;
                        continue;
                    }
                    return Err(error);
                }
                Ok(Err(e)) => return Err(ClientError::network(format!("WebSocket: {e}"))),
            }
        };
        Ok(Subscription { socket })
    }

    /// Send a request with the auth headers; on `401`, refresh (once for
    /// all concurrent requests) and retry once.
    async fn send<T, F>(&self, build: F) -> Result<T, ClientError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut retried = false;
        loop {
            let (mut headers, generation) = self.auth.headers().await?;
            if let Some(v) = &self.versions {
                headers.insert(VERSIONS_HEADER, v.clone());
            }
            let response = build(&self.http)
                .headers(headers)
                .send()
                .await
                .map_err(network)?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                let error = error_of(response).await;
                if self.auth.refresh_after(generation).await? {
                    retried = true;
                    continue;
                }
                return Err(error);
            }
            return decode(response).await;
        }
    }
}

/// The header model versions are announced in.
const VERSIONS_HEADER: &str = "x-sync-versions";

fn network(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::network(format!("request timed out: {e}"))
    } else {
        ClientError::network(e)
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    if !response.status().is_success() {
        return Err(error_of(response).await);
    }
    let body = response.bytes().await.map_err(network)?;
    serde_json::from_slice(&body).map_err(|e| ClientError::bad_response(format!("answer: {e}")))
}

async fn error_of(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match response.bytes().await {
        Ok(body) => error_from_body(status, retry_after, &body),
        Err(e) => network(e).with_status(status),
    }
}

/// The `SYNC:*` error of an error answer (section 10 of the protocol).
fn error_from_body(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| Some((e.get("code")?.as_str()?, e.get("message")?.as_str()?)));
    let Some((code, message)) = error else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let code = if status >= 500 {
            crate::error::codes::NETWORK
        } else {
            crate::error::codes::BAD_RESPONSE
        };
        return ClientError::new(code, format!("HTTP {status}: {text}"))
            .with_status(status)
            .with_retry_after(retry_after);
    };
    let meta = parsed.as_ref().and_then(|v| v.get("meta")).cloned();
    let retry_after = meta
        .as_ref()
        .and_then(|m| m.get("retryAfterMs"))
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .or(retry_after);
    let mut error = ClientError::new(code, message)
        .with_status(status)
        .with_retry_after(retry_after);
    if let Some(meta) = meta {
        error = error.with_meta(meta);
    }
    error
}

/// A page of a shape pull (`GET B/pull?shape=..`, PROTOCOL.md 16.5).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ShapePage {
    /// The shape's model.
    pub model: String,
    /// Rows the page's commits touched that are in the shape now, whole.
    #[serde(default)]
    pub rows: Vec<SnapshotRow>,
    /// Rows the page's commits touched that are not in the shape: drop
    /// them if held.
    #[serde(default)]
    pub retracts: Vec<String>,
    /// Memberships moved: bootstrap the shape again from its snapshot.
    #[serde(default)]
    pub reset: bool,
    /// The position after this page.
    pub cursor: String,
    /// More changes follow at once.
    #[serde(default)]
    pub has_more: bool,
}

/// A message of a live subscription.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LiveMessage {
    /// The next changes after the previous message; store `cursor`.
    Changes {
        /// The changes, ascending `seq`.
        changes: Vec<PulledChange>,
        /// The position after them.
        cursor: String,
    },
    /// Caught up: every change up to `cursor` was sent; live changes follow.
    Synced {
        /// The position.
        cursor: String,
    },
    /// A ping of the server (answered) or a pong: the link is alive.
    Heartbeat,
    /// Rows of a shape subscription (PROTOCOL.md 16.3): join `rows` like
    /// snapshot rows, drop the `retracts` unless another subscription
    /// holds them. `reset` starts the shape's rows again: rows it held
    /// and is not sent again before its `SubscriptionSynced` go.
    Rows {
        /// The subscription's id.
        id: String,
        /// The shape's model.
        model: String,
        /// Rows in the shape, whole with their stamps.
        rows: Vec<SnapshotRow>,
        /// Ids of held rows that left the shape.
        retracts: Vec<String>,
        /// The first message of the shape's rows.
        reset: bool,
        /// The position of the log they were read at.
        cursor: String,
    },
    /// A subscription with an id caught up (for a shape: every row of
    /// its reset was sent).
    SubscriptionSynced {
        /// The subscription's id.
        id: String,
        /// The position.
        cursor: String,
    },
    /// The server refused one subscription (an unknown shape, bad
    /// parameters); the connection and the other subscriptions go on.
    SubscriptionError {
        /// The subscription's id.
        id: String,
        /// What the server said.
        error: ClientError,
    },
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket subscription opened by [`Remote::subscribe`].
pub struct Subscription {
    socket: Socket,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next protocol message. `Ok(None)` when the server closed the
    /// connection; an `error` message of the server is an `Err` with its code.
    /// Pings are answered, and reported as [`LiveMessage::Heartbeat`] so that
    /// a caller can tell a quiet link from a dead one.
    pub async fn next(&mut self) -> Result<Option<LiveMessage>, ClientError> {
        loop {
            let frame = match self.socket.next().await {
                None => return Ok(None),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(None),
                Some(Err(e)) => return Err(ClientError::network(format!("WebSocket: {e}"))),
                Some(Ok(frame)) => frame,
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(_) => {
                    // tungstenite queues the pong; flushing sends it now.
                    self.socket
                        .flush()
                        .await
                        .map_err(|e| ClientError::network(format!("WebSocket: {e}")))?;
                    return Ok(Some(LiveMessage::Heartbeat));
                }
                Message::Pong(_) => return Ok(Some(LiveMessage::Heartbeat)),
                Message::Close(_) => return Ok(None),
                Message::Binary(_) | Message::Frame(_) => continue,
            };
            let value: Value = serde_json::from_str(text.as_str())
                .map_err(|e| ClientError::bad_response(format!("WebSocket message: {e}")))?;
            match value.get("type").and_then(Value::as_str) {
                Some("changes") => {
                    #[derive(Deserialize)]
                    struct Page {
                        changes: Vec<PulledChange>,
                        cursor: String,
                    }
                    let page: Page = serde_json::from_value(value).map_err(|e| {
                        ClientError::bad_response(format!("WebSocket changes: {e}"))
                    })?;
                    return Ok(Some(LiveMessage::Changes {
                        changes: page.changes,
                        cursor: page.cursor,
                    }));
                }
                Some("synced") => {
                    let cursor = value
                        .get("cursor")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ClientError::bad_response("synced without a cursor"))?
                        .to_owned();
                    return Ok(Some(match subscription_id(&value) {
                        Some(id) => LiveMessage::SubscriptionSynced { id, cursor },
                        None => LiveMessage::Synced { cursor },
                    }));
                }
                Some("rows") => {
                    #[derive(Deserialize)]
                    struct RowsMessage {
                        id: String,
                        model: String,
                        #[serde(default)]
                        rows: Vec<SnapshotRow>,
                        #[serde(default)]
                        retracts: Vec<String>,
                        #[serde(default)]
                        reset: bool,
                        cursor: String,
                    }
                    let m: RowsMessage = serde_json::from_value(value)
                        .map_err(|e| ClientError::bad_response(format!("WebSocket rows: {e}")))?;
                    return Ok(Some(LiveMessage::Rows {
                        id: m.id,
                        model: m.model,
                        rows: m.rows,
                        retracts: m.retracts,
                        reset: m.reset,
                        cursor: m.cursor,
                    }));
                }
                Some("error") if subscription_id(&value).is_some() && !ends_session(&value) => {
                    let id = subscription_id(&value).unwrap_or_default();
                    let error = error_from_body(422, None, value.to_string().as_bytes());
                    return Ok(Some(LiveMessage::SubscriptionError { id, error }));
                }
                Some("error") => {
                    let body = value.to_string();
                    // An expired token ends the session like a 401 ends a
                    // request: the client renews it and resubscribes.
                    let unauthorized =
                        value.pointer("/error/code") == Some(&Value::from("SYNC:UNAUTHORIZED"));
                    let status = if unauthorized { 401 } else { 0 };
                    return Err(error_from_body(status, None, body.as_bytes()));
                }
                Some("pong") => return Ok(Some(LiveMessage::Heartbeat)),
                // messages of later protocol versions
                _ => continue,
            }
        }
    }

    /// Subscribe to changes of `models` (`None` = all) after `cursor`,
    /// under `id` (`None`: the connection's unnamed subscription).
    pub async fn subscribe(
        &mut self,
        id: Option<&str>,
        cursor: Option<&str>,
        models: Option<&[String]>,
    ) -> Result<(), ClientError> {
        let mut subscribe = json!({ "type": "subscribe", "cursor": cursor });
        if let Some(models) = models {
            subscribe["models"] = json!(models);
        }
        if let Some(id) = id {
            subscribe["id"] = json!(id);
        }
        self.send_text(subscribe.to_string()).await
    }

    /// Subscribe to a shape's rows under `id` (PROTOCOL.md 16.3): its
    /// messages are [`LiveMessage::Rows`], then
    /// [`LiveMessage::SubscriptionSynced`].
    pub async fn subscribe_shape(
        &mut self,
        id: &str,
        shape: &str,
        params: &Value,
    ) -> Result<(), ClientError> {
        let mut subscribe = json!({ "type": "subscribe", "id": id, "shape": shape });
        if !params.is_null() {
            subscribe["params"] = params.clone();
        }
        self.send_text(subscribe.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::network(format!("WebSocket: {e}")))
    }

    /// Send `{"type": "ping"}` (the server answers `pong`).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .map_err(|e| ClientError::network(format!("WebSocket: {e}")))
    }

    /// Close the connection.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The `id` a server message names its subscription by, if any.
fn subscription_id(message: &Value) -> Option<String> {
    message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// An error that ends the whole session (expired credentials, a catch-up
/// that failed) rather than refusing one subscription.
fn ends_session(message: &Value) -> bool {
    let code = message.pointer("/error/code").and_then(Value::as_str);
    !matches!(
        code,
        Some("SYNC:UNKNOWN_SHAPE" | "SYNC:INVALID_SHAPE_PARAMS" | "SYNC:UNKNOWN_MODEL")
    )
}
