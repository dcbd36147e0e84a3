//! JWT verification (every key kind, the classic attacks), JWKS caching and
//! rotation against a local JWKS server, and rate limits.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use better_sync::auth::{AuthRequest, Authenticator, Jwt};
use better_sync::testing::{dev_token, sign_hs256};
use better_sync::{ErrorCode, RateLimit};
use common::{Backend, SECRET, TestDb, TestServer, builder, change};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

macro_rules! key {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/keys/",
            $name
        ))
    };
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims() -> Value {
    json!({"sub": "alice", "tenant": "acme", "exp": now() + 600, "roles": ["editor"]})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).expect("sign")
}

fn bearer(token: &str) -> AuthRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    AuthRequest {
        method: http::Method::GET,
        uri: "/api/sync/pull".parse().expect("uri"),
        headers,
        identity: None,
    }
}

async fn verdict(jwt: &Jwt, token: &str) -> Result<String, ErrorCode> {
    jwt.authenticate(&bearer(token))
        .await
        .map(|id| id.user_id.unwrap_or_default())
        .map_err(|e| e.code())
}

#[tokio::test]
async fn every_key_kind_verifies_its_own_tokens_only() {
    let rsa = EncodingKey::from_rsa_pem(key!("rsa.pem")).expect("rsa");
    let ec256 = EncodingKey::from_ec_pem(key!("ec256.pem")).expect("ec256");
    let ec384 = EncodingKey::from_ec_pem(key!("ec384.pem")).expect("ec384");
    let ed = EncodingKey::from_ed_pem(key!("ed25519.pem")).expect("ed");
    let cases: Vec<(Jwt, String)> = vec![
        (
            Jwt::rsa_pem(Algorithm::RS256, key!("rsa.pub.pem")).expect("jwt"),
            sign(Algorithm::RS256, None, &rsa, &claims()),
        ),
        (
            Jwt::rsa_pem(Algorithm::RS512, key!("rsa.pub.pem")).expect("jwt"),
            sign(Algorithm::RS512, None, &rsa, &claims()),
        ),
        (
            Jwt::rsa_pem(Algorithm::PS256, key!("rsa.pub.pem")).expect("jwt"),
            sign(Algorithm::PS256, None, &rsa, &claims()),
        ),
        (
            Jwt::ec_pem(Algorithm::ES256, key!("ec256.pub.pem")).expect("jwt"),
            sign(Algorithm::ES256, None, &ec256, &claims()),
        ),
        (
            Jwt::ec_pem(Algorithm::ES384, key!("ec384.pub.pem")).expect("jwt"),
            sign(Algorithm::ES384, None, &ec384, &claims()),
        ),
        (
            Jwt::ed_pem(key!("ed25519.pub.pem")).expect("jwt"),
            sign(Algorithm::EdDSA, None, &ed, &claims()),
        ),
        (
            Jwt::hmac(Algorithm::HS512, b"k").expect("jwt"),
            sign(
                Algorithm::HS512,
                None,
                &EncodingKey::from_secret(b"k"),
                &claims(),
            ),
        ),
    ];
    for (i, (jwt, token)) in cases.iter().enumerate() {
        assert_eq!(verdict(jwt, token).await, Ok("alice".into()), "case {i}");
        // Every other case's token is refused: wrong algorithm or wrong key.
        for (j, (_, other)) in cases.iter().enumerate() {
            if i != j {
                assert_eq!(
                    verdict(jwt, other).await,
                    Err(ErrorCode::Unauthorized),
                    "case {i} accepted token {j}"
                );
            }
        }
    }
    let id = cases[0]
        .0
        .authenticate(&bearer(&cases[0].1))
        .await
        .expect("identity");
    assert_eq!(
        (id.tenant_id.as_deref(), id.roles.as_slice()),
        (Some("acme"), ["editor".to_owned()].as_slice())
    );
    // Keys and algorithms that do not fit are configuration errors.
    assert!(Jwt::rsa_pem(Algorithm::ES256, key!("rsa.pub.pem")).is_err());
    assert!(Jwt::ec_pem(Algorithm::ES256, key!("rsa.pub.pem")).is_err());
    assert!(Jwt::hmac(Algorithm::RS256, b"k").is_err());
}

