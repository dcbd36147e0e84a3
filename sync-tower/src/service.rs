//! [`BetterSyncService`]: answers sync requests, forwards the rest.

use std::task::{Context, Poll};

use better_sync::BetterSync;
use better_sync::adapter::BoxError;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;

/// The service made by [`crate::BetterSyncLayer`].
#[derive(Debug, Clone)]
pub struct BetterSyncService<S> {
    sync: BetterSync,
    inner: S,
}

impl<S> BetterSyncService<S> {
    /// Wrap `inner`, serving `sync` under its base path.
    pub fn new(sync: BetterSync, inner: S) -> Self {
        Self { sync, inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BetterSyncService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    /// Readiness is the inner service's: the engine itself is always ready
    /// (it queues work internally), so the inner service's backpressure and
    /// errors pass through unchanged.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.sync.serves(req.uri().path()) {
            let sync = self.sync.clone();
            if better_sync::adapter::is_websocket_upgrade(req.headers()) {
                return ResponseFuture::sync(Box::pin(crate::ws::upgrade(sync, req)));
            }
            ResponseFuture::sync(Box::pin(async move { sync.handle(req).await }))
        } else {
            ResponseFuture::inner(self.inner.call(req))
        }
    }
}
