//! The protocol over HTTP: `http::Request` in, `http::Response` out.
//!
//! Framework adapters call [`BetterSync::handle`] for every request whose
//! path [`BetterSync::serves`], and only translate types.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use bytes::Buf;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

use crate::auth::{AuthRequest, Ctx};
use crate::engine::{BetterSync, PullOptions};
use crate::error::{ErrorCode, SyncError};
use crate::protocol::{Change, PushRequest};
use crate::ratelimit::RateKey;
use crate::routes::{ROUTES, Route, RouteKind, strip_base};

/// Body of every response the engine makes.
pub type SyncBody = Full<Bytes>;

/// Boxed error of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl BetterSync {
    /// Whether `path` is under the base path (by whole segments).
    pub fn serves(&self, path: &str) -> bool {
        strip_base(&self.inner.base_path, path).is_some()
    }

    /// Answer one request under the base path. Never panics: a panicking
    /// hook becomes a `500 SYNC:INTERNAL` for this request only.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<SyncBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = match AssertUnwindSafe(self.route(req)).catch_unwind().await {
            Ok(Ok(res)) => res,
            Ok(Err(err)) => error_response(&err),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "request handler panicked");
                error_response(&SyncError::internal(
                    "the server failed while handling this request; nothing was written",
                ))
            }
        };
        if let Some(cors) = &self.inner.cors {
            cors.apply(origin.as_ref(), res.headers_mut());
        }
        res
    }

    async fn route<B>(&self, req: Request<B>) -> Result<Response<SyncBody>, SyncError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let sub = strip_base(&self.inner.base_path, req.uri().path())
            .ok_or_else(|| not_found(req.uri().path()))?;
        let candidates: Vec<&Route> = ROUTES.iter().filter(|r| r.path == sub).collect();
        if candidates.is_empty() {
            return Err(not_found(req.uri().path()));
        }
        let methods: Vec<Method> = candidates.iter().map(|r| r.method.clone()).collect();
        if req.method() == Method::OPTIONS {
            let mut res = empty(StatusCode::NO_CONTENT);
            if let Some(cors) = &self.inner.cors {
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
        self.rate_check(&parts, None)?;
        let req = Request::from_parts(parts, body);
        match route.kind {
            RouteKind::Metadata => Ok(json(StatusCode::OK, &self.metadata())),
            // Adapters intercept upgrade requests before `handle`; anything
            // that reaches here cannot upgrade.
            RouteKind::WebSocket => Ok(Self::websocket_without_upgrade()),
            RouteKind::OpenApi => Ok(json(StatusCode::OK, &self.openapi())),
            RouteKind::ClientJs => Ok(asset(
                &req,
                crate::client_assets::CLIENT_JS,
                "text/javascript; charset=utf-8",
            )),

            RouteKind::Push => {
                let (parts, body) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                let content_length = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let bytes =
                    read_body(body, self.inner.limits.max_body_bytes, content_length).await?;
                let push = parse_push(&bytes, self.inner.limits.max_batch)?;
                Ok(json(StatusCode::OK, &self.push(&ctx, push).await?))
            }
            RouteKind::Pull => {
                let (parts, _) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                let q = Query::parse(parts.uri.query())?;
                let opts = PullOptions {
                    cursor: q.text("cursor")?,
                    limit: q.positive("limit")?,
                    wait: q.seconds("wait")?,
                };
                Ok(json(StatusCode::OK, &self.pull_body(&ctx, opts).await?))
            }
            RouteKind::Snapshot => {
                let (parts, _) = req.into_parts();
                let ctx = self.ctx_of(&parts).await?;
                let q = Query::parse(parts.uri.query())?;
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
            .authorize(AuthRequest {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                identity: None,
            })
            .await?;
        self.rate_check(parts, Some(&ctx))?;
        Ok(ctx)
    }

    /// Without a context: the per-address limits; with one: the per-user and
    /// per-tenant limits.
    pub(crate) fn rate_check(
        &self,
        parts: &http::request::Parts,
        ctx: Option<&Ctx>,
    ) -> Result<(), SyncError> {
        for limiter in &self.inner.limiters {
            let applies = (limiter.key() == RateKey::ClientAddr) == ctx.is_none();
            if let Some(subject) = applies.then(|| limiter.subject(parts, ctx)).flatten() {
                limiter.check(subject)?;
            }
        }
        Ok(())
    }
}

fn not_found(path: &str) -> SyncError {
    SyncError::new(ErrorCode::NotFound, format!("no sync route at {path}"))
}

fn set_allow(res: &mut Response<SyncBody>, methods: &[Method]) {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .chain(["OPTIONS"])
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(header::ALLOW, v);
    }
}

async fn read_body<B>(body: B, max: usize, content_length: Option<u64>) -> Result<Bytes, SyncError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        SyncError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {max} bytes"),
        )
        .with_meta(serde_json::json!({ "max": max }))
    };
    let mut body = Box::pin(body);
    if content_length.is_some_and(|n| n > max as u64) {
        discard(body, drain_cap(max)).await;
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        // Errors are boxed at once: the body's own error type need not be Send.
        let next = body
            .frame()
            .await
            .map(|r| r.map_err(Into::<BoxError>::into));
        match next {
            None => return Ok(buf.freeze()),
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    if buf.len() + data.remaining() > max {
                        discard(body, drain_cap(max)).await;
                        return Err(too_large());
                    }
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        buf.extend_from_slice(chunk);
                        let n = chunk.len();
                        data.advance(n);
                    }
                }
            }
            Some(Err(e)) => {
                return Err(SyncError::new(
                    ErrorCode::MalformedJson,
                    format!("could not read the request body: {e}"),
                ));
            }
        }
    }
}

