//! The application: listener, pool, health, reflection, the gate, and graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{net::TcpListener, time::Instant};
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

use crate::{
    clock::Clock,
    commands::Commands,
    config::{DatabaseConfig, ServeConfig},
    domain::Deadlines,
    feed::EventFeed,
    grpc::{
        self, Admitted, ApiParts, DisputeApi, GateLayer, MAX_REQUEST_BYTES, SERVICE_NAME, Shares,
        Slots, auth::Authenticator, parse::EvidencePrefixes,
        pb::dispute_service_server::DisputeServiceServer, tokens::TokenKey,
    },
    metrics::{self, Metrics},
    relay::{Relay, RelayConfig},
    shutdown::{self, Stop, stopped},
    store::{MIGRATOR, Store},
    worker::DeadlineWorker,
};

/// The health service name that is SERVING whenever the process answers, whatever the
/// database does: for liveness and startup probes.
pub const LIVENESS: &str = "liveness";

/// How many times migrations are tried while the database is unreachable, 2 s apart.
const MIGRATE_ATTEMPTS: u32 = 30;

/// A pool that connects on demand, so the server starts (NOT_SERVING) while the
/// database is down and recovers when it comes back (README, "Fault tolerance"):
///
/// - every session gets `statement_timeout` and `idle_in_transaction_session_timeout`
///   (`DISPUTE_DB_STATEMENT_TIMEOUT`), so the database itself ends work nobody waits for,
///   and TCP keepalives on the server's side of the socket;
/// - a connection is checked with a ping before use only after it sat idle (a busy
///   connection is not pinged on every acquire: one round trip saved per request), and
///   every check is bounded by [`PING_TIMEOUT`], so a connection to a database that
///   stopped answering (a blackhole) is closed within it instead of holding its slot
///   until the kernel gives up on the socket.
pub fn pool(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let timeout = format!("{}ms", config.db_statement_timeout.as_millis());
    let options: PgConnectOptions = config
        .database_url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let options = options.options([
        ("statement_timeout", timeout.as_str()),
        ("idle_in_transaction_session_timeout", timeout.as_str()),
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < IDLE_BEFORE_PING {
                    return Ok(true);
                }
                Ok(answers(conn).await)
            })
        })
        .after_release(|conn, _| Box::pin(async move { Ok(settled(conn).await) }))
        .connect_lazy_with(options))
}

/// How long a connection may sit idle before it is pinged on acquire.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// Longest a ping may take before its connection is given up.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a connection given back to the pool has settled within [`PING_TIMEOUT`]: the
/// rollback a dropped transaction queued is sent and answered, and replies a dropped query
/// left unread are read. A connection that owes nothing costs no round trip (sqlx's own
/// ping on every release is patched out for a pool with this hook:
/// third_party/sqlx-core/README.md); one that fails or is too slow is closed.
async fn settled(conn: &mut sqlx::PgConnection) -> bool {
    use sqlx::Connection;
    in_time(conn.flush()).await
}

/// Whether the connection answers a ping within [`PING_TIMEOUT`].
async fn answers(conn: &mut sqlx::PgConnection) -> bool {
    use sqlx::Connection;
    in_time(conn.ping()).await
}

/// Whether `exchange` with a connection succeeded within [`PING_TIMEOUT`].
async fn in_time(exchange: impl Future<Output = Result<(), sqlx::Error>>) -> bool {
    matches!(
        tokio::time::timeout(PING_TIMEOUT, exchange).await,
        Ok(Ok(()))
    )
}

/// Applies migrations, retrying while the database is unreachable. Replicas starting
/// together are serialised by the migrator's advisory lock. A TLS or configuration error
/// (a certificate that does not verify, a bad `sslrootcert`) will not heal by waiting: it
/// stops the start at once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return distribute(pool).await,
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_tls_failure(&error) => {
                return Err(error).context(
                    "connecting to PostgreSQL over TLS failed (check sslmode, sslrootcert and the server's certificate)",
                );
            }
            Err(sqlx::migrate::MigrateError::Execute(error @ sqlx::Error::Configuration(_))) => {
                return Err(error).context("DATABASE_URL is not usable");
            }
            Err(error) if attempt < MIGRATE_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(%error, attempt, "migrations failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => return Err(error).context("applying migrations"),
        }
    }
}

