//! [`BetterSyncBuilder`]: configure an engine once, share it everywhere.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;

use super::{BetterSync, Shared};
use crate::access::{
    AuthorizeFn, CanReadFn, CanWriteFn, ReadFilter, WriteCheck, WriteDecision, WriteHookFn,
};
use crate::auth::{AuthRequest, Authenticator, Ctx};
use crate::cursor::CursorCodec;
use crate::engine::{Engine, Tickets};
use crate::error::{BuildError, SyncError};
use crate::http::HttpConfig;
use crate::http::cors::Cors;
use crate::http::ratelimit::{Limiter, RateLimit};
use crate::limits::Limits;
use crate::live::{Fanout, FanoutConfig, FanoutDeps};
use crate::materialize::{Materialize, Materializers};
use crate::model::{ModelOptions, ModelVersions, TypedModel, TypedModels, WireCodecs};
use crate::retention::{Compactor, RetentionPolicy};
use crate::shape::{Shape, Shapes};
use crate::storage::Storage;
use crate::write::Writer;
use crate::ws::SocketConfig;
use better_sync_core::conflict::Conflict;
use better_sync_core::protocol::Change;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Builds a [`BetterSync`] engine.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use better_sync::{BetterSync, Conflict, SeaOrmStorage, auth::Jwt};
/// let sync = BetterSync::builder()
///     .base_path("/api/sync")
///     .storage(SeaOrmStorage::open("sqlite://data.db?mode=rwc").await?)
///     .auth(Jwt::hs256(b"secret"))
///     .conflict(Conflict::Lww)
///     .models(["todo"])
///     .can_write(|ctx, _model, _change| !ctx.has_role("viewer"))
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct BetterSyncBuilder {
    base_path: String,
    storage: Option<Arc<dyn Storage>>,
    auth: Option<Arc<dyn Authenticator>>,
    authorize: Option<AuthorizeFn>,
    can_read: Option<CanReadFn>,
    can_write: Option<CanWriteFn>,
    on_write: Option<WriteHookFn>,
    conflict: Conflict,
    models: BTreeSet<String>,
    limits: Limits,
    cors: Option<Cors>,
    cursor_key: Vec<u8>,
    fanout: FanoutConfig,
    limiters: Vec<RateLimit>,
    heartbeat: Duration,
    heartbeat_timeout: Option<Duration>,
    inspector: Option<String>,
    retention: Option<RetentionPolicy>,
    typed: TypedModels,
    versions: ModelVersions,
    wire: WireCodecs,
    schema_errors: Vec<(String, String)>,
    tables: Materializers,
    materialize_errors: Vec<(String, String)>,
    shapes: Shapes,
}

impl Default for BetterSyncBuilder {
    fn default() -> Self {
        Self {
            base_path: "/api/sync".into(),
            storage: None,
            auth: None,
            authorize: None,
            can_read: None,
            can_write: None,
            on_write: None,
            conflict: Conflict::Lww,
            models: BTreeSet::new(),
            limits: Limits::default(),
            cors: None,
            cursor_key: b"better-sync".to_vec(),
            fanout: FanoutConfig::default(),
            limiters: Vec::new(),
            heartbeat: Duration::from_secs(30),
            heartbeat_timeout: None,
            inspector: None,
            retention: None,
            typed: TypedModels::default(),
            versions: ModelVersions::default(),
            wire: WireCodecs::default(),
            schema_errors: Vec::new(),
            tables: Materializers::default(),
            materialize_errors: Vec::new(),
            shapes: Shapes::default(),
        }
    }
}

