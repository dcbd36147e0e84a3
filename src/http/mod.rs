//! The protocol over HTTP: `http::Request` in, `http::Response` out.
//!
//! Framework adapters call `BetterSync::handle` for every request whose
//! path `BetterSync::serves`, and only translate types. This room holds the
//! route table (`routes.rs`), request bodies (`body.rs`, `push_body.rs`),
//! query strings (`query.rs`), answers (`response.rs`), the OpenAPI and
//! `sync.json` documents (`openapi.rs`), CORS (`cors.rs`), rate limits
//! (`ratelimit.rs`) and the served browser client (`client_assets.rs`).

mod body;
mod client_assets;
pub(crate) mod cors;
mod openapi;
mod push_body;
mod query;
pub(crate) mod ratelimit;
mod response;
pub(crate) mod routes;

pub(crate) use self::openapi::{document as openapi_document, metadata};
pub use self::response::error_response;
pub(crate) use self::response::upgrade_required;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::Full;
use tracing::Instrument;

use self::body::read_body;
use self::cors::Cors;
use self::push_body::parse_push;
use self::query::Query;
use self::ratelimit::{Limiter, RateKey};
use self::response::{asset, empty, json, not_found, set_allow};
use self::routes::{ROUTES, Route, RouteKind, strip_base};
use crate::auth::{AuthRequest, Ctx};
use crate::engine::{Engine, Probe, PullOptions, PushForm};
use crate::error::{ErrorCode, SyncError};
use crate::inspect;
use crate::telemetry;

/// Body of every response the engine makes.
pub type SyncBody = Full<Bytes>;

/// Boxed error of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the HTTP side needs beside the engine: where it is mounted, CORS,
/// rate limits, and the heartbeat `sync.json` announces.
pub(crate) struct HttpConfig {
    pub(crate) base_path: String,
    pub(crate) cors: Option<Cors>,
    /// Rate limits, in the order configured.
    pub(crate) limiters: Vec<Limiter>,
    /// WebSocket ping interval, announced in `sync.json`.
    pub(crate) heartbeat: Duration,
    /// The role the inspector needs; `None`: no inspector.
    pub(crate) inspector: Option<String>,
}

impl HttpConfig {
    /// The routes this engine serves (the inspector's only when enabled).
    pub(crate) fn routes(&self) -> impl Iterator<Item = &'static Route> + '_ {
        ROUTES
            .iter()
            .filter(|r| self.inspector.is_some() || !r.kind.is_inspector())
    }

    /// Whether `path` is under the base path (by whole segments).
    pub(crate) fn serves(&self, path: &str) -> bool {
        strip_base(&self.base_path, path).is_some()
    }

    /// Without a context: the per-address limits; with one: the per-user and
    /// per-tenant limits.
    pub(crate) fn rate_check(
        &self,
        parts: &http::request::Parts,
        ctx: Option<&Ctx>,
    ) -> Result<(), SyncError> {
        for limiter in &self.limiters {
            let applies = (limiter.key() == RateKey::ClientAddr) == ctx.is_none();
            if let Some(subject) = applies.then(|| limiter.subject(parts, ctx)).flatten() {
                limiter.check(subject)?;
            }
        }
        Ok(())
    }
}

/// Answer one request under the base path. Never panics: a panicking
/// hook becomes a `500 SYNC:INTERNAL` for this request only.
pub(crate) async fn handle<B>(
    engine: &Engine,
    http: &HttpConfig,
    req: Request<B>,
) -> Response<SyncBody>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let router = Router { engine, http };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let start = Instant::now();
    // No token, query string or body in the span: the path names the route
    // (tenant and user are recorded once the request is authorized).
    let span = tracing::info_span!(
        "sync.request",
        method = %req.method(),
        path = req.uri().path(),
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
        status = tracing::field::Empty,
        code = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let routed = AssertUnwindSafe(router.route(req).instrument(span.clone()))
        .catch_unwind()
        .await;
    let mut res = match routed {
        Ok(Ok(res)) => res,
        Ok(Err(err)) => {
            span.record("code", err.code().as_str());
            metrics::counter!(telemetry::ERRORS, "code" => err.code().as_str()).increment(1);
            error_response(&err)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(parent: &span, panic = %what, "request handler panicked");
            let code = crate::error::ErrorCode::Internal;
            span.record("code", code.as_str());
            metrics::counter!(telemetry::ERRORS, "code" => code.as_str()).increment(1);
            error_response(&SyncError::internal(
                "the server failed while handling this request; nothing was written",
            ))
        }
    };
    span.record("status", res.status().as_u16());
    span.record("duration_ms", start.elapsed().as_secs_f64() * 1000.0);
    if let Some(cors) = &http.cors {
        cors.apply(origin.as_ref(), res.headers_mut());
    }
    res
}

