//! Credentials: request headers from a callback, and one token refresh per `401`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header};

use crate::error::ClientError;

type HeadersFn = Arc<dyn Fn() -> BoxFuture<'static, Result<HeaderMap, ClientError>> + Send + Sync>;
type RefreshFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), ClientError>> + Send + Sync>;

/// How the client authenticates: headers added to every request (and to the
/// WebSocket handshake), and an optional refresh run when the server answers
/// `401`.
///
/// When several requests get a `401` at once, the refresh runs once; every
/// request then retries once with fresh headers.
///
/// ```
/// use better_sync_client::Auth;
/// use std::sync::{Arc, Mutex};
///
/// let token = Arc::new(Mutex::new(String::from("first-token")));
/// let read = token.clone();
/// let auth = Auth::bearer_with(move || {
///     let t = read.lock().unwrap().clone();
///     async move { Ok(t) }
/// })
/// .refresh(move || {
///     let token = token.clone();
///     async move {
///         // Ask the identity provider for a new token here.
///         *token.lock().unwrap() = String::from("second-token");
///         Ok(())
///     }
/// });
/// # drop(auth);
/// ```
#[derive(Clone, Default)]
pub struct Auth {
    headers: Option<HeadersFn>,
    refresh: Option<RefreshFn>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("headers", &self.headers.is_some())
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

impl Auth {
    /// No credentials (only `sync.json` and `openapi.json` work without).
    pub fn none() -> Self {
        Self::default()
    }

    /// A fixed bearer token.
    pub fn bearer(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::bearer_with(move || {
            let token = token.clone();
            async move { Ok(token) }
        })
    }

    /// A bearer token read from a callback before every request.
    pub fn bearer_with<F, Fut>(token: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, ClientError>> + Send + 'static,
    {
        let token = Arc::new(token);
        Self::headers(move || {
            let fut = token();
            async move {
                let value = HeaderValue::try_from(format!("Bearer {}", fut.await?))
                    .map_err(|_| ClientError::config("the token is not a valid header value"))?;
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, value);
                Ok(headers)
            }
        })
    }

    /// Headers from a callback, called before every request: the seed's
    /// `auth: { headers: () => ({ Authorization: ... }) }`.
    pub fn headers<F, Fut>(headers: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HeaderMap, ClientError>> + Send + 'static,
    {
        Self {
            headers: Some(Arc::new(move || Box::pin(headers()))),
            refresh: None,
        }
    }

    /// Run `refresh` when the server answers `401`, then retry the request
    /// once with the headers the callback gives afterwards.
    pub fn refresh<F, Fut>(mut self, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ClientError>> + Send + 'static,
    {
        self.refresh = Some(Arc::new(move || Box::pin(refresh())));
        self
    }
}

/// An [`Auth`] with the bookkeeping that makes concurrent `401`s refresh once.
pub(crate) struct AuthState {
    auth: Auth,
    /// Bumped by each refresh: a request that failed with headers of an older
    /// generation retries without refreshing again.
    generation: AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
}

impl AuthState {
    pub(crate) fn new(auth: Auth) -> Self {
        Self {
            auth,
            generation: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
        }
    }

    /// The headers to send now, with the generation they belong to.
    pub(crate) async fn headers(&self) -> Result<(HeaderMap, u64), ClientError> {
        let generation = self.generation.load(Ordering::Acquire);
        let headers = match &self.auth.headers {
            Some(f) => f().await?,
            None => HeaderMap::new(),
        };
        Ok((headers, generation))
    }

    /// After a `401` with headers of `generation`: refresh unless another
    /// request already did. Returns whether a retry can help.
    pub(crate) async fn refresh_after(&self, generation: u64) -> Result<bool, ClientError> {
        let Some(refresh) = &self.auth.refresh else {
            return Ok(false);
        };
        let _guard = self.refreshing.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(true);
        }
        refresh().await?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// How many refreshes ran.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
}
