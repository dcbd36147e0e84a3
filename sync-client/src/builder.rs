//! [`ClientBuilder`]: the settings of a [`SyncClient`], mirroring the seed's `createSyncClient`.

use std::sync::Arc;
use std::time::Duration;

use better_sync_core::Conflict;

use crate::auth::Auth;
use crate::client::SyncClient;
use crate::error::ClientError;
use crate::events::Event;
use crate::options::{EventHook, Options, Transport};
use crate::remote::Remote;
use crate::store::Storage;

/// Builds a [`SyncClient`]; see [`SyncClient::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | `base_url` | required |
/// | `base_path` | `/api/sync` |
/// | `models` | none: every model; bootstrap pulls the log from its start unless the server lists its models |
/// | `shapes_only` | off: the models are replicated whole, beside any shapes |
/// | `storage` | [`Storage::memory`] |
/// | `transport` | [`Transport::WebSocket`] (long-poll fallback) |
/// | `auth` | none |
/// | `conflict` | [`Conflict::Lww`] |
/// | `actor` | made up once and kept in the store |
/// | `back_off_at` | 10,000 queued changes |
/// | `long_poll_wait` | 25 s (capped by the server's `maxWaitSecs`) |
#[derive(Default)]
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    base_path: Option<String>,
    models: Option<Vec<String>>,
    shapes_only: bool,
    storage: Option<Storage>,
    transport: Transport,
    auth: Auth,
    conflict: Conflict,
    actor: Option<String>,
    on_event: Option<EventHook>,
    back_off_at: Option<usize>,
    long_poll_wait: Option<Duration>,
    model_versions: Vec<(String, u32)>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("base_path", &self.base_path)
            .field("models", &self.models)
            .field("shapes_only", &self.shapes_only)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The server's origin, e.g. `https://app.example.com`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The path the server mounts the protocol under (default `/api/sync`).
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = Some(path.into());
        self
    }

    /// The models this client syncs: `apply_change` refuses others, the
    /// bootstrap reads their snapshots, and the WebSocket subscribes to them.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = Some(models.into_iter().map(Into::into).collect());
        self
    }

    /// Replicate only the shapes the client subscribes to
    /// ([`SyncClient::subscribe_shape`]), no model whole: no model
    /// snapshot, no model subscription, no plain pull. `models` (when
    /// given) still lists the models `apply_change` accepts.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), better_sync_client::ClientError> {
    /// use better_sync_client::SyncClient;
    /// use serde_json::json;
    ///
    /// let sync = SyncClient::builder()
    ///     .base_url("http://127.0.0.1:3000")
    ///     .shapes_only()
    ///     .build()
    ///     .await?;
    /// sync.subscribe_shape("list_todos", json!({"list": "groceries"})).await?;
    /// sync.connect();
    /// # Ok(()) }
    /// ```
    pub fn shapes_only(mut self) -> Self {
        self.shapes_only = true;
        self
    }

    /// Where rows, outbox and cursor live (default: memory).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How live changes arrive (default: WebSocket with long-poll fallback).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Credentials for every request (default: none).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The conflict strategy; it must be the server's (`lww`, the only one).
    pub fn conflict(mut self, conflict: Conflict) -> Self {
        self.conflict = conflict;
        self
    }

    /// This replica's actor id, the last tie-breaker of concurrent writes.
    /// Give each device its own; by default one is made up and stored.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// A hook called with every [`Event`] (pushes, pulls, conflicts,
    /// retries, rejections): the place for metrics. It runs on the client's
    /// tasks, so keep it quick.
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Outbox size from which [`SyncClient::should_back_off`] says yes.
    pub fn back_off_at(mut self, queued: usize) -> Self {
        self.back_off_at = Some(queued);
        self
    }

    /// How long one long-poll request waits for changes.
    pub fn long_poll_wait(mut self, wait: Duration) -> Self {
        self.long_poll_wait = Some(wait);
        self
    }

    /// The schema versions of the models this app was built for, announced
    /// to the server with every request (`X-Sync-Versions`). A server that
    /// cannot serve them answers `409 SYNC:VERSION_UNSUPPORTED`: the client
    /// reports it ([`crate::Event::VersionUnsupported`],
    /// [`crate::QueueStats::version_unsupported`]) and keeps its queue, since
    /// only a newer app (or server) can sync again. An older version the
    /// server upgrades is served: its pushes are upgraded on the way in.
    ///
    /// ```
    /// # async fn run() -> Result<(), better_sync_client::ClientError> {
    /// let client = better_sync_client::SyncClient::builder()
    ///     .base_url("http://127.0.0.1:3000")
    ///     .model_versions([("todo", 2)])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn model_versions<I, S>(mut self, versions: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        self.model_versions = versions.into_iter().map(|(m, v)| (m.into(), v)).collect();
        self
    }

    /// Open the store and restore what it holds. Does not touch the
    /// network: call [`SyncClient::connect`] to start syncing.
    pub async fn build(self) -> Result<SyncClient, ClientError> {
        let base_url = self
            .base_url
            .ok_or_else(|| ClientError::config("base_url is required"))?;
        let base_path = self.base_path.unwrap_or_else(|| "/api/sync".to_owned());
        let remote = Remote::new(&base_url, &base_path, self.auth)?
            .with_model_versions(&self.model_versions)?;
        if let Some(actor) = &self.actor
            && (actor.is_empty() || actor.len() > 255 || actor.chars().any(char::is_control))
        {
            return Err(ClientError::config(
                "actor must be 1 to 255 bytes without control characters",
            ));
        }
        if self.conflict != Conflict::Lww {
            return Err(ClientError::config(
                "this client only resolves conflicts with lww, the server's strategy",
            ));
        }
        let store = self.storage.unwrap_or_else(Storage::memory).open().await?;
        SyncClient::open(
            remote,
            store,
            Options {
                models: self.models,
                shapes_only: self.shapes_only,
                transport: self.transport,
                on_event: self.on_event,
                back_off_at: self.back_off_at.unwrap_or(10_000),
                long_poll_wait: self.long_poll_wait.unwrap_or(Duration::from_secs(25)),
            },
            self.actor,
        )
        .await
    }
}

impl SyncClient {
    /// Start building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}
