//! Typed settings from flags and environment variables (Kubernetes-friendly).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::{DeadlineKind, Deadlines};

/// Where evidence may point unless configured: any bucket of the two object stores.
pub const DEFAULT_EVIDENCE_LOCATIONS: &str = "s3://,gs://";

/// A value that must never be printed (a password in `DATABASE_URL`, a signing secret):
/// `Debug` and `Display` show `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// A duration that must be more than zero (a zero interval would spin, a zero timeout
/// would refuse everything).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration > Duration::ZERO => Ok(duration),
        Ok(_) => Err("must be more than zero".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// A duration of at least `min`.
fn at_least(min: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text| match humantime::parse_duration(text) {
        Ok(duration) if duration >= min => Ok(duration),
        Ok(_) => Err(format!(
            "must be at least {}",
            humantime::format_duration(min)
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// A duration from `min` to `max`.
fn between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text| match at_least(min)(text)? {
        duration if duration <= max => Ok(duration),
        _ => Err(format!(
            "must be at most {}",
            humantime::format_duration(max)
        )),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dispute-service",
    version,
    about = "Buyer disputes on marketplace orders and where their escrowed money goes",
    args_override_self = true
)]
pub struct Cli {
    /// Log lines as JSON (one object per line) or as human-readable text.
    #[arg(
        long,
        env = "DISPUTE_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::telemetry::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API.
    #[command(args_override_self = true)]
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
    /// Mint a development token signed with the HS256 secret.
    Token(TokenConfig),
    /// Ask a server's gRPC health service; exit 0 when it is SERVING, 1 otherwise.
    Healthcheck(HealthcheckConfig),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckConfig {
    /// The server: host:port (or an http:// URL).
    #[arg(
        long,
        env = "DISPUTE_HEALTHCHECK_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: String,
    /// The service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = positive_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Most connections the pool opens.
    #[arg(long, env = "DISPUTE_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
    /// How long a request waits for a free connection before it is refused UNAVAILABLE.
    #[arg(long, env = "DISPUTE_DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub db_acquire_timeout: Duration,
    /// Longest a statement may run, and a transaction sit idle, in the database before
    /// the database ends it (`statement_timeout`, `idle_in_transaction_session_timeout`).
    #[arg(long, env = "DISPUTE_DB_STATEMENT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub db_statement_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AsymmetricAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// Shared secret for HS256 tokens (development, tests).
    #[arg(long, env = "DISPUTE_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<Secret>,
    /// PEM public key for asymmetric tokens (production).
    #[arg(long, env = "DISPUTE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWKS file of public keys for asymmetric tokens (production); keys chosen by `kid`.
    #[arg(long, env = "DISPUTE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The one asymmetric algorithm accepted with a public key or JWKS.
    #[arg(long, env = "DISPUTE_JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: AsymmetricAlgorithm,
    /// Required `iss` claim.
    #[arg(long, env = "DISPUTE_JWT_ISSUER", default_value = "dispute-dev")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "DISPUTE_JWT_AUDIENCE", default_value = "dispute-service")]
    pub jwt_audience: String,
    /// How often a PEM or JWKS key file is re-read (keys rotate without a restart).
    #[arg(long, env = "DISPUTE_JWT_KEYS_REFRESH", default_value = "60s", value_parser = positive_duration)]
    pub jwt_keys_refresh: Duration,
    /// The soonest a token naming an unknown `kid` makes the key file be re-read again
    /// (at least 1 s: a read per request would let anyone keep the disk busy).
    #[arg(long, env = "DISPUTE_JWT_KEYS_MIN_REFRESH", default_value = "5s", value_parser = at_least(Duration::from_secs(1)))]
    pub jwt_keys_min_refresh: Duration,
    /// Longest a token may live (`exp` − `iat`; tokens must carry `iat`): a leaked token
    /// is useful for at most this long.
    #[arg(long, env = "DISPUTE_JWT_MAX_LIFETIME", default_value = "24h", value_parser = positive_duration)]
    pub jwt_max_lifetime: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Address the gRPC server listens on.
    #[arg(long, env = "DISPUTE_LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,
    /// Address of the admin HTTP listener serving Prometheus metrics at `/metrics`.
    #[arg(long, env = "DISPUTE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Apply migrations before serving (turn off when a migration job does it).
    #[arg(long, env = "DISPUTE_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
    /// Most disputes a buyer may open on one order.
    #[arg(long, env = "DISPUTE_MAX_DISPUTES_PER_ORDER", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_disputes_per_order: i32,
    /// Server-side deadline of every request.
    #[arg(long, env = "DISPUTE_REQUEST_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Most requests in flight at once; more are refused RESOURCE_EXHAUSTED.
    #[arg(long, env = "DISPUTE_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// How often health re-checks the database and schema.
    #[arg(long, env = "DISPUTE_HEALTH_INTERVAL", default_value = "2s", value_parser = positive_duration)]
    pub health_interval: Duration,
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Run the event stream's relay in this process (README, "Consuming the event stream").
    /// Every replica runs one by default; the partitions' leases keep one relay per
    /// partition, whichever replica holds it.
    #[arg(long, env = "DISPUTE_RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,
    /// How long after the start of a relay pass the commits of this process may wake the
    /// next (0: at once): under load, the commits of that interval are moved to the stream
    /// in one pass instead of a pass each. It is how much later than at once an event may
    /// reach the stream (README, "Consuming the event stream").
    #[arg(long, env = "DISPUTE_RELAY_GATHER", default_value = "10ms",
          value_parser = between(Duration::ZERO, crate::relay::POLL))]
    pub relay_gather: Duration,
    /// A client connection older than this is asked to go away (HTTP/2 GOAWAY), so clients
    /// reconnect and spread over new replicas.
    #[arg(long, env = "DISPUTE_MAX_CONNECTION_AGE", default_value = "5m", value_parser = positive_duration)]
    pub max_connection_age: Duration,
    /// How long calls under way on such a connection may still run (WatchEvents streams
    /// are then ended; consumers resume from their cursor).
    #[arg(long, env = "DISPUTE_MAX_CONNECTION_AGE_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_connection_age_grace: Duration,
    /// How long SIGTERM waits for in-flight calls before closing anyway.
    #[arg(long, env = "DISPUTE_SHUTDOWN_GRACE", default_value = "20s", value_parser = positive_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub limits: Limits,
    /// Key (at least 32 bytes) that signs page tokens and stream cursors. Unset: a key a
    /// migration made, kept in the database, shared by every replica.
    #[arg(long, env = "DISPUTE_PAGE_TOKEN_KEY", hide_env_values = true)]
    pub page_token_key: Option<Secret>,
}

/// What one caller, or one connection, may hold at once (README, "Limits"). Every bound
/// is there so that no caller, however hostile, can starve the others.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Most requests one caller (a token's role and subject) may have under way at once,
    /// its requests still sending their bodies included: by default half the server's, so
    /// one caller, however busy, leaves the other half to everyone else.
    #[arg(long, env = "DISPUTE_MAX_IN_FLIGHT_PER_CALLER", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_per_caller: u32,
    /// How long a request may take to send its body once its headers arrived.
    #[arg(long, env = "DISPUTE_REQUEST_BODY_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub request_body_timeout: Duration,
    /// Most WatchEvents streams open at once on this server.
    #[arg(long, env = "DISPUTE_MAX_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Most WatchEvents streams one caller may have open at once.
    #[arg(long, env = "DISPUTE_MAX_STREAMS_PER_CALLER", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_caller: u32,
    /// Most client connections open at once; more are closed as they arrive.
    #[arg(long, env = "DISPUTE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    #[arg(long, env = "DISPUTE_MAX_STREAMS_PER_CONNECTION", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// How long a new connection may take to send the HTTP/2 preface.
    #[arg(long, env = "DISPUTE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub handshake_timeout: Duration,
    /// How often an HTTP/2 PING checks an open connection's peer is still there.
    #[arg(long, env = "DISPUTE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "DISPUTE_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub keepalive_timeout: Duration,
    /// Where evidence may point: comma-separated locations, `scheme://` (any bucket) or
    /// `scheme://host[/path]` (URLs are parsed and matched by host and path segment).
    #[arg(
        long,
        env = "DISPUTE_EVIDENCE_URL_PREFIXES",
        default_value = DEFAULT_EVIDENCE_LOCATIONS,
        value_delimiter = ','
    )]
    pub evidence_url_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    #[command(flatten)]
    pub auth: AuthConfig,
    /// buyer, seller, agent or service.
    #[arg(long)]
    pub role: String,
    /// The actor id.
    #[arg(long)]
    pub sub: String,
    /// Lifetime of the token.
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    pub ttl: Duration,
}

