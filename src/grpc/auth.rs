//! Token verification: the actor comes from a signed JWT and nothing else. The algorithm
//! is pinned by configuration, never read from the token.
//!
//! A PEM or JWKS key file is re-read while the server runs, so keys rotate without a
//! restart (a mounted Kubernetes Secret changes by a symlink swap). Only a background task
//! reads it ([`Authenticator::reload_keys`]): every `DISPUTE_JWT_KEYS_REFRESH`, and sooner
//! when a token names a `kid` the keys do not have — that token is refused at once and asks
//! the task for a read, at most one per `DISPUTE_JWT_KEYS_MIN_REFRESH` (at least 1 s). A
//! request never waits on the disk, so a flood of made-up `kid`s costs one read per
//! minimum refresh and no latency. Keys removed from the file stop verifying at the next
//! re-read. A file that cannot be read or parsed then keeps the keys already loaded
//! (logged); at startup it is an error.
//!
//! A token verified once is remembered with its actor and expiry for as long as the keys
//! it was verified with are loaded ([`Verified`]): a caller sends the same token with
//! every call for its lifetime, and verifying it again (base64, the signature, the claims'
//! JSON) was a sixth of the server's instructions per GetDispute (BENCHMARKS.md, "Against
//! the database floor"). Its expiry is checked at every use, as on the first.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, time::Instant};

use crate::{
    config::{AsymmetricAlgorithm, AuthConfig},
    domain::{Actor, Role, TextKind, check_text},
};

/// The shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The longest `sub` accepted (it is kept as the actor of every write).
const MAX_SUBJECT_CHARS: usize = 255;

/// Most clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 60;

/// Most tokens remembered as verified per generation of keys.
const VERIFIED_TOKENS: usize = 4096;
/// The longest token remembered (a signed JWT of this service's claims takes well under
/// 1 kB); a longer one is verified at every call. With [`VERIFIED_TOKENS`], what is
/// remembered stays under 9 MiB whatever the callers send.
const MAX_REMEMBERED_TOKEN_BYTES: usize = 2048;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    /// Issued at: required, so a token's lifetime can be bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before: checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

enum Keys {
    One(DecodingKey),
    /// Keys of a JWKS, by `kid`.
    Set(Vec<(Option<String>, DecodingKey)>),
}

/// The keys loaded by one read of the key file (or the secret), and the tokens verified
/// with them. A re-read makes a new generation, so a token of a key that left the file is
/// refused from that read on, remembered or not.
struct Generation {
    keys: Keys,
    verified: Verified,
}

impl Generation {
    fn new(keys: Keys) -> Self {
        Self {
            keys,
            verified: Verified::default(),
        }
    }
}

/// Tokens that passed every check of [`Authenticator::authenticate`], with their actor and
/// `exp`. Every check but the expiry holds for as long as the keys do (the signature, the
/// issuer and audience, `nbf` and `iat` once passed, the lifetime, the subject); the expiry
/// is checked again at every use, with the same leeway. Only tokens that passed are kept, so
/// a bad token costs its verification every time, as before. When [`VERIFIED_TOKENS`] are
/// kept the map is emptied: a caller with ever new valid tokens costs what verification
/// costs, no more, and the memory stays bounded.
#[derive(Default)]
struct Verified(Mutex<HashMap<Box<str>, (Actor, u64)>>);

impl Verified {
    /// The actor of `token` when it was verified and has not expired since.
    fn actor(&self, token: &str, now: u64) -> Option<Actor> {
        let mut verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (actor, exp) = verified.get(token)?;
        if expired(*exp, now) {
            verified.remove(token);
            return None;
        }
        Some(actor.clone())
    }

    fn remember(&self, token: &str, actor: &Actor, exp: u64) {
        if token.len() > MAX_REMEMBERED_TOKEN_BYTES {
            return;
        }
        let mut verified = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), (actor.clone(), exp));
    }
}

/// Whether a token with this `exp` has expired at `now`, as the token library decides it
/// (`exp` earlier than `now` less the leeway).
fn expired(exp: u64, now: u64) -> bool {
    exp < now.saturating_sub(LEEWAY_SECS)
}

/// Which key a token asks for, as far as the keys can tell.
enum Lookup<'k> {
    Found(&'k DecodingKey),
    UnknownKid,
    Refused(&'static str),
}

impl Keys {
    fn lookup(&self, kid: Option<&str>) -> Lookup<'_> {
        match self {
            Keys::One(key) => Lookup::Found(key),
            Keys::Set(keys) => match (kid, keys.as_slice()) {
                (Some(kid), keys) => keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map_or(Lookup::UnknownKid, |(_, key)| Lookup::Found(key)),
                (None, [(_, only)]) => Lookup::Found(only),
                (None, _) => Lookup::Refused("token names no signing key"),
            },
        }
    }
}

/// A key file, how often it is read, and the requests for an early read.
struct KeyFile {
    path: PathBuf,
    algorithm: Algorithm,
    jwks: bool,
    refresh: Duration,
    min_refresh: Duration,
    /// A token missed a `kid`: read the file early (rate-limited by the reader).
    missed_kid: Notify,
    /// Reads started, for tests and the log.
    reads: AtomicU64,
}

impl KeyFile {
    fn load(&self) -> anyhow::Result<Keys> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.jwks {
            load_jwks(&self.path)
        } else {
            load_pem(&self.path, self.algorithm)
        }
    }
}