impl BetterSyncBuilder {
    /// Where the routes live (default `/api/sync`).
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into();
        self
    }

    /// The storage (required), usually [`crate::storage::SeaOrmStorage`].
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// How requests are authenticated, e.g. [`crate::auth::Jwt`].
    pub fn auth(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Conflict resolution (default and only: [`Conflict::Lww`]).
    pub fn conflict(mut self, conflict: Conflict) -> Self {
        self.conflict = conflict;
        self
    }

    /// Turn a verified request into the context it runs under, or reject it.
    /// Runs after the authenticator; `req.identity` holds what it verified.
    pub fn authorize<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Ctx, SyncError>> + Send + 'static,
    {
        self.authorize = Some(Arc::new(move |req| f(req).boxed()));
        self
    }

    /// Row-level read filter: rows (and pulled changes) it refuses are left
    /// out of every read.
    pub fn can_read<F>(mut self, f: F) -> Self
    where
        F: Fn(&Ctx, &str, &Value) -> bool + Send + Sync + 'static,
    {
        self.can_read = Some(Arc::new(f));
        self
    }

    /// Row-level write check: a change it refuses fails its whole batch with
    /// `SYNC:FORBIDDEN`.
    pub fn can_write<F>(mut self, f: F) -> Self
    where
        F: Fn(&Ctx, &str, &Change) -> bool + Send + Sync + 'static,
    {
        self.can_write = Some(Arc::new(f));
        self
    }

    /// Decide about each change before it is written, seeing the row's
    /// current value: accept it, rewrite its payload (set `updated_by`,
    /// clamp a value) or reject it with a reason the client receives
    /// (`403 SYNC:FORBIDDEN`, `meta.reason`; the batch writes nothing).
    /// It runs for clients' pushes and the application's writes alike, after
    /// validation and `can_write`, one change after the other.
    ///
    /// Consistency: `current` is the committed state when the push was
    /// checked. Pushes that commit in the same group, or between the check
    /// and the commit, are not in it; the rewritten change is then merged
    /// with them by last-writer-wins like any change. A hook that needs a
    /// rule to hold across concurrent writers (a counter, a uniqueness)
    /// cannot rely on `current` alone.
    ///
    /// ```no_run
    /// # fn run(b: better_sync::BetterSyncBuilder) {
    /// use better_sync::{WriteCheck, WriteDecision};
    /// use better_sync::protocol::Op;
    /// let b = b.on_write(|check: WriteCheck| async move {
    ///     let locked = check.current.as_ref().and_then(|row| row.get("locked")) == Some(&true.into());
    ///     if check.change.op == Op::Delete && locked {
    ///         return WriteDecision::Reject("this todo is locked".into());
    ///     }
    ///     let mut payload = check.change.payload.clone();
    ///     payload["updated_by"] = check.ctx.user_id.clone().into();
    ///     WriteDecision::Rewrite(payload)
    /// });
    /// # }
    /// ```
    pub fn on_write<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(WriteCheck) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = WriteDecision> + Send + 'static,
    {
        self.on_write = Some(Arc::new(move |check| Box::pin(f(check))));
        self
    }

    /// Accept changes for this model. With no model registered every
    /// well-formed model name is accepted (handy in development); with any,
    /// others get `SYNC:UNKNOWN_MODEL`.
    pub fn model(mut self, name: impl Into<String>) -> Self {
        self.models.insert(name.into());
        self
    }

    /// [`Self::model`] for several names.
    pub fn models<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models.extend(names.into_iter().map(Into::into));
        self
    }

    /// Request limits (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Answer CORS preflights and add CORS headers for these origins.
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Key mixed into cursors so that cursors of one deployment are rejected
    /// by another. Every instance of one deployment must share it.
    pub fn cursor_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.cursor_key = key.as_ref().to_vec();
        self
    }

    /// Add a rate limit (per user, tenant or client address); several may be
    /// combined. A request over a limit gets `429 SYNC:RATE_LIMITED` with
    /// `Retry-After` and `meta.retryAfterMs`.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limiters.push(limit);
        self
    }

    /// WebSocket ping interval (default 30 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Close a WebSocket peer that sent nothing for this long, and give up on
    /// a send that takes this long (default: twice the heartbeat interval).
    pub fn heartbeat_timeout(mut self, after: Duration) -> Self {
        self.heartbeat_timeout = Some(after);
        self
    }

    /// Live batches a subscriber may fall behind before it has to catch up
    /// by pull (default 256).
    pub fn live_buffer(mut self, batches: usize) -> Self {
        self.fanout.capacity = batches.max(1);
        self
    }

    /// How often the live fan-out re-reads the log head when no commit was
    /// announced (default 1 s). Commits through this engine and, on Postgres,
    /// through any instance are announced at once.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.fanout.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Serve the inspector (a development tool, off by default) at
    /// `B/inspector`: a page showing the caller's tenant's recent log, this
    /// instance's live sessions, and each row's field stamps with why each
    /// value won. Its data routes run the `authorize` hook and need `role`
    /// among the context's roles.
    pub fn inspector(mut self, role: impl Into<String>) -> Self {
        self.inspector = Some(role.into());
        self
    }

    /// Bound the log: compact it in the background as `policy` says (see
    /// [`RetentionPolicy`]). With several instances on one database, one
    /// compacts at a time. Without a policy the log keeps everything (an
    /// operator can still compact on demand with [`BetterSync::compact_with`]
    /// or the `better-sync-admin` command line).
    ///
    /// ```no_run
    /// # fn run(b: better_sync::BetterSyncBuilder) {
    /// use std::time::Duration;
    /// let b = b.retention(
    ///     better_sync::RetentionPolicy::default().max_age(Duration::from_secs(14 * 24 * 3600)),
    /// );
    /// # }
    /// ```
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Register a typed model: changes of `name` must fit `T`'s JSON Schema
    /// (derived with `#[derive(JsonSchema)]`): an insert's payload the whole
    /// type, an update's any of its fields, no field `T` does not declare.
    /// A change that does not fit is refused with `422
    /// SYNC:SCHEMA_VIOLATION` (its payload path in `meta.field`, the reason
    /// in `meta.reason`) and its batch writes nothing. The schema is shown
    /// in `sync.json` and `openapi.json`.
    ///
    /// ```
    /// # fn run(b: better_sync::BetterSyncBuilder) {
    /// use better_sync::JsonSchema;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, JsonSchema)]
    /// struct Todo {
    ///     id: String,
    ///     title: String,
    ///     done: bool,
    /// }
    ///
    /// let b = b.typed_model::<Todo>("todo");
    /// # }
    /// ```
    pub fn typed_model<T>(self, name: impl Into<String>) -> Self
    where
        T: JsonSchema + Serialize + DeserializeOwned,
    {
        self.typed_model_with::<T>(name, ModelOptions::default())
    }

    /// [`BetterSyncBuilder::typed_model`] with options (e.g. accept fields
    /// the type does not declare).
    pub fn typed_model_with<T>(self, name: impl Into<String>, options: ModelOptions) -> Self
    where
        T: JsonSchema + Serialize + DeserializeOwned,
    {
        let name = name.into();
        let typed = TypedModel::of::<T>(&options);
        let mut this = self.model_with(name.clone(), options);
        match typed {
            Ok(model) => this.typed.insert(name, model),
            Err(reason) => this.schema_errors.push((name, reason)),
        }
        this
    }

    /// Register an untyped model with options: its schema version and
    /// upgrades ([`ModelOptions::version`], [`ModelOptions::upgrade`]) and
    /// its wire serializer ([`ModelOptions::serializer`]); the options about
    /// a type's schema do not apply.
    pub fn model_with(mut self, name: impl Into<String>, options: ModelOptions) -> Self {
        let name = name.into();
        if let Some(problem) = options.problem() {
            self.schema_errors.push((name.clone(), problem));
        }
        if let Some(versioned) = options.versioned() {
            self.versions.insert(name.clone(), versioned);
        }
        if let Some(codec) = options.serializer_arc() {
            self.wire.insert(name.clone(), codec);
        }
        self.models.insert(name);
        self
    }

    /// Whether the models' wire serializers run (default: on). Off, every
    /// payload passes as stored, in both directions: for clients that
    /// already speak the stored form, or to look at it while debugging.
    pub fn wire_normalize(mut self, on: bool) -> Self {
        self.wire.set_normalize(on);
        self
    }

    /// Materialize a model into a table of the application's own: every
    /// commit also writes each changed row's current state into `E`'s table
    /// (upsert; a delete deletes, or sets the flag of
    /// [`Materialize::soft_delete`]), in the same transaction as the log and
    /// the snapshots, on SQLite, Postgres and MySQL alike. The app reads and
    /// joins that table with plain SeaORM; it writes synced rows through
    /// [`BetterSync::write`], not into the table (a write there is not synced
    /// and is overwritten by the next change of its row).
    ///
    /// The app creates the table in its own migrations. Its `Model` is made
    /// from the row's fields by serde; registering the model typed
    /// ([`BetterSyncBuilder::typed_model`], e.g. with the entity's `Model`
    /// deriving `JsonSchema`) makes sure every inserted row has them all.
    /// Commits that write a materialized model take a transaction (not the
    /// one-statement fast path), which costs a few round trips. Give the
    /// table no foreign key to other synced rows (SeaORM's `skip_fk`):
    /// clients sync rows in any order, and a statement the table refuses
    /// fails the whole commit group with `503 SYNC:UNAVAILABLE`.
    ///
    /// ```no_run
    /// # mod todo {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize, better_sync::JsonSchema)]
    /// #     #[sea_orm(table_name = "todos")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key, auto_increment = false)]
    /// #         pub tenant_id: String,
    /// #         #[sea_orm(primary_key, auto_increment = false)]
    /// #         pub id: String,
    /// #         pub title: String,
    /// #         pub done: bool,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// use better_sync::{BetterSync, Materialize, ModelOptions};
    ///
    /// # fn run(storage: better_sync::SeaOrmStorage, auth: better_sync::auth::Jwt) -> Result<(), better_sync::BuildError> {
    /// let sync = BetterSync::builder()
    ///     .storage(storage)
    ///     .auth(auth)
    ///     // The tenant comes from the token, not from the client's payload.
    ///     .typed_model_with::<todo::Model>("todo", ModelOptions::default().omit_field("tenant_id"))
    ///     .materialize("todo", Materialize::<todo::Entity>::new().tenant_field("tenant_id"))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn materialize<E>(mut self, name: impl Into<String>, into: Materialize<E>) -> Self
    where
        E: sea_orm::EntityTrait,
        E::Model: DeserializeOwned + sea_orm::IntoActiveModel<E::ActiveModel>,
    {
        let name = name.into();
        if let Err(reason) = self.tables.bind(name.clone(), into) {
            self.materialize_errors.push((name.clone(), reason));
        }
        self.models.insert(name);
        self
    }

    /// Define a shape clients may subscribe to: a subset of a model's rows
    /// chosen by a filter with parameters and the verified context (see
    /// [`crate::shape`]). Its rows are always further filtered by
    /// `can_read`.
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shapes.insert(shape);
        self
    }

    /// Check the configuration and build the engine.
    pub fn build(self) -> Result<BetterSync, BuildError> {
        let storage = self.storage.ok_or(BuildError::MissingStorage)?;
        if self.auth.is_none() && self.authorize.is_none() {
            return Err(BuildError::MissingAuth);
        }
        let base = self.base_path.trim_end_matches('/').to_owned();
        let valid_base = base.starts_with('/')
            && !base.contains("//")
            && !base.contains(['?', '#', ' '])
            && base.len() > 1;
        if !valid_base {
            return Err(BuildError::InvalidBasePath(self.base_path));
        }
        if let Some(bad) = self
            .models
            .iter()
            .find(|m| !better_sync_core::protocol::is_valid_model_name(m))
        {
            return Err(BuildError::InvalidModel(bad.clone()));
        }
        if let Some((model, reason)) = self.schema_errors.into_iter().next() {
            return Err(BuildError::InvalidSchema { model, reason });
        }
        if let Some((model, reason)) = self.materialize_errors.into_iter().next() {
            return Err(BuildError::InvalidMaterialize { model, reason });
        }
        for shape in self.shapes.iter() {
            let unknown = std::iter::once(shape.model())
                .chain(shape.lookup_models())
                .find(|m| !self.models.is_empty() && !self.models.contains(*m));
            let problem = shape
                .problem()
                .or_else(|| unknown.map(|m| format!("model {m:?} is not registered")));
            if let Some(reason) = problem {
                return Err(BuildError::InvalidShape {
                    shape: shape.name().to_owned(),
                    reason,
                });
            }
        }
        if !self.shapes.is_empty() && storage.database_backend().is_none() {
            return Err(BuildError::InvalidShape {
                shape: self
                    .shapes
                    .iter()
                    .next()
                    .map(|s| s.name().to_owned())
                    .unwrap_or_default(),
                reason: "the storage runs no SQL statements (Storage::database_backend)".into(),
            });
        }
        if !self.tables.is_empty() && storage.database_backend().is_none() {
            return Err(BuildError::InvalidMaterialize {
                model: format!("{:?}", self.tables),
                reason: "the storage runs no SQL statements (Storage::database_backend)".into(),
            });
        }
        crate::telemetry::describe();
        // One conflict rule exists today; the setting is there for more.
        let _ = self.conflict;
        let read = ReadFilter::new(self.can_read);
        let fanout = Fanout::new(FanoutDeps {
            storage: storage.clone(),
            read: read.clone(),
            max_bytes: self.limits.max_pull_bytes,
            config: self.fanout.clone(),
            wire: self.wire.clone(),
        });
        let engine = Engine {
            writer: Writer::new(fanout.handoff(), self.tables),
            auth: self.auth,
            authorize: self.authorize,
            can_write: self.can_write,
            on_write: self.on_write,
            read,
            models: (!self.models.is_empty()).then_some(self.models),
            typed: self.typed,
            versions: self.versions,
            wire: self.wire,
            shapes: self.shapes,
            limits: self.limits,
            cursors: CursorCodec::new(&self.cursor_key),
            fanout,
            lifecycle: Default::default(),
            sessions: Default::default(),
            tickets: Tickets::new(&self.cursor_key),
            compactor: self
                .retention
                .map(|policy| Arc::new(Compactor::new(storage.clone(), policy))),
            storage,
        };
        if let Some(c) = &engine.compactor {
            c.ensure_started();
        }
        Ok(BetterSync {
            inner: Arc::new(Shared {
                engine,
                http: HttpConfig {
                    base_path: base,
                    cors: self.cors,
                    limiters: self.limiters.into_iter().map(Limiter::new).collect(),
                    heartbeat: self.heartbeat,
                    inspector: self.inspector,
                },
                socket: SocketConfig {
                    heartbeat: self.heartbeat,
                    heartbeat_timeout: self.heartbeat_timeout.unwrap_or(self.heartbeat * 2),
                    live_buffer: self.fanout.capacity,
                },
            }),
        })
    }
}