#[tokio::test]
async fn classic_attacks_are_refused() {
    let rsa_jwt = Jwt::rsa_pem(Algorithm::RS256, key!("rsa.pub.pem")).expect("jwt");
    let rsa = EncodingKey::from_rsa_pem(key!("rsa.pem")).expect("rsa");

    // alg: none, unsigned.
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    for none in [format!("{head}.{body}."), format!("{head}.{body}")] {
        assert_eq!(verdict(&rsa_jwt, &none).await, Err(ErrorCode::Unauthorized));
        assert_eq!(
            verdict(&Jwt::hs256(b"k"), &none).await,
            Err(ErrorCode::Unauthorized)
        );
    }
    // Algorithm confusion: the RSA public key used as an HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(key!("rsa.pub.pem")),
        &claims(),
    );
    assert_eq!(
        verdict(&rsa_jwt, &confused).await,
        Err(ErrorCode::Unauthorized)
    );

    let good = sign(Algorithm::RS256, None, &rsa, &claims());
    assert!(verdict(&rsa_jwt, &good).await.is_ok());
    // Bad signature: a claim changed after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_body = URL_SAFE_NO_PAD
        .encode(json!({"sub": "admin", "tenant": "acme", "exp": now() + 600}).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
    assert_eq!(
        verdict(&rsa_jwt, &forged).await,
        Err(ErrorCode::Unauthorized)
    );
    // Signed by another RSA key.
    let other = sign(
        Algorithm::RS256,
        None,
        &EncodingKey::from_rsa_pem(key!("rsa2.pem")).expect("rsa2"),
        &claims(),
    );
    assert_eq!(
        verdict(&rsa_jwt, &other).await,
        Err(ErrorCode::Unauthorized)
    );

    // Time and audience checks, with a 5 s leeway.
    let jwt = Jwt::hs256(b"k")
        .issuer("https://iss")
        .audience("sync")
        .leeway(std::time::Duration::from_secs(5));
    let base = json!({"sub": "a", "tenant": "t", "iss": "https://iss", "aud": "sync"});
    let with = |extra: Value| {
        let mut c = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        sign_hs256(b"k", &c)
    };
    assert!(
        verdict(&jwt, &with(json!({"exp": now() + 60})))
            .await
            .is_ok()
    );
    assert!(
        verdict(&jwt, &with(json!({"exp": now() - 2})))
            .await
            .is_ok(),
        "within leeway"
    );
    for (what, token) in [
        ("expired", with(json!({"exp": now() - 60}))),
        ("no exp", with(json!({}))),
        (
            "not yet valid",
            with(json!({"exp": now() + 600, "nbf": now() + 60})),
        ),
        (
            "wrong issuer",
            with(json!({"exp": now() + 60, "iss": "https://evil"})),
        ),
        (
            "wrong audience",
            with(json!({"exp": now() + 60, "aud": "other"})),
        ),
        ("garbage", "a.b.c".to_owned()),
        ("empty", String::new()),
    ] {
        assert_eq!(
            verdict(&jwt, &token).await,
            Err(ErrorCode::Unauthorized),
            "{what}"
        );
    }
}

