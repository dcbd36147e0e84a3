//! [`ResponseFuture`]: either the engine's answer or the inner service's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use better_sync::adapter::SyncBody;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

type SyncFuture = Pin<Box<dyn Future<Output = Response<SyncBody>> + Send>>;

pin_project! {
    /// Response future of [`crate::BetterSyncService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sync { fut: SyncFuture },
        Inner { #[pin] fut: F },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sync(fut: SyncFuture) -> Self {
        Self {
            kind: Kind::Sync { fut },
        }
    }

    pub(crate) fn inner(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sync { fut } => {
                let res = ready!(fut.as_mut().poll(cx));
                Poll::Ready(Ok(res.map(ResponseBody::sync)))
            }
            KindProj::Inner { fut } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
