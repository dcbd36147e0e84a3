//! `sync.json` metadata and the OpenAPI 3 document, both built from the route table.

use serde_json::{Map, Value, json};

use super::HttpConfig;
use super::routes::RouteKind;
use crate::engine::Engine;
use crate::error::ErrorCode;
use better_sync_core::protocol::PROTOCOL_VERSION;

/// The `sync.json` document: protocol version, features, base path, methods.
pub(crate) fn metadata(engine: &Engine, http: &HttpConfig) -> Value {
    let base = &http.base_path;
    let methods: Map<String, Value> = http
        .routes()
        .map(|r| {
            (
                name(r.kind).to_owned(),
                json!({ "method": r.method.as_str(), "path": format!("{base}{}", r.path), "auth": r.auth }),
            )
        })
        .collect();
    let l = &engine.limits;
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "basePath": base,
        "features": ["push", "pull", "snapshot", "long-poll", "websocket", "lww-field", "hlc", "idempotent-push", "opaque-cursor", "ws-ticket", "cursor-stale", "erasure", "model-versions", "shape-bootstrap", "shape-subscribe", "shape-pull"],
        "heartbeatSecs": http.heartbeat.as_secs_f64(),
        "conflict": "lww",
        "methods": methods,
        "models": engine.models.as_ref().map(|m| m.iter().collect::<Vec<_>>()),
        "schemas": engine.typed.schemas(),
        "versions": engine.versions.document(),
        "shapes": shapes_document(engine),
        "retention": engine.compactor.as_ref().map(|c| {
            let p = &c.policy;
            json!({
                "maxAgeSecs": p.max_age.map(|a| a.as_secs()),
                "maxEntriesPerTenant": p.max_entries,
                "tombstoneSecs": p.tombstones.as_secs(),
            })
        }),
        "limits": {
            "maxBodyBytes": l.max_body_bytes,
            "maxBatch": l.max_batch,
            "maxPayloadBytes": l.max_payload_bytes,
            "maxPullLimit": l.max_pull_limit,
            "maxPullBytes": l.max_pull_bytes,
            "maxWsMessageBytes": l.max_ws_message_bytes,
            "maxSubscriptions": l.max_subscriptions,
            "maxSnapshotLimit": l.max_snapshot_limit,
            "maxClockSkewMs": l.max_clock_skew.as_millis() as u64,
            "maxWaitSecs": l.max_wait.as_secs(),
        },
    })
}

/// The OpenAPI 3.0 document of every HTTP operation the engine serves.
pub(crate) fn document(engine: &Engine, http: &HttpConfig) -> Value {
    let base = &http.base_path;
    let mut paths = Map::new();
    for r in http.routes() {
        let mut op = operation(r.kind);
        if r.auth {
            op["security"] = if r.kind == RouteKind::WebSocket {
                // Or the access_token / ticket query parameter instead.
                json!([{ "bearer": [] }, {}])
            } else {
                json!([{ "bearer": [] }])
            };
            let responses = op["responses"].as_object_mut();
            if let Some(responses) = responses {
                responses.insert("401".into(), error_ref());
                responses.insert("403".into(), error_ref());
                responses.insert("503".into(), error_ref());
            }
        }
        let entry = paths
            .entry(format!("{base}{}", r.path))
            .or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    // With registered models, a `model` parameter is one of them, and a
    // `shape` one of the shapes.
    let shapes: Vec<&str> = engine.shapes.iter().map(|s| s.name()).collect();
    for route in ["snapshot", "pull", "inspector/row"] {
        let Some(params) = paths
            .get_mut(&format!("{base}/{route}"))
            .and_then(|p| p["get"]["parameters"].as_array_mut())
        else {
            continue;
        };
        for p in params.iter_mut() {
            if p["name"] == "model"
                && let Some(models) = &engine.models
            {
                p["schema"]["enum"] = json!(models);
            }
            if p["name"] == "shape" && !shapes.is_empty() {
                p["schema"]["enum"] = json!(shapes);
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "better-sync",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Local-first sync protocol: push changes, pull them by opaque cursor, bootstrap from snapshots. See docs/PROTOCOL.md.",
        },
        "paths": paths,
        "components": components(engine),
    })
}

fn name(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::Metadata => "metadata",
        RouteKind::OpenApi => "openapi",
        RouteKind::Push => "push",
        RouteKind::Pull => "pull",
        RouteKind::Snapshot => "snapshot",
        RouteKind::WebSocket => "ws",
        RouteKind::ClientJs => "clientJs",
        RouteKind::ClientModule => "clientModule",
        RouteKind::Health => "health",
        RouteKind::WsTicket => "wsTicket",
        RouteKind::InspectorPage => "inspector",
        RouteKind::InspectorLog => "inspectorLog",
        RouteKind::InspectorSessions => "inspectorSessions",
        RouteKind::InspectorRow => "inspectorRow",
        RouteKind::ModelTypes => "modelTypes",
    }
}

