//! Token verification: the actor comes from a signed JWT and nothing else. The algorithm
//! is pinned by configuration, never read from the token.

use std::{fs, time::Duration};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};

use crate::{
    config::{AsymmetricAlgorithm, AuthConfig},
    domain::{Actor, Role},
};

/// Most clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 60;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
}

enum Keys {
    One(DecodingKey),
    /// Keys of a JWKS, by `kid`.
    Set(Vec<(Option<String>, DecodingKey)>),
}

/// Verifies bearer tokens with the configured key and algorithm.
pub struct Authenticator {
    keys: Keys,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Exactly one key source must be configured: an HS256 secret, a PEM public key or a
    /// JWKS file.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let asymmetric = match config.jwt_algorithm {
            AsymmetricAlgorithm::Rs256 => Algorithm::RS256,
            AsymmetricAlgorithm::EdDsa => Algorithm::EdDSA,
        };
        let (algorithm, keys) = match (
            &config.jwt_hs256_secret,
            &config.jwt_public_key_file,
            &config.jwt_jwks_file,
        ) {
            (Some(secret), None, None) => {
                if secret.len() < 16 {
                    bail!("DISPUTE_JWT_HS256_SECRET must be at least 16 bytes");
                }
                (
                    Algorithm::HS256,
                    Keys::One(DecodingKey::from_secret(secret.as_bytes())),
                )
            }
            (None, Some(path), None) => {
                let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let key = match asymmetric {
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .with_context(|| {
                    format!("{} is not a {asymmetric:?} public key", path.display())
                })?;
                (asymmetric, Keys::One(key))
            }
            (None, None, Some(path)) => {
                let text = fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JWKS", path.display()))?;
                let keys = set
                    .keys
                    .iter()
                    .map(|jwk| Ok((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)?)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if keys.is_empty() {
                    bail!("{} holds no keys", path.display());
                }
                (asymmetric, Keys::Set(keys))
            }
            (None, None, None) => bail!(
                "no token key configured: set DISPUTE_JWT_HS256_SECRET, DISPUTE_JWT_PUBLIC_KEY_FILE or DISPUTE_JWT_JWKS_FILE"
            ),
            _ => bail!(
                "configure exactly one of DISPUTE_JWT_HS256_SECRET, DISPUTE_JWT_PUBLIC_KEY_FILE, DISPUTE_JWT_JWKS_FILE"
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self { keys, validation })
    }

    /// The actor of an `authorization` metadata value, or why there is none.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Actor, &'static str> {
        let token = authorization
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .ok_or("missing bearer token")?
            .trim();
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::Set(keys) => {
                let kid = jsonwebtoken::decode_header(token)
                    .map_err(|_| "malformed token")?
                    .kid;
                match (kid, keys.as_slice()) {
                    (Some(kid), keys) => keys
                        .iter()
                        .find(|(id, _)| id.as_deref() == Some(kid.as_str()))
                        .map(|(_, key)| key)
                        .ok_or("unknown signing key")?,
                    (None, [(_, only)]) => only,
                    (None, _) => return Err("token names no signing key"),
                }
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| "invalid or expired token")?
            .claims;
        let role = Role::from_claim(&claims.role).ok_or("unknown role")?;
        if claims.sub.is_empty() {
            return Err("empty subject");
        }
        Ok(Actor::new(role, claims.sub))
    }
}

/// Mints a development HS256 token (the `token` subcommand, and tests).
pub fn mint_hs256(
    config: &AuthConfig,
    role: Role,
    sub: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let secret = config
        .jwt_hs256_secret
        .as_ref()
        .context("the token command needs DISPUTE_JWT_HS256_SECRET")?;
    let claims = Claims {
        sub: sub.to_owned(),
        role: role.as_claim().to_owned(),
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        exp: jsonwebtoken::get_current_timestamp() + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
