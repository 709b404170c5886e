//! Bearer tokens: arbitrary `authorization` values, and tokens correctly signed with the
//! server's secret whose header and claims are arbitrary JSON (so the claim checks, not
//! only the signature check, meet hostile input). Nothing may panic, and an accepted
//! token must name a role and a non-blank subject.
#![no_main]

use std::{sync::LazyLock, time::Duration};

use base64::Engine;
use dispute_service::{
    config::{AsymmetricAlgorithm, AuthConfig, Secret},
    grpc::auth::Authenticator,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

static AUTHENTICATOR: LazyLock<Authenticator> = LazyLock::new(|| {
    Authenticator::from_config(&AuthConfig {
        jwt_hs256_secret: Some(Secret::new(SECRET.to_owned())),
        jwt_public_key_file: None,
        jwt_jwks_file: None,
        jwt_algorithm: AsymmetricAlgorithm::Rs256,
        jwt_issuer: "dispute-dev".into(),
        jwt_audience: "dispute-service".into(),
        jwt_keys_refresh: Duration::from_secs(60),
        jwt_keys_min_refresh: Duration::from_secs(5),
        jwt_max_lifetime: Duration::from_secs(24 * 3600),
    })
    .expect("a valid configuration")
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let value = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // Header and claims split at the first 0xff byte, signed for real.
        let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
        let (header, claims) = rest.split_at(split);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(header),
            b64.encode(claims.get(1..).unwrap_or_default())
        );
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("HMAC signing cannot fail");
        format!("Bearer {input}.{signature}")
    };
    if let Ok(actor) = AUTHENTICATOR.authenticate(Some(&value)) {
        assert!(!actor.id.trim().is_empty());
    }
});
