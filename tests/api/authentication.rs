//! Forged, expired, mis-addressed and unsigned tokens are refused before any handler
//! runs, and nothing is written.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use dispute_service::grpc::{auth::Claims, pb};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(role: &str) -> Claims {
    Claims {
        sub: "order-service".into(),
        role: role.into(),
        iss: "dispute-dev".into(),
        aud: "dispute-service".into(),
        exp: now() + 600,
        iat: Some(now()),
        nbf: None,
    }
}

fn hs256(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unsigned(claims: &Claims) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[sqlx::test]
async fn bad_tokens_are_unauthenticated_and_write_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut wrong_iss = claims("service");
    wrong_iss.iss = "someone-else".into();
    let mut wrong_aud = claims("service");
    wrong_aud.aud = "another-service".into();
    let mut expired = claims("service");
    expired.exp = now() - 120;
    let forged = hs256(&claims("service"), "not-the-secret-at-all-0123456789");
    let cases = [
        ("no header", None),
        (
            "not bearer",
            Some(format!("Basic {}", hs256(&claims("service"), SECRET))),
        ),
        ("garbage", Some("Bearer not.a.token".to_string())),
        (
            "alg none",
            Some(format!("Bearer {}", unsigned(&claims("service")))),
        ),
        ("forged signature", Some(format!("Bearer {forged}"))),
        (
            "wrong issuer",
            Some(format!("Bearer {}", hs256(&wrong_iss, SECRET))),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", hs256(&wrong_aud, SECRET))),
        ),
        (
            "expired beyond leeway",
            Some(format!("Bearer {}", hs256(&expired, SECRET))),
        ),
        (
            "unknown role",
            Some(format!("Bearer {}", hs256(&claims("admin"), SECRET))),
        ),
    ];
    for (name, header) in cases {
        let mut client = app.client_with_header(header.as_deref()).await;
        let result = client
            .register_order(register_request(
                "order-1",
                app.now() + chrono::Duration::days(1),
            ))
            .await;
        assert_eq!(
            reason(result),
            (Code::Unauthenticated, "UNAUTHENTICATED".into()),
            "{name}"
        );
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[sqlx::test]
async fn a_token_within_the_leeway_is_accepted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut recent = claims("service");
    recent.exp = now() - 10;
    let mut client = app
        .client_with_header(Some(&format!("Bearer {}", hs256(&recent, SECRET))))
        .await;
    assert!(
        client
            .register_order(register_request(
                "order-1",
                app.now() + chrono::Duration::days(1)
            ))
            .await
            .is_ok()
    );
}

/// A token is verified once and then remembered with its expiry (src/grpc/auth.rs): the
/// expiry is still checked at every call, so a token that expires between two calls is
/// refused at the second, as an unremembered one would be.
#[sqlx::test]
async fn a_remembered_token_is_refused_once_it_expires(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut expiring = claims("agent");
    // `exp` may lie up to the leeway (60 s) in the past: valid for about 3 s more.
    expiring.exp = now() - 60 + 3;
    let mut client = app
        .client_with_header(Some(&format!("Bearer {}", hs256(&expiring, SECRET))))
        .await;
    let missing = || pb::GetOrderRequest {
        order_id: "order-1".into(),
    };
    // Authenticated (verified, then remembered); the order does not exist.
    for _ in 0..2 {
        assert_eq!(
            client.get_order(missing()).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        reason(client.get_order(missing()).await),
        (Code::Unauthenticated, "UNAUTHENTICATED".into())
    );
}

#[sqlx::test]
async fn the_actor_comes_from_the_token_not_from_the_request(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    // buyer-2 cannot act on buyer-1's order, whatever metadata it adds.
    let token = dispute_service::grpc::auth::mint_hs256(
        &app.config.auth,
        dispute_service::domain::Role::Buyer,
        "buyer-2",
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let mut client = app
        .client_with_header(Some(&format!("Bearer {token}")))
        .await;
    let mut request = tonic::Request::new(open_request("order-1", pb::Remedy::FullRefund));
    request
        .metadata_mut()
        .insert("x-actor-id", "buyer-1".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-role", "agent".parse().unwrap());
    assert_eq!(
        reason(client.open_dispute(request).await),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
}

#[test]
fn an_eddsa_public_key_or_jwks_verifies_only_tokens_it_signed() {
    use dispute_service::config::{AsymmetricAlgorithm, AuthConfig};
    use dispute_service::grpc::auth::Authenticator;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let private = std::fs::read(dir.join("ed25519-private.pem")).unwrap();
    let config = |pem: Option<&str>, jwks: Option<&str>| AuthConfig {
        jwt_hs256_secret: None,
        jwt_public_key_file: pem.map(|p| dir.join(p)),
        jwt_jwks_file: jwks.map(|p| dir.join(p)),
        jwt_algorithm: AsymmetricAlgorithm::EdDsa,
        jwt_issuer: "dispute-dev".into(),
        jwt_audience: "dispute-service".into(),
        jwt_keys_refresh: std::time::Duration::from_secs(60),
        jwt_keys_min_refresh: std::time::Duration::from_secs(5),
        jwt_max_lifetime: std::time::Duration::from_secs(24 * 3600),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-key-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims("agent"),
        &EncodingKey::from_ed_pem(&private).unwrap(),
    )
    .unwrap();
    let hs = hs256(&claims("agent"), SECRET);
    for config in [
        config(Some("ed25519-public.pem"), None),
        config(None, Some("jwks.json")),
    ] {
        let auth = Authenticator::from_config(&config).unwrap();
        let actor = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(actor.role, dispute_service::domain::Role::Agent);
        // An HS256 token (e.g. signed with the public key as a secret) is refused: the
        // algorithm is pinned.
        assert!(auth.authenticate(Some(&format!("Bearer {hs}"))).is_err());
        assert!(
            auth.authenticate(Some(&format!("Bearer {}", unsigned(&claims("agent")))))
                .is_err()
        );
    }
}

/// The public half of `tests/fixtures/ed25519-private.pem` (kid `test-key-1`) and of
/// `ed25519-2-private.pem` (kid `test-key-2`), as JWKs.
const KEY_1_X: &str = "m2T8EtW1qmLlgR3-SeOyN6ptG3KPWt9vuB5TR_mKsJY";
const KEY_2_X: &str = "VbnpWn4qv-AKcJaUUD6kWszELfdMqFPBwzw4Mj79eLo";

fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, x)| {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// Publishes `text` as `dir/jwks.json` the way the kubelet updates a mounted Secret: a
/// new timestamped directory, then an atomic rename of the `..data` symlink to it.
fn publish(dir: &std::path::Path, version: u32, text: &str) {
    publish_with(dir, version, |file| std::fs::write(file, text).unwrap());
}

/// [`publish`], with `make` creating the new `jwks.json`.
fn publish_with(dir: &std::path::Path, version: u32, make: impl FnOnce(&std::path::Path)) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir(&data).unwrap();
    make(&data.join("jwks.json"));
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    let link = dir.join("jwks.json");
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("..data/jwks.json", &link).unwrap();
    }
}

fn eddsa_token(private_pem: &str, kid: &str, role: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let private = std::fs::read(dir.join(private_pem)).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims(role),
        &EncodingKey::from_ed_pem(&private).unwrap(),
    )
    .unwrap()
}

/// `GetOrder` of a missing order with `token`: NOT_FOUND once authenticated.
async fn get_order(server: &Server, token: &str) -> Result<(), Code> {
    missing_order(
        server
            .client_with_header(Some(&format!("Bearer {token}")))
            .await,
    )
    .await
}

async fn missing_order(mut client: Client) -> Result<(), Code> {
    let request = pb::GetOrderRequest {
        order_id: "order-1".into(),
    };
    client
        .get_order(request)
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

/// Asks until `token` gets `expected` (a key read happens in the background), at most 10 s.
async fn until_answered(server: &Server, token: &str, expected: Result<(), Code>) {
    let started = std::time::Instant::now();
    loop {
        let got = get_order(server, token).await;
        if got == expected {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "still {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn mounted_jwks() -> std::path::PathBuf {
    let mounted = std::env::temp_dir().join(format!("jwks-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir(&mounted).unwrap();
    publish(&mounted, 1, &jwks(&[("test-key-1", KEY_1_X)]));
    mounted
}

fn jwks_config(mounted: &std::path::Path, extra: &[&str]) -> dispute_service::config::ServeConfig {
    let mut args = vec!["--jwt-algorithm", "EdDSA"];
    args.extend_from_slice(extra);
    let mut config = serve_config(&args);
    config.auth.jwt_hs256_secret = None;
    config.auth.jwt_jwks_file = Some(mounted.join("jwks.json"));
    config
}

#[sqlx::test]
async fn rotated_jwks_keys_verify_without_a_restart_and_removed_ones_stop(pool: PgPool) {
    let mounted = mounted_jwks();
    let config = jwks_config(
        &mounted,
        // Only a token naming an unknown key makes the file be read before this.
        &["--jwt-keys-refresh", "1s", "--jwt-keys-min-refresh", "1s"],
    );
    let clock = std::sync::Arc::new(dispute_service::clock::ManualClock::new(chrono::Utc::now()));
    let server = start(config, pool, clock).await;
    let old = eddsa_token("ed25519-private.pem", "test-key-1", "agent");
    let new = eddsa_token("ed25519-2-private.pem", "test-key-2", "agent");
    // Authenticated and allowed; the order does not exist.
    assert_eq!(get_order(&server, &old).await, Err(Code::NotFound));
    assert_eq!(get_order(&server, &new).await, Err(Code::Unauthenticated));

    // The new key rolls out next to the old one: its tokens are accepted once the file has
    // been read again (a missed kid asks for that read), and the old key's still are.
    publish(
        &mounted,
        2,
        &jwks(&[("test-key-1", KEY_1_X), ("test-key-2", KEY_2_X)]),
    );
    until_answered(&server, &new, Err(Code::NotFound)).await;
    assert_eq!(get_order(&server, &old).await, Err(Code::NotFound));

    // The old key is withdrawn: once the file has been re-read, its tokens are refused.
    publish(&mounted, 3, &jwks(&[("test-key-2", KEY_2_X)]));
    until_answered(&server, &old, Err(Code::Unauthenticated)).await;
    assert_eq!(get_order(&server, &new).await, Err(Code::NotFound));
    let _ = std::fs::remove_dir_all(&mounted);
}

#[sqlx::test]
async fn a_token_naming_an_unknown_key_never_waits_on_the_key_file(pool: PgPool) {
    let mounted = mounted_jwks();
    let jwks = mounted.join("jwks.json");
    // The real binary: a call stuck on the disk would hold one of its threads, not the test's.
    let binary = crate::process::Binary::serve(
        &pool,
        &[
            ("DISPUTE_JWT_HS256_SECRET", ""),
            ("DISPUTE_JWT_JWKS_FILE", jwks.to_str().unwrap()),
            ("DISPUTE_JWT_ALGORITHM", "EdDSA"),
            ("DISPUTE_JWT_KEYS_MIN_REFRESH", "1s"),
        ],
    );
    // The key file becomes one whose read never finishes (a dead network mount): a FIFO
    // nobody writes to.
    let fifo = mounted.join("..v2").join("jwks.json");
    publish_with(&mounted, 2, |file| {
        let made = std::process::Command::new("mkfifo")
            .arg(file)
            .status()
            .unwrap();
        assert!(made.success());
    });

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", binary.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let get = |token: String| {
        let bearer = Bearer::new(Some(&format!("Bearer {token}")));
        missing_order(
            pb::dispute_service_client::DisputeServiceClient::with_interceptor(
                channel.clone(),
                bearer,
            ),
        )
    };
    let known = eddsa_token("ed25519-private.pem", "test-key-1", "agent");
    let unknown = eddsa_token("ed25519-2-private.pem", "test-key-2", "agent");
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // More unknown-kid calls than the server has threads, before and after the first
        // read became due (1 s), then a known key.
        let mut slowest = std::time::Duration::ZERO;
        for round in 0..2 {
            if round == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            }
            for _ in 0..8 {
                let started = std::time::Instant::now();
                assert_eq!(get(unknown.clone()).await, Err(Code::Unauthenticated));
                slowest = slowest.max(started.elapsed());
            }
        }
        assert_eq!(get(known.clone()).await, Err(Code::NotFound));
        println!("slowest unknown-kid call while the key file could not be read: {slowest:?}");
    })
    .await;
    assert!(answered.is_ok(), "a call waited on the key file");
    // Nor does the stop: the read is still stuck, and SIGTERM ends the process within its
    // grace (5 s) all the same.
    let exit = binary.terminate(std::time::Duration::from_secs(8)).await;
    assert!(exit.success(), "{exit:?}");
    // Let a stuck read finish (end of file); O_NONBLOCK: when nobody reads, nothing to do.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(0o4000)
        .open(&fifo);
    let _ = std::fs::remove_dir_all(&mounted);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_reads_the_key_file_once_per_minimum_refresh() {
    use dispute_service::config::{AsymmetricAlgorithm, AuthConfig};
    use dispute_service::grpc::auth::Authenticator;
    let mounted = mounted_jwks();
    let config = AuthConfig {
        jwt_hs256_secret: None,
        jwt_public_key_file: None,
        jwt_jwks_file: Some(mounted.join("jwks.json")),
        jwt_algorithm: AsymmetricAlgorithm::EdDsa,
        jwt_issuer: "dispute-dev".into(),
        jwt_audience: "dispute-service".into(),
        jwt_keys_refresh: std::time::Duration::from_secs(3600),
        jwt_keys_min_refresh: std::time::Duration::from_secs(1),
        jwt_max_lifetime: std::time::Duration::from_secs(24 * 3600),
    };
    let auth = std::sync::Arc::new(Authenticator::from_config(&config).unwrap());
    assert_eq!(auth.key_file_reads(), 1, "read once at the start");
    let (stop, stopped) = dispute_service::shutdown::channel();
    let reloader = tokio::spawn(auth.clone().reload_keys(stopped));
    let unknown = format!(
        "Bearer {}",
        eddsa_token("ed25519-2-private.pem", "test-key-2", "agent")
    );
    let flood = std::time::Duration::from_millis(2500);
    let started = std::time::Instant::now();
    let mut refused = 0;
    while started.elapsed() < flood {
        for _ in 0..100 {
            assert_eq!(
                auth.authenticate(Some(&unknown)).unwrap_err(),
                "unknown signing key"
            );
            refused += 1;
        }
        tokio::task::yield_now().await;
    }
    let reads = auth.key_file_reads();
    let _ = stop.send(true);
    reloader.await.unwrap();
    // The start's read, then at most one per second of the flood (and one more for the
    // second under way); and the misses did ask for reads.
    println!("{refused} tokens with an unknown kid in {flood:?}: {reads} reads of the key file");
    assert!(refused > 1_000, "only {refused} tokens tried");
    assert!(
        (2..=1 + 3 + 1).contains(&reads),
        "{reads} reads for {refused} unknown kids"
    );
    let _ = std::fs::remove_dir_all(&mounted);
}