/// Verifies bearer tokens with the configured key and algorithm.
pub struct Authenticator {
    keys: RwLock<Arc<Generation>>,
    /// Where the keys come from when they can rotate (a PEM or JWKS file).
    file: Option<KeyFile>,
    validation: Validation,
    /// Longest `exp` − `iat` accepted.
    max_lifetime: Duration,
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
        let (algorithm, file) = match (
            &config.jwt_hs256_secret,
            &config.jwt_public_key_file,
            &config.jwt_jwks_file,
        ) {
            (Some(secret), None, None) => {
                if secret.expose().len() < MIN_HS256_SECRET_BYTES {
                    bail!(
                        "DISPUTE_JWT_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes"
                    );
                }
                (Algorithm::HS256, None)
            }
            (None, Some(path), None) => {
                (asymmetric, Some(key_file(config, path, asymmetric, false)))
            }
            (None, None, Some(path)) => {
                (asymmetric, Some(key_file(config, path, asymmetric, true)))
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
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let keys = match (&file, &config.jwt_hs256_secret) {
            (Some(file), _) => file.load()?,
            (None, Some(secret)) => Keys::One(DecodingKey::from_secret(secret.expose().as_bytes())),
            (None, None) => unreachable!("one key source was required above"),
        };
        Ok(Self {
            keys: RwLock::new(Arc::new(Generation::new(keys))),
            file,
            validation,
            max_lifetime: config.jwt_max_lifetime,
        })
    }

    fn keys(&self) -> Arc<Generation> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the key file has been read since the start (the first load too).
    pub fn key_file_reads(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |file| file.reads.load(Ordering::Relaxed))
    }

    /// Re-reads the key file every `refresh`, or after a missed `kid` once `min_refresh`
    /// has passed since the last read, until `stop`. The read runs on a blocking thread;
    /// no request waits for it. Returns at once when the keys do not come from a file.
    /// (Misses during a read leave one request behind, so a burst of unknown `kid`s costs
    /// at most two reads, a minimum refresh apart.)
    pub async fn reload_keys(self: Arc<Self>, mut stop: crate::shutdown::Stop) {
        let Some(file) = &self.file else { return };
        let mut read_at = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(read_at + file.refresh) => {}
                _ = file.missed_kid.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(read_at + file.min_refresh) => {}
                        _ = crate::shutdown::stopped(&mut stop) => return,
                    }
                }
                _ = crate::shutdown::stopped(&mut stop) => return,
            }
            read_at = Instant::now();
            let this = self.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let file = this.file.as_ref().expect("checked above");
                file.load()
            });
            let loaded = tokio::select! {
                loaded = loaded => loaded,
                // A read stuck on a dead mount must not hold up shutdown.
                _ = crate::shutdown::stopped(&mut stop) => return,
            };
            match loaded {
                Ok(Ok(keys)) => {
                    *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
                        Arc::new(Generation::new(keys));
                }
                Ok(Err(error)) => tracing::warn!(
                    error = format!("{error:#}"),
                    "token keys could not be re-read; keeping the keys already loaded"
                ),
                Err(panicked) => tracing::error!(%panicked, "reading the token keys panicked"),
            }
        }
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
        let keys = self.keys();
        if let Some(actor) = keys
            .verified
            .actor(token, jsonwebtoken::get_current_timestamp())
        {
            return Ok(actor);
        }
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|_| "malformed token")?
            .kid;
        if has_critical_extensions(token) {
            // RFC 7515 §4.1.11: a token whose critical extensions are not understood must
            // be refused; this service understands none.
            return Err("unsupported critical header");
        }
        let key = match keys.keys.lookup(kid.as_deref()) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => {
                // Perhaps a key rolled out since the file was read: ask for a read, and
                // refuse this token now (a retry after the read is accepted).
                if let Some(file) = &self.file {
                    file.missed_kid.notify_one();
                }
                return Err("unknown signing key");
            }
            Lookup::Refused(why) => return Err(why),
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|_| "invalid or expired token")?
            .claims;
        let role = Role::from_claim(&claims.role).ok_or("unknown role")?;
        let issued = claims.iat.ok_or("token has no iat")?;
        let now = jsonwebtoken::get_current_timestamp();
        if issued > now + LEEWAY_SECS {
            return Err("token issued in the future");
        }
        if claims.exp.saturating_sub(issued) > self.max_lifetime.as_secs() {
            return Err("token lives longer than the maximum lifetime");
        }
        if claims.sub.trim().is_empty() {
            return Err("empty subject");
        }
        if claims.sub.chars().count() > MAX_SUBJECT_CHARS
            || check_text(&claims.sub, TextKind::Line).is_err()
        {
            return Err("invalid subject");
        }
        let actor = Actor::new(role, claims.sub);
        keys.verified.remember(token, &actor, claims.exp);
        Ok(actor)
    }
}

/// Whether the token's protected header names a `crit` parameter.
fn has_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_some_and(|header| header.get("crit").is_some())
}

fn key_file(config: &AuthConfig, path: &Path, algorithm: Algorithm, jwks: bool) -> KeyFile {
    KeyFile {
        path: path.to_owned(),
        algorithm,
        jwks,
        refresh: config.jwt_keys_refresh,
        min_refresh: config.jwt_keys_min_refresh,
        missed_kid: Notify::new(),
        reads: AtomicU64::new(0),
    }
}

fn load_pem(path: &Path, algorithm: Algorithm) -> anyhow::Result<Keys> {
    let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key = match algorithm {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    }
    .with_context(|| format!("{} is not a {algorithm:?} public key", path.display()))?;
    Ok(Keys::One(key))
}

fn load_jwks(path: &Path) -> anyhow::Result<Keys> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let set: JwkSet =
        serde_json::from_str(&text).with_context(|| format!("{} is not a JWKS", path.display()))?;
    let keys = set
        .keys
        .iter()
        .map(|jwk| Ok((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("{} holds no keys", path.display());
    }
    Ok(Keys::Set(keys))
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
        iat: Some(jsonwebtoken::get_current_timestamp()),
        nbf: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )?)
}