fn error_ref() -> Value {
    json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(schema: &str) -> Value {
    json!({ "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// A shape's `params`: the text of a JSON object.
fn shape_params() -> Value {
    json!({"type": "string", "minLength": 2, "example": "{\"project\":\"p1\"}"})
}

fn query(name: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": required, "schema": schema, "description": description })
}

/// The model versions a client announces (PROTOCOL.md, "Model versions").
fn versions_header() -> Value {
    json!({
        "name": "X-Sync-Versions", "in": "header", "required": false,
        "schema": { "type": "string", "pattern": VERSIONS_HEADER_PATTERN, "example": "todo=2" },
        "description": "The model versions the client was built for (model=version, comma-separated); 409 SYNC:VERSION_UNSUPPORTED when the server cannot serve them",
    })
}

/// What the server accepts as model versions (header or query).
const VERSIONS_PATTERN: &str = "^\\s*[A-Za-z0-9_-]{1,64}\\s*=\\s*[1-9][0-9]{0,8}\\s*(,\\s*[A-Za-z0-9_-]{1,64}\\s*=\\s*[1-9][0-9]{0,8}\\s*){0,255}$";

/// The header may also be empty (it then says nothing).
const VERSIONS_HEADER_PATTERN: &str = "^(\\s*|\\s*[A-Za-z0-9_-]{1,64}\\s*=\\s*[1-9][0-9]{0,8}\\s*(,\\s*[A-Za-z0-9_-]{1,64}\\s*=\\s*[1-9][0-9]{0,8}\\s*){0,255})$";

/// A positive integer query parameter (parsed as a `u64`).
fn positive_integer() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": u64::MAX})
}

/// A text query parameter (the server refuses an empty one).
fn text() -> Value {
    json!({"type": "string", "minLength": 1})
}

fn versions_query() -> Value {
    query(
        "versions",
        false,
        json!({"type": "string", "minLength": 1, "pattern": VERSIONS_PATTERN, "example": "todo=2"}),
        "X-Sync-Versions as a query parameter, for clients that cannot set headers (the WebSocket)",
    )
}

fn operation(kind: RouteKind) -> Value {
    let mut op = operation_without_versions(kind);
    if matches!(
        kind,
        RouteKind::Push | RouteKind::Pull | RouteKind::Snapshot | RouteKind::WebSocket
    ) {
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let mut params = params;
        params.push(versions_header());
        params.push(versions_query());
        op["parameters"] = Value::Array(params);
        op["responses"]["409"] = error_ref();
    }
    op
}

fn operation_without_versions(kind: RouteKind) -> Value {
    match kind {
        RouteKind::ModelTypes => json!({
            "operationId": "modelTypes",
            "summary": "TypeScript declarations of the models: an interface per typed model (from its JSON Schema), a Models map and the model versions",
            "responses": {
                "200": { "description": "OK", "content": { "application/typescript": { "schema": { "type": "string" } } } },
            },
        }),
        RouteKind::Metadata => json!({
            "operationId": "metadata",
            "summary": "Protocol version, features, base path, methods and retention; with a bearer token, the tenant's log horizon",
            "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } } },
        }),
        RouteKind::OpenApi => json!({
            "operationId": "openapi",
            "summary": "This document",
            "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } } },
        }),
        RouteKind::Push => json!({
            "operationId": "push",
            "summary": "Apply a batch of changes, all or nothing, idempotent by op_id",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PushRequest" } } } },
            "responses": {
                "200": ok("PushResponse"),
                "400": error_ref(), "409": error_ref(), "413": error_ref(), "422": error_ref(), "429": error_ref(),
            },
        }),
        RouteKind::Pull => json!({
            "operationId": "pull",
            "summary": "Changes after a cursor; with wait, a long-poll (the HTTP fallback of the WebSocket)",
            "parameters": [
                query("cursor", false, json!({"type": "string", "minLength": 1, "maxLength": 128}), "Opaque cursor from a previous pull or snapshot (signed by the server: any other text is 400 SYNC:INVALID_CURSOR); absent = from the start"),
                query("limit", false, positive_integer(), "Most changes to return (capped by the server)"),
                query("wait", false, json!({"type": "number", "minimum": 0, "maximum": 86_400}), "Seconds to wait for a change when there is none (capped by maxWaitSecs)"),
                query("shape", false, text(), "Follow a shape instead of the log: rows and retracts instead of changes (PROTOCOL.md 16.5)"),
                query("params", false, shape_params(), "The shape's parameters, a JSON object of the types sync.json's shapes declare (422 SYNC:INVALID_SHAPE_PARAMS otherwise)"),
            ],
            "responses": { "200": ok("PullResponse"), "400": error_ref(), "409": error_ref(), "422": error_ref(), "429": error_ref() },
        }),
        RouteKind::WebSocket => json!({
            "operationId": "ws",
            "summary": "WebSocket: subscribe from a cursor and receive changes as they commit (see docs/PROTOCOL.md)",
            "description": "Client sends {\"type\":\"subscribe\",\"cursor\"?}; server sends {\"type\":\"changes\"|\"synced\"|\"error\"}. Heartbeat by WebSocket ping/pong. The bearer token may be given as the access_token query parameter.",
            "parameters": [
                query("access_token", false, json!({"type": "string"}), "Bearer token, for clients that cannot set headers on a WebSocket"),
                query("ticket", false, json!({"type": "string"}), "A single-use ticket from POST ws/ticket, instead of the token (keeps it out of the URL)"),
            ],
            "responses": {
                "101": { "description": "Switching Protocols: the WebSocket session starts" },
                "400": error_ref(),
                "426": error_ref(),
            },
        }),
        RouteKind::ClientJs => json!({
            "operationId": "clientJs",
            "summary": "The browser client: a dependency-free ES module (createSyncClient, idb, rpc, ws)",
            "responses": {
                "200": { "description": "OK", "content": { "text/javascript": { "schema": { "type": "string" } } } },
                "304": { "description": "Not modified (If-None-Match matched the ETag)" },
            },
        }),
        RouteKind::WsTicket => json!({
            "operationId": "wsTicket",
            "summary": "A single-use ticket, good for 30 s on this instance, for opening B/ws?ticket=T without the token in the URL (browsers cannot set WebSocket headers)",
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["ticket", "expiresInSecs"],
                    "properties": {
                        "ticket": { "type": "string" },
                        "expiresInSecs": { "type": "integer" },
                    },
                } } } },
                "429": error_ref(),
            },
        }),
        RouteKind::InspectorPage => json!({
            "operationId": "inspector",
            "summary": "The inspector page (a development tool, enabled on the builder): the data routes below need a token with the inspector role",
            "responses": {
                "200": { "description": "OK", "content": { "text/html": { "schema": { "type": "string" } } } },
                "304": { "description": "Not modified (If-None-Match matched the ETag)" },
            },
        }),
        RouteKind::InspectorLog => json!({
            "operationId": "inspectorLog",
            "summary": "The caller's tenant's latest log entries, newest first (inspector role)",
            "parameters": [
                query("before", false, positive_integer(), "Only entries with a smaller seq (the `before` of the previous page)"),
                query("limit", false, positive_integer(), "Most entries (default 100; more than 500 give 500)"),
            ],
            "responses": { "200": ok("InspectorAnswer"), "400": error_ref() },
        }),
        RouteKind::InspectorSessions => json!({
            "operationId": "inspectorSessions",
            "summary": "This instance's live WebSocket sessions of the caller's tenant (inspector role)",
            "responses": { "200": ok("InspectorAnswer") },
        }),
        RouteKind::InspectorRow => json!({
            "operationId": "inspectorRow",
            "summary": "A row's state, the stamp of every field, and the writes that lost to it with the reason (inspector role)",
            "parameters": [
                query("model", true, text(), "Model name"),
                query("id", true, text(), "Row id"),
            ],
            "responses": { "200": ok("InspectorAnswer"), "400": error_ref(), "422": error_ref() },
        }),
        RouteKind::Health => json!({
            "operationId": "health",
            "summary": "Liveness (probe=live: the process serves) or readiness (default: the database answers, the live fan-out runs, the commit listener is connected); no credentials, no tenant data",
            "parameters": [
                query("probe", false, json!({"type": "string", "enum": ["live", "ready"]}), "live or ready (default)"),
            ],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
                "400": error_ref(),
                "503": { "description": "Not ready", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
            },
        }),
        RouteKind::ClientModule => json!({
            "operationId": "clientModule",
            "summary": "A module the browser client imports (client.js loads them relative to itself)",
            "parameters": [{
                "name": "module",
                "in": "path",
                "required": true,
                "schema": { "type": "string", "enum": crate::http::client_assets::CLIENT_MODULES.iter().map(|(name, _)| *name).collect::<Vec<_>>() },
                "description": "File name of the module, e.g. hlc.js",
            }],
            "responses": {
                "200": { "description": "OK", "content": { "text/javascript": { "schema": { "type": "string" } } } },
                "304": { "description": "Not modified (If-None-Match matched the ETag)" },
                "404": error_ref(),
            },
        }),
        RouteKind::Snapshot => json!({
            "operationId": "snapshot",
            "summary": "Current rows of a model, paged by id, with the cursor to pull from afterwards",
            "parameters": [
                query("model", false, text(), "Model name (required unless shape is given; with a shape, its model)"),
                query("shape", false, text(), "A shape's name (sync.json shapes): bootstrap only its rows (PROTOCOL.md 16.2)"),
                query("params", false, shape_params(), "The shape's parameters, a JSON object of the types sync.json's shapes declare (422 SYNC:INVALID_SHAPE_PARAMS otherwise)"),
                query("after", false, text(), "Return rows with id greater than this (next_after of the previous page)"),
                query("limit", false, positive_integer(), "Most rows to return (capped by the server)"),
            ],
            "responses": { "200": ok("SnapshotResponse"), "400": error_ref(), "422": error_ref(), "429": error_ref() },
        }),
    }
}