/// A deadline's default: the domain's deadline table is the one place they are written.
fn default_deadline(pick: fn(&Deadlines) -> chrono::Duration) -> humantime::Duration {
    pick(&Deadlines::default())
        .to_std()
        .expect("the default deadlines are positive")
        .into()
}

fn positive_deadline(text: &str) -> Result<humantime::Duration, String> {
    positive_duration(text).map(Into::into)
}

/// The deadline worker (README, "Deadlines"). Durations are humantime: `5days`, `36h`, `1s`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How often deadlines are checked.
    /// (At least 1 ms: it is also a failed candidate's first retry delay, and below a
    /// millisecond that rounds to nothing in the database.)
    #[arg(long, env = "DISPUTE_WORKER_INTERVAL", default_value = "5s", value_parser = at_least(Duration::from_millis(1)))]
    pub worker_interval: Duration,
    /// Run the deadline worker in this process.
    #[arg(long, env = "DISPUTE_WORKER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub worker_enabled: bool,
    /// Candidates fetched per scan.
    #[arg(long, env = "DISPUTE_WORKER_BATCH", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
    pub worker_batch: i64,
    /// Candidate partitions each replica's worker drains at once: at most this many of
    /// the pool's connections (`DISPUTE_DB_MAX_CONNECTIONS`) go to deadlines. Each task
    /// waits on a round trip most of the time, so two replicas at 8 drain a wave as fast as
    /// 16 callers register it (RELIABILITY.md, "The release wave").
    #[arg(long, env = "DISPUTE_WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub worker_concurrency: u32,
    /// Seller silent in AWAITING_SELLER, from opening: the buyer's remedy is granted.
    #[arg(long, env = "DISPUTE_DEADLINE_SELLER_RESPONSE", default_value_t = default_deadline(|d| d.of(DeadlineKind::SellerResponse)), value_parser = positive_deadline)]
    pub deadline_seller_response: humantime::Duration,
    /// Still NEGOTIATING, from opening: the dispute goes UNDER_REVIEW.
    #[arg(long, env = "DISPUTE_DEADLINE_NEGOTIATION", default_value_t = default_deadline(|d| d.of(DeadlineKind::Negotiation)), value_parser = positive_deadline)]
    pub deadline_negotiation: humantime::Duration,
    /// Return not shipped, from when it was agreed: funds released to the seller.
    #[arg(long, env = "DISPUTE_DEADLINE_RETURN_SHIPMENT", default_value_t = default_deadline(|d| d.of(DeadlineKind::ReturnShipment)), value_parser = positive_deadline)]
    pub deadline_return_shipment: humantime::Duration,
    /// Seller silent in RETURN_IN_TRANSIT, from the tracking: the buyer is refunded.
    #[arg(long, env = "DISPUTE_DEADLINE_RETURN_RECEIPT", default_value_t = default_deadline(|d| d.of(DeadlineKind::ReturnReceipt)), value_parser = positive_deadline)]
    pub deadline_return_receipt: humantime::Duration,
    /// Replacement not shipped, from when it was agreed: the buyer is refunded in full.
    #[arg(long, env = "DISPUTE_DEADLINE_REPLACEMENT_SHIPMENT", default_value_t = default_deadline(|d| d.of(DeadlineKind::ReplacementShipment)), value_parser = positive_deadline)]
    pub deadline_replacement_shipment: humantime::Duration,
    /// Buyer silent in REPLACEMENT_IN_TRANSIT, from the shipment: funds released to the
    /// seller.
    #[arg(long, env = "DISPUTE_DEADLINE_REPLACEMENT_RECEIPT", default_value_t = default_deadline(|d| d.of(DeadlineKind::ReplacementReceipt)), value_parser = positive_deadline)]
    pub deadline_replacement_receipt: humantime::Duration,
    /// When a replacement ships, the order's protection end moves to at least this long
    /// after the shipment.
    #[arg(long, env = "DISPUTE_REPLACEMENT_DELIVERY_WINDOW", default_value_t = default_deadline(|d| d.replacement_delivery), value_parser = positive_deadline)]
    pub replacement_delivery_window: humantime::Duration,
    /// How long events stay in the stream's log for WatchEvents consumers to catch up
    /// (the history is never deleted).
    #[arg(long, env = "DISPUTE_OUTBOX_RETENTION", default_value = "7days", value_parser = positive_duration)]
    pub outbox_retention: Duration,
    /// How long idempotency keys are remembered (at least 24h).
    #[arg(long, env = "DISPUTE_IDEMPOTENCY_RETENTION", default_value = "48h", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,
}

