//! The route table: one list that both the router and the OpenAPI document use.

use http::Method;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouteKind {
    /// `GET sync.json`
    Metadata,
    /// `GET openapi.json`
    OpenApi,
    /// `POST push`
    Push,
    /// `GET pull`
    Pull,
    /// `GET snapshot`
    Snapshot,
    /// `GET ws` (WebSocket upgrade)
    WebSocket,
    /// `POST ws/ticket`: a single-use ticket for opening `ws` without a token in the URL
    WsTicket,
    /// `GET client.js`: the browser client module
    ClientJs,
    /// `GET lib/{module}`: a module the browser client imports
    ClientModule,
    /// `GET health`: liveness and readiness
    Health,
    /// `GET inspector`: the inspector page (when enabled)
    InspectorPage,
    /// `GET inspector/log`: the tenant's recent log (inspector)
    InspectorLog,
    /// `GET inspector/sessions`: this instance's live sessions (inspector)
    InspectorSessions,
    /// `GET inspector/row`: a row's state and its field decisions (inspector)
    InspectorRow,
    /// `GET models.d.ts`: TypeScript declarations of the models
    ModelTypes,
}

/// One route under the base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// Path relative to the base path, starting with `/`.
    pub path: &'static str,
    /// What it does.
    pub kind: RouteKind,
    /// Whether it needs credentials.
    pub auth: bool,
}

/// Every route the engine serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/sync.json",
        kind: RouteKind::Metadata,
        auth: false,
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        kind: RouteKind::OpenApi,
        auth: false,
    },
    Route {
        method: Method::POST,
        path: "/push",
        kind: RouteKind::Push,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/pull",
        kind: RouteKind::Pull,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/snapshot",
        kind: RouteKind::Snapshot,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/ws",
        kind: RouteKind::WebSocket,
        auth: true,
    },
    Route {
        method: Method::POST,
        path: "/ws/ticket",
        kind: RouteKind::WsTicket,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/client.js",
        kind: RouteKind::ClientJs,
        auth: false,
    },
    Route {
        method: Method::GET,
        path: "/models.d.ts",
        kind: RouteKind::ModelTypes,
        auth: false,
    },
    Route {
        method: Method::GET,
        path: "/health",
        kind: RouteKind::Health,
        auth: false,
    },
    Route {
        method: Method::GET,
        path: "/inspector",
        kind: RouteKind::InspectorPage,
        auth: false,
    },
    Route {
        method: Method::GET,
        path: "/inspector/log",
        kind: RouteKind::InspectorLog,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/inspector/sessions",
        kind: RouteKind::InspectorSessions,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/inspector/row",
        kind: RouteKind::InspectorRow,
        auth: true,
    },
    Route {
        method: Method::GET,
        path: "/lib/{module}",
        kind: RouteKind::ClientModule,
        auth: false,
    },
];

impl RouteKind {
    /// Whether the route belongs to the inspector (served only when enabled).
    pub fn is_inspector(self) -> bool {
        matches!(
            self,
            Self::InspectorPage | Self::InspectorLog | Self::InspectorSessions | Self::InspectorRow
        )
    }
}

impl Route {
    /// Whether this route serves `sub` (a path below the base path). A
    /// path ending in `{param}` takes one more segment there.
    pub fn matches(&self, sub: &str) -> bool {
        match self.path.split_once('{') {
            Some((prefix, _)) => sub
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
            None => self.path == sub,
        }
    }
}

/// The route serving `method` on `path` under `base`, if any.
pub fn route_of(base: &str, path: &str, method: &Method) -> Option<&'static Route> {
    let sub = strip_base(base, path)?;
    ROUTES.iter().find(|r| r.matches(sub) && r.method == method)
}

/// The part of `path` below `base`, matching whole segments only:
/// `/api/sync/push` under `/api/sync` is `/push`, `/api/syncx` is not under it.
///
/// ```
/// use better_sync::adapter::strip_base;
/// assert_eq!(strip_base("/api/sync", "/api/sync/push"), Some("/push"));
/// assert_eq!(strip_base("/api/sync", "/api/sync"), Some(""));
/// assert_eq!(strip_base("/api/sync", "/api/syncx"), None);
/// ```
pub fn strip_base<'a>(base: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_base_table() {
        let cases = [
            ("/api/sync", "/api/sync", Some("")),
            ("/api/sync", "/api/sync/", Some("/")),
            ("/api/sync", "/api/sync/push", Some("/push")),
            ("/api/sync", "/api/sync/a/b", Some("/a/b")),
            ("/api/sync", "/api/syncx", None),
            ("/api/sync", "/api/syn", None),
            ("/api/sync", "/api", None),
            ("/api/sync", "/", None),
            ("/api/sync", "/other/api/sync", None),
            ("/sync", "/sync/pull", Some("/pull")),
        ];
        for (base, path, want) in cases {
            assert_eq!(strip_base(base, path), want, "{base} {path}");
        }
    }
}