/// A JWKS endpoint on 127.0.0.1 whose document the test can change, counting fetches.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let doc = Arc::new(Mutex::new(JwkSet { keys }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (d, f) = (doc.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (d, f) = (d.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::to_string(&*d.lock().expect("lock")).expect("json");
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self {
            url,
            doc,
            fetches,
            task,
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    jwk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_cached_rotated_and_refetched_at_a_bounded_rate() {
    let k1 = EncodingKey::from_rsa_pem(key!("rsa.pem")).expect("k1");
    let k2 = EncodingKey::from_rsa_pem(key!("rsa2.pem")).expect("k2");
    let ec = EncodingKey::from_ec_pem(key!("ec256.pem")).expect("ec");
    let server = JwksServer::start(vec![
        jwk(&k1, Algorithm::RS256, "k1"),
        jwk(&ec, Algorithm::ES256, "e1"),
    ])
    .await;
    let jwt = Jwt::jwks(&server.url)
        .algorithms(&[Algorithm::RS256, Algorithm::ES256])
        .jwks_min_refetch(Duration::from_millis(300))
        .jwks_ttl(Duration::from_secs(3600));

    assert_eq!(
        verdict(&jwt, &sign(Algorithm::RS256, Some("k1"), &k1, &claims())).await,
        Ok("alice".into())
    );
    assert_eq!(
        verdict(&jwt, &sign(Algorithm::ES256, Some("e1"), &ec, &claims())).await,
        Ok("alice".into())
    );
    for _ in 0..20 {
        assert!(
            verdict(&jwt, &sign(Algorithm::RS256, Some("k1"), &k1, &claims()))
                .await
                .is_ok()
        );
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "keys are cached");
    // A token without kid, or signed with k1 but naming e1, is refused.
    assert!(
        verdict(&jwt, &sign(Algorithm::RS256, None, &k1, &claims()))
            .await
            .is_err()
    );
    assert!(
        verdict(&jwt, &sign(Algorithm::RS256, Some("e1"), &k1, &claims()))
            .await
            .is_err()
    );

    // Rotation: the issuer publishes k2 and drops k1.
    *server.doc.lock().expect("lock") = JwkSet {
        keys: vec![jwk(&k2, Algorithm::RS256, "k2")],
    };
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        verdict(&jwt, &sign(Algorithm::RS256, Some("k2"), &k2, &claims())).await,
        Ok("alice".into())
    );
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "an unknown kid triggers one refetch"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        verdict(&jwt, &sign(Algorithm::RS256, Some("k1"), &k1, &claims())).await,
        Err(ErrorCode::Unauthorized),
        "a retired key no longer verifies"
    );

    // A flood of unknown kids cannot make the server fetch more than the rate allows.
    let before = server.fetches.load(Ordering::SeqCst);
    for i in 0..50 {
        let t = sign(
            Algorithm::RS256,
            Some(&format!("random-{i}")),
            &k1,
            &claims(),
        );
        assert_eq!(verdict(&jwt, &t).await, Err(ErrorCode::Unauthorized));
    }
    assert!(
        server.fetches.load(Ordering::SeqCst) - before <= 1,
        "refetches are rate-limited"
    );

    // An algorithm outside the pinned set is refused even with a known key.
    let only_es = Jwt::jwks(&server.url).algorithms(&[Algorithm::ES256]);
    assert_eq!(
        verdict(
            &only_es,
            &sign(Algorithm::RS256, Some("k2"), &k2, &claims())
        )
        .await,
        Err(ErrorCode::Unauthorized)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_cache_expires_after_its_ttl() {
    let k1 = EncodingKey::from_rsa_pem(key!("rsa.pem")).expect("k1");
    let server = JwksServer::start(vec![jwk(&k1, Algorithm::RS256, "k1")]).await;
    let jwt = Jwt::jwks(&server.url)
        .jwks_ttl(Duration::from_millis(200))
        .jwks_min_refetch(Duration::from_millis(10));
    let token = sign(Algorithm::RS256, Some("k1"), &k1, &claims());
    assert!(verdict(&jwt, &token).await.is_ok());
    assert!(verdict(&jwt, &token).await.is_ok());
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(verdict(&jwt, &token).await.is_ok());
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "a stale cache is refetched"
    );
    // The JWKS endpoint going down keeps the cached keys in service.
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(verdict(&jwt, &token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_triggers_and_recovers() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = builder(&db.db)
        .rate_limit(RateLimit::per_user(4.0, 3))
        .rate_limit(RateLimit::per_address(1000.0, 1000).trust_forwarded_for(true))
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let a = server.client("alice", "acme");
    for _ in 0..3 {
        assert_eq!(a.pull("").await.status, 200);
    }
    let limited = a.pull("").await;
    assert_eq!((limited.status, limited.code()), (429, "SYNC:RATE_LIMITED"));
    let retry_ms = limited.body["meta"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    assert!(retry_ms > 0 && retry_ms <= 1000, "{retry_ms}");
    assert!(limited.headers.get("retry-after").is_some());
    // Pushes count too, and write nothing while limited.
    let push = a
        .push(json!([change(
            "r1",
            "todo",
            "1",
            "insert",
            json!({}),
            "2026-01-01T00:00:00.000Z",
            "a"
        )]))
        .await;
    assert_eq!(push.status, 429);
    assert_eq!(db.counts().await.0, 0);
    // Another user is not affected.
    assert_eq!(server.client("bob", "acme").pull("").await.status, 200);
    // After the advertised wait, requests pass again.
    tokio::time::sleep(Duration::from_millis(retry_ms + 50)).await;
    assert_eq!(a.pull("").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_rate_limit_covers_public_routes_and_websocket_handshakes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sync = builder(&db.db)
        .rate_limit(RateLimit::per_address(0.5, 2).trust_forwarded_for(true))
        .build()
        .expect("build");
    let server = TestServer::start(sync).await;
    let get = |ip: &'static str| {
        server
            .http
            .get(server.url("/api/sync/sync.json"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(get("10.0.0.1").await.expect("req").status(), 200);
    assert_eq!(get("10.0.0.1").await.expect("req").status(), 200);
    let limited = get("10.0.0.1").await.expect("req");
    assert_eq!(limited.status(), 429);
    assert_eq!(
        get("10.0.0.2").await.expect("req").status(),
        200,
        "other addresses are not affected"
    );
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/sync/ws", server.addr)
        .into_client_request()
        .expect("req");
    req.headers_mut()
        .insert("x-forwarded-for", "10.0.0.1".parse().expect("h"));
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", dev_token(SECRET, "a", "acme", 60))
            .parse()
            .expect("h"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!(
            "expected a 429 handshake refusal, got {:?}",
            other.map(|_| ())
        ),
    }
}