/// How much of an oversize body is read and thrown away so that the client,
/// still sending, gets the 413 answer instead of a reset connection. Bodies
/// larger than this are cut off.
fn drain_cap(max: usize) -> usize {
    max.saturating_mul(4).max(8 << 20)
}

/// Read and drop up to `cap` bytes of a body, never holding more than one frame.
async fn discard<B>(body: Pin<Box<B>>, cap: usize)
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let mut body = body;
    let mut seen = 0usize;
    while seen <= cap {
        let Some(Ok(frame)) = body.frame().await.map(|r| r.map_err(drop)) else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            seen += data.remaining();
        }
    }
}

/// A push body read straight into its types: the common, well-formed case.
#[derive(serde::Deserialize)]
struct TypedPush {
    #[serde(default)]
    client_id: Option<String>,
    changes: Vec<crate::protocol::Change>,
}

/// Parse a push body. A well-formed one is read straight into its types;
/// anything else is parsed again by [`parse_push_checked`], whose errors
/// say where the problem is, in its order of checks (a streaming parse
/// stops at the first problem it meets, which need not be the one to
/// report), so both accept and refuse exactly the same bodies.
fn parse_push(bytes: &[u8], max_batch: usize) -> Result<PushRequest, SyncError> {
    // A derived struct also reads a JSON array of its fields; the body must
    // be an object.
    let object = bytes.trim_ascii_start().first() == Some(&b'{');
    if object
        && let Ok(TypedPush { client_id, changes }) = serde_json::from_slice(bytes)
        && client_id.as_ref().is_none_or(|c| c.len() <= MAX_CLIENT_ID)
        && changes.len() <= max_batch
    {
        return Ok(PushRequest {
            client_id: client_id.unwrap_or_default(),
            changes,
        });
    }
    parse_push_checked(bytes, max_batch)
}

const MAX_CLIENT_ID: usize = 255;

/// Parse a push body with errors that say where the problem is.
fn parse_push_checked(bytes: &[u8], max_batch: usize) -> Result<PushRequest, SyncError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        SyncError::new(
            ErrorCode::MalformedJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let shape = |msg: &str| SyncError::new(ErrorCode::InvalidBody, msg.to_owned());
    let Value::Object(mut obj) = value else {
        return Err(shape(
            "body must be an object { \"client_id\", \"changes\": [...] }",
        ));
    };
    let client_id = match obj.remove("client_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= MAX_CLIENT_ID => s,
        Some(_) => return Err(shape("client_id must be a string of at most 255 bytes")),
    };
    let Some(Value::Array(items)) = obj.remove("changes") else {
        return Err(shape("changes must be an array of changes"));
    };
    if items.len() > max_batch {
        return Err(SyncError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "batch has {} changes, at most {max_batch} are allowed per push",
                items.len()
            ),
        )
        .with_meta(serde_json::json!({ "max": max_batch })));
    }
    let mut changes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let change: Change = serde_json::from_value(item).map_err(|e| {
            SyncError::new(ErrorCode::InvalidChange, format!("changes[{index}]: {e}"))
                .with_meta(serde_json::json!({ "index": index }))
        })?;
        changes.push(change);
    }
    Ok(PushRequest { client_id, changes })
}

