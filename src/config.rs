//! Typed settings from flags and environment variables (Kubernetes-friendly).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dispute-service",
    version,
    about = "Buyer disputes on marketplace orders and where their escrowed money goes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API.
    Serve(ServeConfig),
    /// Apply database migrations and exit.
    Migrate(DatabaseConfig),
    /// Mint a development token signed with the HS256 secret.
    Token(TokenConfig),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Most connections the pool opens.
    #[arg(long, env = "DISPUTE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a free connection before it is refused UNAVAILABLE.
    #[arg(long, env = "DISPUTE_DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
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
    pub jwt_hs256_secret: Option<String>,
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
    /// Apply migrations before serving (turn off when a migration job does it).
    #[arg(long, env = "DISPUTE_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
    /// Most disputes a buyer may open on one order.
    #[arg(long, env = "DISPUTE_MAX_DISPUTES_PER_ORDER", default_value_t = 3)]
    pub max_disputes_per_order: i32,
    /// Server-side deadline of every request.
    #[arg(long, env = "DISPUTE_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Most requests in flight at once; more are refused RESOURCE_EXHAUSTED.
    #[arg(long, env = "DISPUTE_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// How often health re-checks the database and schema.
    #[arg(long, env = "DISPUTE_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// How long SIGTERM waits for in-flight calls before closing anyway.
    #[arg(long, env = "DISPUTE_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
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
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}