fn components(engine: &Engine) -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut components = base_components(&codes, engine.limits.max_batch);
    // With registered models, a change's model is one of them.
    if let Some(models) = &engine.models {
        components["schemas"]["Change"]["properties"]["model"]["enum"] = json!(models);
    }
    // Each typed model's payload schema, `Model.<name>` (the whole row; an
    // update's payload is any part of it).
    if let Some(schemas) = components["schemas"].as_object_mut() {
        for (name, schema) in engine.typed.openapi() {
            schemas.insert(name, schema);
        }
    }
    components
}

/// A key text: no control character (what the server refuses).
const NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$";

fn base_components(codes: &[&str], max_batch: usize) -> Value {
    json!({
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
        "schemas": {
            "InspectorAnswer": {
                "type": "object",
                "description": "See docs/PROTOCOL.md section 2.7",
            },
            "Health": {
                "type": "object",
                "required": ["status", "probe"],
                "properties": {
                    "status": { "type": "string", "enum": ["ok", "unavailable"] },
                    "probe": { "type": "string", "enum": ["live", "ready"] },
                    "checks": {
                        "type": "object",
                        "description": "Readiness only: database (ok, latencyMs or error), fanout (ok, started, running), listener (ok, present, connected)",
                    },
                },
            },
            "Change": {
                "type": "object",
                "required": ["op_id", "model", "pk", "op", "updated_at"],
                "properties": {
                    "op_id": { "type": "string", "minLength": 1, "maxLength": 128, "pattern": NO_CONTROL, "description": "Client-made unique id, the idempotency key (at most 128 bytes of UTF-8)" },
                    "model": { "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$" },
                    "pk": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": NO_CONTROL, "description": "Primary key (at most 255 bytes of UTF-8)" },
                    "op": { "type": "string", "enum": ["insert", "update", "delete"] },
                    "payload": { "description": "The row (insert), the changed fields (update), ignored (delete)" },
                    "updated_at": { "type": "string", "maxLength": 40, "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?(Z(-[0-9A-Fa-f]{1,4})?|z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$", "description": "Hybrid logical clock: ISO-8601 time, optionally followed by -CCCC (hex counter); also refused when more than maxClockSkewMs ahead of the server's clock" },
                    "actor": { "type": "string", "maxLength": 255, "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$", "description": "Replica id; empty or absent: the user (at most 255 bytes of UTF-8)" },
                },
                // What the payload must be depends on the op.
                "oneOf": [
                    { "required": ["payload"], "properties": { "op": { "enum": ["insert"] }, "payload": { "type": "object" } } },
                    { "required": ["payload"], "properties": { "op": { "enum": ["update"] }, "payload": { "type": "object", "minProperties": 1 } } },
                    { "properties": { "op": { "enum": ["delete"] } } },
                ],
            },
            "PulledChange": {
                "allOf": [ { "$ref": "#/components/schemas/Change" }, { "type": "object", "required": ["seq"], "properties": { "seq": { "type": "integer" } } } ],
            },
            "PushRequest": {
                "type": "object",
                "required": ["changes"],
                "properties": {
                    "client_id": { "type": "string", "nullable": true, "description": "The pushing replica, for logs; null or absent is the same as empty" },
                    "changes": { "type": "array", "maxItems": max_batch, "items": { "$ref": "#/components/schemas/Change" } },
                },
            },
            "ChangeResult": {
                "type": "object",
                "required": ["op_id", "status", "seq"],
                "properties": {
                    "op_id": { "type": "string" },
                    "status": { "type": "string", "enum": ["applied"] },
                    "seq": { "type": "integer" },
                    "duplicate": { "type": "boolean", "description": "The op id was applied before; nothing was written now" },
                },
            },
            "PushResponse": {
                "type": "object",
                "required": ["results", "cursor"],
                "properties": {
                    "results": { "type": "array", "items": { "$ref": "#/components/schemas/ChangeResult" } },
                    "cursor": { "type": "string" },
                },
            },
            "PullResponse": {
                "type": "object",
                "required": ["changes", "cursor", "has_more"],
                "properties": {
                    "changes": { "type": "array", "items": { "$ref": "#/components/schemas/PulledChange" } },
                    "cursor": { "type": "string" },
                    "has_more": { "type": "boolean" },
                },
            },
            "SnapshotRow": {
                "type": "object",
                "required": ["id", "value", "deleted", "clocks"],
                "properties": {
                    "id": { "type": "string" },
                    "value": { "type": "object" },
                    "deleted": { "type": "boolean" },
                    "clocks": { "type": "object", "description": "Conflict-resolution stamps: {t, i, f}" },
                },
            },
            "SnapshotResponse": {
                "type": "object",
                "required": ["model", "rows", "cursor", "has_more"],
                "properties": {
                    "model": { "type": "string" },
                    "rows": { "type": "array", "items": { "$ref": "#/components/schemas/SnapshotRow" } },
                    "cursor": { "type": "string" },
                    "has_more": { "type": "boolean" },
                    "next_after": { "type": "string" },
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "enum": codes },
                            "message": { "type": "string" },
                            "helpUrl": { "type": "string" },
                        },
                    },
                    "meta": { "type": "object" },
                },
            },
        },
    })
}

/// `sync.json`'s `shapes`: each shape's model, parameters and the models its
/// lookups read; `null` when none is defined.
fn shapes_document(engine: &Engine) -> Value {
    if engine.shapes.is_empty() {
        return Value::Null;
    }
    Value::Object(
        engine
            .shapes
            .iter()
            .map(|s| {
                let params: serde_json::Map<String, Value> = s
                    .params()
                    .map(|(name, ty)| (name.to_owned(), Value::from(ty.as_str())))
                    .collect();
                (
                    s.name().to_owned(),
                    json!({ "model": s.model(), "params": params, "lookups": s.lookup_models() }),
                )
            })
            .collect(),
    )
}