/// Query parameters, each allowed at most once.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Result<Self, SyncError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        Ok(Self(pairs))
    }

    fn text(&self, name: &str) -> Result<Option<String>, SyncError> {
        match self.0.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) if v.is_empty() => Err(SyncError::new(
                ErrorCode::InvalidQuery,
                format!("query parameter `{name}` is empty"),
            )),
            Some((_, v)) => Ok(Some(v.clone())),
        }
    }

    fn positive(&self, name: &str) -> Result<Option<u64>, SyncError> {
        self.text(name)?
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{name}` must be a positive integer, got {v:?}"),
                )),
            })
            .transpose()
    }

    fn seconds(&self, name: &str) -> Result<Option<Duration>, SyncError> {
        self.text(name)?
            .map(|v| match v.parse::<f64>() {
                Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
                _ => Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{name}` must be a number of seconds, got {v:?}"),
                )),
            })
            .transpose()
    }
}

/// A static asset with a content hash as `ETag`; `If-None-Match` gets a 304.
fn asset<B>(
    req: &Request<B>,
    body: &'static str,
    content_type: &'static str,
) -> Response<SyncBody> {
    let etag = crate::client_assets::etag(body);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn empty(status: StatusCode) -> Response<SyncBody> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<SyncBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = Response::new(Full::new(Bytes::from(bytes)));
            *res.status_mut() = status;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The response for an error: status, `SYNC:*` JSON body and the headers the
/// code calls for.
pub fn error_response(err: &SyncError) -> Response<SyncBody> {
    let mut res = json(err.status(), &err.to_json());
    let h = res.headers_mut();
    if err.code() == ErrorCode::Unauthorized {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(ms) = err.retry_after_ms() {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both parses give the same answer: the same request, or the same error.
    fn agree(body: &[u8], max_batch: usize) {
        let fast = parse_push(body, max_batch).map_err(|e| e.to_json());
        let checked = parse_push_checked(body, max_batch).map_err(|e| e.to_json());
        assert_eq!(fast, checked, "body {:?}", String::from_utf8_lossy(body));
    }

    const VALID: &str = r#"{"client_id":"d1","changes":[
        {"op_id":"a","model":"todo","pk":"1","op":"insert","payload":{"id":"1","t":[1,{"x":null}]},"updated_at":"2026-11-25T10:00:00.000Z","actor":"d1"},
        {"op_id":"b","model":"todo","pk":"1","op":"delete","updated_at":"2026-11-25T10:00:01.000Z"}]}"#;

    #[test]
    fn the_typed_parse_accepts_and_refuses_what_the_checked_one_does() {
        let long = format!(r#"{{"client_id":"{}","changes":[]}}"#, "x".repeat(256));
        let bodies = [
            VALID,
            r#"{"changes":[]}"#,
            r#"{"client_id":null,"changes":[]}"#,
            r#"{"client_id":7,"changes":[]}"#,
            long.as_str(),
            r#"{"client_id":"d"}"#,
            r#"{"changes":{}}"#,
            r#"{"changes":null}"#,
            r#"[]"#,
            r#"[null, []]"#,
            r#"  ["d", [], 1]"#,
            r#"{"changes":[["a","todo","1","insert",{},"2026-11-25T10:00:00.000Z","d"]]}"#,
            r#"{"changes":[["a","todo","1","insert"]]}"#,
            r#"null"#,
            r#"{"changes":[1]}"#,
            r#"{"changes":[{"op_id":"a"}]}"#,
            r#"{"changes":[{"op_id":"a","model":"m","pk":"1","op":"upsert","updated_at":"x"}]}"#,
            r#"{"changes":[],"changes":[{"op_id":"a"}]}"#,
            r#"{"client_id":"a","client_id":"b","changes":[]}"#,
            r#"{"extra":{"deep":[1,2]},"changes":[]}"#,
            r#"{"changes":[]} trailing"#,
            r#"{"changes":[{"op_id":1}], "#,
            r#"{"client_id":5,"changes":[{"op_id":"#,
        ];
        for body in bodies {
            agree(body.as_bytes(), 1000);
        }
        // Over the batch limit, and at it.
        agree(VALID.as_bytes(), 1);
        agree(VALID.as_bytes(), 2);
    }

    /// Every cut-off prefix and every one-byte change of a valid body.
    #[test]
    fn the_parses_agree_on_damaged_bodies() {
        let body = VALID.as_bytes();
        for end in 0..body.len() {
            agree(&body[..end], 1000);
        }
        for i in 0..body.len() {
            for b in [b'"', b'{', b']', b',', b'0', b'x', b' ', 0xff] {
                let mut damaged = body.to_vec();
                damaged[i] = b;
                agree(&damaged, 1000);
            }
        }
    }
}