impl WorkerArgs {
    pub fn to_config(&self) -> anyhow::Result<crate::worker::WorkerConfig> {
        if self.idempotency_retention < Duration::from_secs(24 * 3600) {
            anyhow::bail!("DISPUTE_IDEMPOTENCY_RETENTION must be at least 24h");
        }
        Ok(crate::worker::WorkerConfig {
            interval: self.worker_interval,
            batch: self.worker_batch,
            concurrency: self.worker_concurrency as usize,
            idempotency_retention: days(self.idempotency_retention)?,
            outbox_retention: days(self.outbox_retention)?,
        })
    }

    /// The deadlines the commands (and so the worker) apply.
    pub fn deadlines(&self) -> anyhow::Result<Deadlines> {
        use DeadlineKind::*;
        let lengths = [
            (SellerResponse, self.deadline_seller_response),
            (Negotiation, self.deadline_negotiation),
            (ReturnShipment, self.deadline_return_shipment),
            (ReturnReceipt, self.deadline_return_receipt),
            (ReplacementShipment, self.deadline_replacement_shipment),
            (ReplacementReceipt, self.deadline_replacement_receipt),
        ]
        .into_iter()
        .map(|(kind, length)| Ok((kind, days(*length)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Deadlines::new(
            lengths,
            days(*self.replacement_delivery_window)?,
        ))
    }
}

fn days(d: Duration) -> anyhow::Result<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(|_| anyhow::anyhow!("duration {d:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(extra: &[&str]) -> Result<ServeConfig, clap::Error> {
        let mut args = vec![
            "dispute-service",
            "serve",
            "--database-url",
            "postgres://user:hunter2@db/dispute",
            "--jwt-hs256-secret",
            "a-secret-nobody-may-print-0123456789",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Serve(config) => *config,
            _ => unreachable!(),
        })
    }

    #[test]
    fn out_of_range_settings_stop_the_start_naming_the_setting() {
        for (flag, value) in [
            ("--max-in-flight", "0"),
            ("--max-disputes-per-order", "0"),
            ("--db-max-connections", "0"),
            ("--worker-batch", "0"),
            ("--request-timeout", "0s"),
            ("--worker-interval", "0s"),
            ("--worker-interval", "999us"),
            ("--jwt-keys-min-refresh", "0s"),
            ("--jwt-keys-min-refresh", "999ms"),
            ("--health-interval", "0ms"),
            ("--relay-gather", "101ms"),
        ] {
            let error = serve(&[flag, value]).unwrap_err().to_string();
            assert!(error.contains(flag), "{flag} {value}: {error}");
        }
        assert!(serve(&["--max-in-flight", "1", "--worker-interval", "1s"]).is_ok());
        assert!(serve(&["--worker-interval", "1ms", "--jwt-keys-min-refresh", "1s"]).is_ok());
        for gather in ["0ms", "100ms"] {
            assert!(serve(&["--relay-gather", gather]).is_ok(), "{gather}");
        }
        assert_eq!(serve(&[]).unwrap().relay_gather, crate::relay::GATHER);
    }

    #[test]
    fn secrets_never_print() {
        let config = serve(&[]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("a-secret-nobody-may-print"), "{printed}");
        assert_eq!(
            config.database.database_url.expose(),
            "postgres://user:hunter2@db/dispute"
        );
    }
}
