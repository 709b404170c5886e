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
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("jwks.json"), text).unwrap();
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

#[sqlx::test]
async fn rotated_jwks_keys_verify_without_a_restart_and_removed_ones_stop(pool: PgPool) {
    let mounted = std::env::temp_dir().join(format!("jwks-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir(&mounted).unwrap();
    publish(&mounted, 1, &jwks(&[("test-key-1", KEY_1_X)]));
    let mut config = serve_config(&[
        "--jwt-algorithm",
        "EdDSA",
        // Only a token naming an unknown key makes the file be read before this.
        "--jwt-keys-refresh",
        "1s",
        "--jwt-keys-min-refresh",
        "0s",
    ]);
    config.auth.jwt_hs256_secret = None;
    config.auth.jwt_jwks_file = Some(mounted.join("jwks.json"));
    let clock = std::sync::Arc::new(dispute_service::clock::ManualClock::new(chrono::Utc::now()));
    let server = start(config, pool, clock).await;
    let old = eddsa_token("ed25519-private.pem", "test-key-1", "agent");
    let new = eddsa_token("ed25519-2-private.pem", "test-key-2", "agent");
    let get = |token: String| {
        let server = &server;
        async move {
            let mut client = server
                .client_with_header(Some(&format!("Bearer {token}")))
                .await;
            let request = pb::GetOrderRequest {
                order_id: "order-1".into(),
            };
            client
                .get_order(request)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    // Authenticated and allowed; the order does not exist.
    assert_eq!(get(old.clone()).await, Err(Code::NotFound));
    assert_eq!(get(new.clone()).await, Err(Code::Unauthenticated));

    // The new key rolls out next to the old one: its first token is accepted at once.
    publish(
        &mounted,
        2,
        &jwks(&[("test-key-1", KEY_1_X), ("test-key-2", KEY_2_X)]),
    );
    assert_eq!(get(new.clone()).await, Err(Code::NotFound));
    assert_eq!(get(old.clone()).await, Err(Code::NotFound));

    // The old key is withdrawn: once the file has been re-read, its tokens are refused.
    publish(&mounted, 3, &jwks(&[("test-key-2", KEY_2_X)]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(old).await, Err(Code::Unauthenticated));
    assert_eq!(get(new).await, Err(Code::NotFound));
    let _ = std::fs::remove_dir_all(&mounted);
}