/// Distributes the tables when the database has the citus extension (the function is
/// migration 10's; it does nothing on plain PostgreSQL or for tables already distributed),
/// so a database that gains the extension after its migrations is distributed by the next
/// `migrate` (README, "Running on Citus").
async fn distribute(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("SELECT distribute_by_order()")
        .execute(pool)
        .await
        .context("distributing the tables")?;
    Ok(())
}

/// A TLS handshake that failed: a certificate that does not verify arrives as invalid data
/// on the socket (rustls), a bad TLS setting as a TLS error. Neither heals by retrying.
fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    metrics: Metrics,
    config: ServeConfig,
    store: Store,
    commands: Commands,
    authenticator: Arc<Authenticator>,
    worker: Option<DeadlineWorker>,
    tokens: TokenKey,
    deadlines: Deadlines,
    evidence: EvidencePrefixes,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and wires the service.
    pub async fn build(
        config: ServeConfig,
        pool: PgPool,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let authenticator = Arc::new(Authenticator::from_config(&config.auth)?);
        let evidence = EvidencePrefixes::new(config.limits.evidence_url_prefixes.clone())
            .map_err(|why| anyhow::anyhow!("DISPUTE_EVIDENCE_URL_PREFIXES: {why}"))?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        let metrics_listener = metrics::bind(config.metrics_addr).await?;
        let metrics = Metrics::new();
        let store = Store::new(pool);
        let worker_config = config.worker.to_config()?;
        let deadlines = config.worker.deadlines()?;
        let commands = Commands::new(
            store.clone(),
            clock,
            config.max_disputes_per_order,
            deadlines,
            metrics.clone(),
        );
        let worker = config
            .worker
            .worker_enabled
            .then(|| DeadlineWorker::new(commands.clone(), worker_config));
        let configured = config
            .page_token_key
            .as_ref()
            .map(|k| k.expose().as_bytes());
        if configured.is_some_and(|key| key.len() < 32) {
            anyhow::bail!("DISPUTE_PAGE_TOKEN_KEY must be at least 32 bytes");
        }
        let tokens = TokenKey::new(configured, commands.clone());
        Ok(Self {
            tokens,
            deadlines,
            evidence,
            listener,
            metrics_listener,
            metrics,
            config,
            store,
            commands,
            authenticator,
            worker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The metrics this application records (a deadline worker run beside it can share
    /// them).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops accepting,
    /// drains in-flight calls (at most the configured grace) and closes the pool.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_tx, stop_rx) = shutdown::channel();
        for service in ["", SERVICE_NAME] {
            reporter
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        // The process answers: what a liveness probe should ask (a database outage must not
        // get pods restarted; readiness asks "" instead).
        reporter
            .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
            .await;
        let health_task = tokio::spawn(watch_health(
            self.store.clone(),
            reporter.clone(),
            self.config.health_interval,
            stop_rx.clone(),
        ));
        let addr = self.local_addr();
        let metrics_task = tokio::spawn(metrics::serve(
            self.metrics_listener,
            self.metrics.clone(),
            self.store.clone(),
            stop_rx.clone(),
        ));
        let worker_task = self
            .worker
            .take()
            .map(|worker| tokio::spawn(worker.run(stop_rx.clone())));
        // Dropped, not awaited, at the end: a key read stuck on a dead mount ends nothing.
        let _keys_task = tokio::spawn(self.authenticator.clone().reload_keys(stop_rx.clone()));

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (appended_tx, appended) = tokio::sync::watch::channel(0u64);
        let listener_task = tokio::spawn(
            self.store
                .clone()
                .listen_for_appends(appended_tx, stop_rx.clone()),
        );
        let feed = EventFeed::new(stop_rx.clone());
        let feed_task = tokio::spawn(feed.clone().run(self.commands.clone(), appended));
        let relay_task = self.config.relay_enabled.then(|| {
            let config = RelayConfig {
                gather: self.config.relay_gather,
                ..RelayConfig::new()
            };
            let relay = Relay::new(self.store.clone(), self.metrics.clone(), config);
            tokio::spawn(relay.run(stop_rx.clone()))
        });
        let limits = &self.config.limits;
        let streams = Slots::new(
            limits.max_streams as usize,
            limits.max_streams_per_caller as usize,
        );
        let evidence = self.evidence.clone();
        let api = DisputeApi::new(
            self.commands.clone(),
            ApiParts {
                feed,
                streams,
                evidence,
                tokens: self.tokens.clone(),
                deadlines: self.deadlines,
            },
        );
        // The server-wide bound (README, "Limits"), tower's: a call takes one of
        // `DISPUTE_MAX_IN_FLIGHT` slots or is shed at once (`OVERLOADED`), never queued.
        // Only the dispute service's calls take one (health and reflection never wait on
        // it), and only once the gate has read their body: the gate asks the router for a
        // call after the read, and that is when the limit takes its permit.
        let metrics = self.metrics.clone();
        let disputes = ServiceBuilder::new()
            .layer_fn(Admitted::new)
            .load_shed()
            .concurrency_limit(self.config.max_in_flight as usize)
            // Admitted and not yet answered: inside the limit.
            .map_future(move |answer| {
                let in_flight = metrics.in_flight();
                async move {
                    let answer = answer.await;
                    drop(in_flight);
                    answer
                }
            })
            .service(DisputeServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES));

        // One budget from the signal to the exit (README, "Deploying"): the drain and the
        // worker's pass share `drain_share`, side by side; the span flush (in main) has the
        // rest.
        let drain = shutdown::drain_share(self.config.shutdown_grace);
        let stop_requested = Arc::new(std::sync::OnceLock::<Instant>::new());
        let requested = stop_requested.clone();
        let signal = async move {
            shutdown.await;
            let _ = requested.set(Instant::now());
            tracing::info!(?drain, "shutdown requested; draining");
            for service in ["", SERVICE_NAME] {
                reporter
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            let _ = stop_tx.send(true);
        };
        let server = Server::builder()
            // Clients keep HTTP/2 connections for hours: bounding their age lets new
            // replicas behind a ClusterIP get traffic. At the age, hyper's graceful
            // shutdown (GOAWAY 2^31-1, PING, GOAWAY with the last stream id, calls under
            // way finish); the grace is enforced by `grpc::incoming` below. Not tonic's
            // `max_connection_age_grace`: with it, tonic 0.14 sends no GOAWAY at all and
            // cuts the connection, and its calls, at age + grace (grpc/connections.rs).
            .max_connection_age(self.config.max_connection_age)
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .layer(GateLayer::new(
                self.authenticator.clone(),
                Shares::new(limits.max_in_flight_per_caller as usize),
                self.config.request_timeout,
                limits.request_body_timeout,
                self.metrics.clone(),
            ))
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(disputes)
            .serve_with_incoming_shutdown(
                grpc::incoming(
                    self.listener,
                    limits.max_connections as usize,
                    limits.handshake_timeout,
                    self.config
                        .max_connection_age
                        .saturating_add(self.config.max_connection_age_grace),
                ),
                signal,
            );
        tracing::info!(%addr, "serving");
        let mut draining = stop_rx.clone();
        let requested_at = stop_requested.clone();
        let drained = async move {
            stopped(&mut draining).await;
            let at = requested_at.get().copied().unwrap_or_else(Instant::now);
            tokio::time::sleep_until(at + drain).await;
        };
        tokio::select! {
            result = server => result.context("serving gRPC")?,
            () = drained => tracing::warn!("in-flight calls outlived the shutdown grace; closing anyway"),
        }
        health_task.abort();
        listener_task.abort();
        feed_task.abort();
        metrics_task.abort();
        let deadline = stop_requested.get().copied().unwrap_or_else(Instant::now) + drain;
        if let Some(relay) = relay_task {
            // The relay finishes its pass and gives its leases up (another replica takes
            // its partitions at once), within the same budget.
            let abort = relay.abort_handle();
            if tokio::time::timeout_at(deadline, relay).await.is_err() {
                abort.abort();
            }
        }
        if let Some(worker) = worker_task {
            // The pass under way finishes its transaction, within the same budget; at the
            // deadline it is dropped and its transaction rolled back.
            let abort = worker.abort_handle();
            if tokio::time::timeout_at(deadline, worker).await.is_err() {
                tracing::warn!("the deadline pass outlived the shutdown grace; stopping it");
                abort.abort();
            }
        }
        let _ = tokio::time::timeout_at(deadline, self.store.pool().close()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// SERVING only while the database answers and the schema is current.
async fn watch_health(store: Store, reporter: HealthReporter, interval: Duration, mut stop: Stop) {
    let mut last = None;
    loop {
        let healthy = match store.schema_is_current().await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "health check failed");
                false
            }
        };
        if last != Some(healthy) {
            let status = if healthy {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            tracing::info!(healthy, "health changed");
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            last = Some(healthy);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}