/// One request's view of the engine and the HTTP settings.
struct Router<'a> {
    engine: &'a Engine,
    http: &'a HttpConfig,
}

impl Router<'_> {
    async fn route<B>(&self, req: Request<B>) -> Result<Response<SyncBody>, SyncError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // A clone of the URI shares its bytes (no allocation per request),
        // and outlives `req`, which the routes consume.
        let uri = req.uri().clone();
        let path = uri.path();
        let sub = strip_base(&self.http.base_path, path).ok_or_else(|| not_found(path))?;
        let candidates: Vec<&Route> = self.http.routes().filter(|r| r.matches(sub)).collect();
        if candidates.is_empty() {
            return Err(not_found(req.uri().path()));
        }
        let methods: Vec<Method> = candidates.iter().map(|r| r.method.clone()).collect();
        if req.method() == Method::OPTIONS {
            let mut res = empty(StatusCode::NO_CONTENT);
            if let Some(cors) = &self.http.cors {
                cors.preflight(res.headers_mut(), &methods);
            }
            set_allow(&mut res, &methods);
            return Ok(res);
        }
        let Some(route) = candidates.iter().find(|r| r.method == req.method()) else {
            let mut res = error_response(&SyncError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            ));
            set_allow(&mut res, &methods);
            return Ok(res);
        };
        let (parts, body) = req.into_parts();
        self.http.rate_check(&parts, None)?;
        let req = Request::from_parts(parts, body);
        match route.kind {
            RouteKind::Metadata => {
                let mut meta = metadata(self.engine, self.http);
                // With credentials, the tenant's horizon: the oldest cursor
                // still served. Without (or with refused ones) the public
                // document, which holds no tenant data.
                if req.headers().contains_key(http::header::AUTHORIZATION)
                    && let Ok(ctx) = self
                        .engine
                        .authorize(AuthRequest {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            headers: req.headers().clone(),
                            identity: None,
                        })
                        .await
                    && let Some(r) = self.engine.storage.retention()
                {
                    let horizon = r.horizon(&ctx.tenant_id).await?;
                    meta["horizon"] = self.engine.cursors.encode(&ctx.tenant_id, horizon).into();
                }
                Ok(json(StatusCode::OK, &meta))
            }
            // Adapters intercept upgrade requests before `handle`; anything
            // that reaches here cannot upgrade.
            // Its parameters are checked as an upgrade's would be: bad ones
            // are refused before the 426.
            RouteKind::WebSocket => {
                Query::parse(req.uri().query())?;
                self.engine
                    .admit_versions(req.headers(), req.uri().query())?;
                Ok(upgrade_required("this route only speaks WebSocket"))
            }
            RouteKind::OpenApi => Ok(json(
                StatusCode::OK,
                &openapi_document(self.engine, self.http),
            )),
            RouteKind::Health => {
                let q = Query::parse(req.uri().query())?;
                let probe = match q.text("probe")?.as_deref() {
                    None | Some("ready") => Probe::Ready,
                    Some("live") => Probe::Live,
                    Some(other) => {
                        return Err(SyncError::new(
                            ErrorCode::InvalidQuery,
                            format!("query parameter `probe` must be live or ready, got {other:?}"),
                        ));
                    }
                };
                let (ok, body) = self.engine.health(probe).await;
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json(status, &body))
            }
            RouteKind::WsTicket => {
                let (parts, _) = req.into_parts();
                let (ctx, expires_at) = self
                    .engine
                    .authorize_until(AuthRequest {
                        method: parts.method.clone(),
                        uri: parts.uri.clone(),
                        headers: parts.headers.clone(),
                        identity: None,
                    })
                    .await?;
                self.http.rate_check(&parts, Some(&ctx))?;
                let ticket = self.engine.tickets.issue(&ctx, expires_at)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "ticket": ticket,
                        "expiresInSecs": crate::engine::TICKET_TTL.as_secs(),
                    }),
                ))
            }
            RouteKind::InspectorPage => Ok(asset(&req, inspect::PAGE, "text/html; charset=utf-8")),
            RouteKind::InspectorLog | RouteKind::InspectorSessions | RouteKind::InspectorRow => {
                let (parts, _) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                let role = self.http.inspector.as_deref().unwrap_or_default();
                if !ctx.has_role(role) {
                    return Err(SyncError::forbidden(format!(
                        "the inspector needs the role {role:?}"
                    )));
                }
                let q = Query::parse(parts.uri.query())?;
                let body = match route.kind {
                    RouteKind::InspectorLog => {
                        let before = q
                            .positive("before")?
                            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
                        inspect::log(self.engine, &ctx, before, q.positive("limit")?).await?
                    }
                    RouteKind::InspectorSessions => inspect::sessions(self.engine, &ctx),
                    _ => {
                        let required = |name: &str| {
                            q.text(name)?.ok_or_else(|| {
                                SyncError::new(
                                    ErrorCode::InvalidQuery,
                                    format!("query parameter `{name}` is required"),
                                )
                            })
                        };
                        inspect::row(self.engine, &ctx, &required("model")?, &required("id")?)
                            .await?
                    }
                };
                Ok(json(StatusCode::OK, &body))
            }
            RouteKind::ClientModule => {
                let name = sub.rsplit('/').next().unwrap_or_default();
                let text = client_assets::client_module(name).ok_or_else(|| not_found(path))?;
                Ok(asset(&req, text, "text/javascript; charset=utf-8"))
            }
            RouteKind::ModelTypes => Ok(typescript(self.engine)),
            RouteKind::ClientJs => Ok(asset(
                &req,
                client_assets::CLIENT_JS,
                "text/javascript; charset=utf-8",
            )),

            RouteKind::Push => {
                let (parts, body) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                let versions = self
                    .engine
                    .admit_versions(&parts.headers, parts.uri.query())?;
                let content_length = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let bytes =
                    read_body(body, self.engine.limits.max_body_bytes, content_length).await?;
                let push = parse_push(&bytes, self.engine.limits.max_batch)?;
                Ok(json(
                    StatusCode::OK,
                    &self
                        .engine
                        .push_as(&ctx, push, PushForm::Wire(&versions))
                        .await?,
                ))
            }
            RouteKind::Pull => {
                let (parts, _) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                self.engine
                    .admit_versions(&parts.headers, parts.uri.query())?;
                let q = Query::parse(parts.uri.query())?;
                let opts = PullOptions {
                    cursor: q.text("cursor")?,
                    limit: q.positive("limit")?,
                    wait: q.seconds("wait")?,
                };
                if let Some(shape) = q.text("shape")? {
                    let params = Engine::shape_params(&shape, q.text("params")?.as_deref())?;
                    return Ok(json(
                        StatusCode::OK,
                        &self
                            .engine
                            .shape_pull(&ctx, &shape, params.as_ref(), opts)
                            .await?,
                    ));
                }
                Ok(json(
                    StatusCode::OK,
                    &self.engine.pull_body(&ctx, opts).await?,
                ))
            }
            RouteKind::Snapshot => {
                let (parts, _) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                self.engine
                    .admit_versions(&parts.headers, parts.uri.query())?;
                let q = Query::parse(parts.uri.query())?;
                if let Some(shape) = q.text("shape")? {
                    let params = Engine::shape_params(&shape, q.text("params")?.as_deref())?;
                    let answer = self
                        .engine
                        .shape_snapshot(
                            &ctx,
                            &shape,
                            params.as_ref(),
                            q.text("after")?.as_deref(),
                            q.positive("limit")?,
                        )
                        .await?;
                    if let Some(model) = q.text("model")?
                        && model != answer.model
                    {
                        return Err(SyncError::new(
                            ErrorCode::InvalidQuery,
                            format!("shape {shape} holds rows of {}, not {model}", answer.model),
                        ));
                    }
                    return Ok(json(StatusCode::OK, &answer));
                }
                let model = q.text("model")?.ok_or_else(|| {
                    SyncError::new(
                        ErrorCode::InvalidQuery,
                        "query parameter `model` is required",
                    )
                })?;
                let after = q.text("after")?;
                let limit = q.positive("limit")?;
                Ok(json(
                    StatusCode::OK,
                    &self
                        .engine
                        .snapshot_body(&ctx, &model, after.as_deref(), limit)
                        .await?,
                ))
            }
        }
    }

    /// Authenticate, authorize, and count the request against the
    /// user and tenant rate limits.
    async fn ctx_of(&self, parts: &http::request::Parts) -> Result<Ctx, SyncError> {
        let ctx = self
            .engine
            .authorize(AuthRequest {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                identity: None,
            })
            .await?;
        let span = tracing::Span::current();
        span.record("tenant", ctx.tenant_id.as_str());
        span.record("user", ctx.user_id.as_str());
        self.http.rate_check(parts, Some(&ctx))?;
        Ok(ctx)
    }
}

/// `GET B/models.d.ts`: the models' TypeScript declarations.
fn typescript(engine: &Engine) -> Response<SyncBody> {
    let names: Vec<&str> = match &engine.models {
        Some(models) => models.iter().map(String::as_str).collect(),
        None => engine.typed.names().collect(),
    };
    let text = crate::model::typescript_declarations(
        names,
        |m| engine.typed.get(m).map(|t| &t.schema),
        |m| engine.versions.current(m),
    );
    let mut res = Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/typescript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    res
}
