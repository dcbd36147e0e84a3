//! CORS for browser clients served from another origin.

use http::{HeaderMap, HeaderValue, Method, header};

/// Which cross-origin callers may use the sync routes.
///
/// ```
/// use better_sync::Cors;
/// let cors = Cors::allow_origins(["http://localhost:5173"]).max_age(std::time::Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Option<Vec<String>>,
    credentials: bool,
    max_age_secs: u64,
}

impl Cors {
    /// Allow these exact origins (scheme, host and port).
    pub fn allow_origins<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            origins: Some(origins.into_iter().map(Into::into).collect()),
            credentials: false,
            max_age_secs: 600,
        }
    }

    /// Allow every origin. Bearer tokens are still required; cookies are not sent.
    pub fn any_origin() -> Self {
        Self {
            origins: None,
            credentials: false,
            max_age_secs: 600,
        }
    }

    /// Let browsers send cookies (only with an explicit origin list).
    #[must_use]
    pub fn allow_credentials(mut self, yes: bool) -> Self {
        self.credentials = yes && self.origins.is_some();
        self
    }

    /// How long browsers may cache a preflight answer (default 10 minutes;
    /// whole seconds, as `Access-Control-Max-Age` says it).
    #[must_use]
    pub fn max_age(mut self, max_age: std::time::Duration) -> Self {
        self.max_age_secs = max_age.as_secs();
        self
    }

    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|o| o == origin),
        }
    }

    /// Headers for a response to a request from `origin`.
    pub(crate) fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin else { return };
        let Ok(text) = origin.to_str() else { return };
        if !self.allows(text) {
            return;
        }
        let value = if self.origins.is_none() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }

    /// Extra headers of a preflight answer.
    pub(crate) fn preflight(&self, headers: &mut HeaderMap, methods: &[Method]) {
        let methods = methods
            .iter()
            .map(Method::as_str)
            .chain(["OPTIONS"])
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&methods) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-sync-versions"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age_secs),
        );
    }
}
