//! `spawn_app`: a real server on 127.0.0.1:0 over the test's own fresh database, a
//! manual clock, and clients that carry a token for any role.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use clap::Parser;
use dispute_service::{
    clock::Clock,
    clock::ManualClock,
    commands::Commands,
    config::{Cli, Command, ServeConfig},
    domain::Role,
    grpc::{
        auth,
        pb::{self, dispute_service_client::DisputeServiceClient},
    },
    metrics::Metrics,
    startup::Application,
    store::Store,
    worker::{DeadlineWorker, Pass},
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::sync::oneshot;
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

pub const SECRET: &str = "integration-test-secret-0123456789";

pub type Client = DisputeServiceClient<InterceptedService<Channel, Bearer>>;

/// Puts a fixed `authorization` header on every call.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// `header` as the `authorization` value, or none.
    pub fn new(header: Option<&str>) -> Self {
        Self(header.map(|h| MetadataValue::try_from(h).unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A server on 127.0.0.1:0, stopped (as by SIGTERM) when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    /// Where the server answers `GET /metrics`.
    pub metrics_addr: std::net::SocketAddr,
    /// The server's metrics, for deadline workers the test runs itself.
    pub metrics: Metrics,
    /// One connection per role, shared by every client of that role.
    channels: std::sync::Mutex<std::collections::HashMap<Role, Channel>>,
    pub config: ServeConfig,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A server over the test's own fresh database, on a clock the test moves.
pub struct TestApp {
    pub server: Server,
    pub clock: Arc<ManualClock>,
    /// The server's own pool (the test's fresh database).
    pub pool: PgPool,
}

impl std::ops::Deref for TestApp {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

pub fn serve_config(extra: &[&str]) -> ServeConfig {
    let mut args = vec![
        "dispute-service",
        "serve",
        "--database-url",
        "postgres://unused",
        "--jwt-hs256-secret",
        SECRET,
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--health-interval",
        "200ms",
        // Tests drive deadlines themselves (`TestApp::worker`), except where they say so.
        "--worker-enabled",
        "false",
    ];
    args.extend_from_slice(extra);
    match Cli::parse_from(args).command {
        Command::Serve(config) => *config,
        _ => unreachable!(),
    }
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, &[]).await
}

/// Starts a server with extra `serve` flags, e.g. `["--max-disputes-per-order", "1"]`.
pub async fn spawn_app_with(pool: PgPool, extra: &[&str]) -> TestApp {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    // The test database's own pool is small; the server gets one sized like production.
    let server_pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("connecting to the test database");
    let server = start(serve_config(extra), server_pool.clone(), clock.clone()).await;
    TestApp {
        server,
        clock,
        pool: server_pool,
    }
}

/// Starts the real application with `config` on `pool` and `clock`.
pub async fn start(config: ServeConfig, pool: PgPool, clock: Arc<dyn Clock>) -> Server {
    let app = Application::build(config.clone(), pool, clock)
        .await
        .expect("building the app");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let metrics = app.metrics();
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        metrics_addr,
        metrics,
        channels: Default::default(),
        config,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl Server {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connecting to the test server")
    }

    pub async fn client_with_header(&self, header: Option<&str>) -> Client {
        DisputeServiceClient::with_interceptor(self.channel().await, Bearer::new(header))
    }

    /// A client for `role` and `sub` on the role's one shared connection.
    pub async fn client(&self, role: Role, sub: &str) -> Client {
        let channel = self
            .channels
            .lock()
            .unwrap()
            .entry(role)
            .or_insert_with(|| {
                Channel::from_shared(format!("http://{}", self.addr))
                    .unwrap()
                    .connect_lazy()
            })
            .clone();
        with_token(channel, role, sub)
    }

    pub async fn service(&self) -> Client {
        self.client(Role::Service, "order-service").await
    }
    pub async fn buyer(&self) -> Client {
        self.client(Role::Buyer, "buyer-1").await
    }
    pub async fn seller(&self) -> Client {
        self.client(Role::Seller, "seller-1").await
    }
    pub async fn agent(&self) -> Client {
        self.client(Role::Agent, "agent-1").await
    }

    /// The order, as an agent sees it.
    pub async fn order(&self, order_id: &str) -> pb::Order {
        let request = pb::GetOrderRequest {
            order_id: order_id.into(),
        };
        self.agent()
            .await
            .get_order(request)
            .await
            .expect("getting the order")
            .into_inner()
            .order
            .unwrap()
    }

    /// The dispute, as an agent sees it.
    pub async fn dispute(&self, dispute_id: &str) -> pb::Dispute {
        let request = pb::GetDisputeRequest {
            dispute_id: dispute_id.into(),
        };
        self.agent()
            .await
            .get_dispute(request)
            .await
            .expect("getting the dispute")
            .into_inner()
            .dispute
            .unwrap()
    }

    /// Stops the server as SIGTERM would and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }
}

/// Reads events from `stream` until `count` arrived or `wait` passed with nothing new.
pub async fn take(
    stream: &mut tonic::Streaming<pb::WatchEventsResponse>,
    count: usize,
    wait: std::time::Duration,
) -> Vec<pb::Event> {
    use tokio_stream::StreamExt;
    let mut events = Vec::new();
    while events.len() < count {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(message))) => events.push(message.event.unwrap()),
            Ok(Some(Err(status))) => panic!("stream failed: {status:?}"),
            Ok(None) | Err(_) => break,
        }
    }
    events
}

/// Every event of the stream, as a table: the log, and the outbox rows the relay has yet to
/// move (README, "Consuming the event stream"). A union, not a union all: a row the relay
/// has appended but not yet deleted from the outbox is in both for a moment.
pub const STREAM_ROWS: &str = "(SELECT event_id, event_type, order_id, order_sequence, dispute_id, \
     actor_role, actor_id, occurred_at, payload, trace_id FROM event_log \
     UNION SELECT event_id, event_type, order_id, order_sequence, dispute_id, actor_role, \
     actor_id, occurred_at, payload, trace_id FROM outbox) AS streamed";

/// The event stream after `after` (empty: from the oldest event kept), as the service.
pub async fn watch(app: &TestApp, after: &str) -> tonic::Streaming<pb::WatchEventsResponse> {
    let request = pb::WatchEventsRequest {
        after_cursor: after.into(),
    };
    app.service()
        .await
        .watch_events(request)
        .await
        .unwrap()
        .into_inner()
}

/// A client of the server at `addr` (configured as `serve_config` does) for `role` and `sub`.
pub async fn client_at(addr: std::net::SocketAddr, role: Role, sub: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the server");
    with_token(channel, role, sub)
}

/// A valid token for `role` and `sub`, as the test servers are configured.
pub fn token(role: Role, sub: &str) -> String {
    auth::mint_hs256(&serve_config(&[]).auth, role, sub, Duration::from_secs(600)).unwrap()
}

/// A deadline worker on `pool` with `clock`, configured by `config`.
fn worker_for(
    pool: PgPool,
    clock: Arc<ManualClock>,
    config: &ServeConfig,
    metrics: Metrics,
) -> DeadlineWorker {
    let commands = Commands::new(
        Store::new(pool),
        clock,
        config.max_disputes_per_order,
        config.worker.deadlines().unwrap(),
        metrics,
    );
    DeadlineWorker::new(commands, config.worker.to_config().unwrap())
}

/// A client on `channel` carrying a token for `role` and `sub`.
pub fn with_token(channel: Channel, role: Role, sub: &str) -> Client {
    let token = token(role, sub);
    let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    DisputeServiceClient::with_interceptor(channel, Bearer(Some(value)))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    /// A deadline worker over the server's database and clock, configured as the server.
    pub fn worker(&self) -> DeadlineWorker {
        self.worker_on(self.pool.clone())
    }

    /// One pass of a deadline worker as another replica runs it: a thread and a tokio
    /// runtime of its own (two threads, as a pod of two cores), its own pool of
    /// `connections` on the server's database, the server's clock and configuration.
    /// The pass and how long it took.
    pub async fn replica_pass(&self, connections: u32) -> (Pass, std::time::Duration) {
        let (clock, config, metrics) = (
            self.clock.clone(),
            self.config.clone(),
            self.server.metrics.clone(),
        );
        let options = (*self.pool.connect_options()).clone();
        let replica = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let pool = PgPoolOptions::new()
                    .max_connections(connections)
                    .connect_with(options)
                    .await
                    .expect("connecting to the test database");
                let worker = worker_for(pool, clock, &config, metrics);
                let started = std::time::Instant::now();
                let pass = worker.run_once().await.expect("a deadline pass");
                (pass, started.elapsed())
            })
        });
        tokio::task::spawn_blocking(move || replica.join().expect("the replica's thread"))
            .await
            .unwrap()
    }

    fn worker_on(&self, pool: PgPool) -> DeadlineWorker {
        worker_for(
            pool,
            self.clock.clone(),
            &self.config,
            self.server.metrics.clone(),
        )
    }

    /// Applies every deadline due now, once.
    pub async fn run_deadlines(&self) -> Pass {
        self.worker().run_once().await.expect("a deadline pass")
    }

    pub fn now(&self) -> DateTime<Utc> {
        use dispute_service::clock::Clock;
        self.clock.now()
    }

    /// Registers `order_id` for buyer-1 / seller-1, 10000 USD cents, protection for 30 days.
    pub async fn register(&self, order_id: &str) -> pb::Order {
        self.service()
            .await
            .register_order(register_request(
                order_id,
                self.now() + chrono::Duration::days(30),
            ))
            .await
            .expect("registering an order")
            .into_inner()
            .order
            .unwrap()
    }

    pub async fn open(&self, order_id: &str, remedy: pb::Remedy) -> pb::Dispute {
        self.buyer()
            .await
            .open_dispute(open_request(order_id, remedy))
            .await
            .expect("opening a dispute")
            .into_inner()
            .dispute
            .unwrap()
    }
}

pub fn usd(minor: i64) -> pb::Money {
    pb::Money {
        currency_code: "USD".into(),
        amount_minor: minor,
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The inverse of [`timestamp`].
pub fn from_timestamp(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("a timestamp in range")
}

/// Moves the clock to a microsecond before the dispute's announced deadline (nothing may
/// happen), then to it (its consequence must); the dispute afterwards.
pub async fn at_the_deadline(
    app: &TestApp,
    id: &str,
    kind: pb::DeadlineKind,
    consequence: pb::DeadlineConsequence,
) -> pb::Dispute {
    let before = app.dispute(id).await;
    let next = before.next_deadline.expect("a countdown");
    assert_eq!((next.kind(), next.consequence()), (kind, consequence));
    let due = from_timestamp(next.due_at.as_ref().unwrap());
    app.clock
        .advance(due - app.now() - chrono::Duration::microseconds(1));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "{kind:?} fired early"
    );
    assert_eq!(app.dispute(id).await.state, before.state);
    app.clock.advance(chrono::Duration::microseconds(1));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        1,
        "{kind:?} did not fire at due_at"
    );
    app.dispute(id).await
}

pub fn register_request(
    order_id: &str,
    protection_ends_at: DateTime<Utc>,
) -> pb::RegisterOrderRequest {
    pb::RegisterOrderRequest {
        order_id: order_id.into(),
        buyer_id: "buyer-1".into(),
        seller_id: "seller-1".into(),
        amount: Some(usd(10_000)),
        protection_ends_at: Some(timestamp(protection_ends_at)),
        request_id: format!("register-{order_id}"),
    }
}

pub fn open_request(order_id: &str, remedy: pb::Remedy) -> pb::OpenDisputeRequest {
    pb::OpenDisputeRequest {
        order_id: order_id.into(),
        reason: pb::DisputeReason::NotAsDescribed as i32,
        remedy: remedy as i32,
        refund_amount: (remedy == pb::Remedy::PartialRefund).then(|| usd(2_500)),
        description: "the colour is wrong".into(),
        evidence_urls: vec!["s3://evidence/photo-1.jpg".into()],
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn cancel_request(dispute_id: &str) -> pb::CancelDisputeRequest {
    pb::CancelDisputeRequest {
        dispute_id: dispute_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn cancel_return_request(dispute_id: &str) -> pb::CancelReturnRequest {
    pb::CancelReturnRequest {
        dispute_id: dispute_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn resolve_request(
    dispute_id: &str,
    outcome: pb::ResolveOutcome,
    refund: Option<i64>,
) -> pb::ResolveFundsRequest {
    pb::ResolveFundsRequest {
        dispute_id: dispute_id.into(),
        outcome: outcome as i32,
        refund_amount: refund.map(usd),
        note: "evidence reviewed".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// The status code and `ErrorInfo` reason of a failed call; asserts the domain.
pub fn reason<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("the call should have failed");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "dispute.v1");
    (status.code(), info.reason)
}

/// The fields of a BadRequest on a failed call.
pub fn violated_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

pub fn accept(dispute_id: &str) -> pb::RespondToDisputeRequest {
    pb::RespondToDisputeRequest {
        dispute_id: dispute_id.into(),
        decision: pb::SellerDecision::Accept as i32,
        request_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    }
}

pub fn propose(
    dispute_id: &str,
    remedy: pb::Remedy,
    refund: Option<i64>,
) -> pb::RespondToDisputeRequest {
    pb::RespondToDisputeRequest {
        dispute_id: dispute_id.into(),
        decision: pb::SellerDecision::Propose as i32,
        counter_remedy: remedy as i32,
        counter_refund_amount: refund.map(usd),
        message: "how about this instead".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn accept_proposal(dispute_id: &str) -> pb::AcceptProposalRequest {
    pb::AcceptProposalRequest {
        dispute_id: dispute_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn escalate(dispute_id: &str) -> pb::EscalateDisputeRequest {
    pb::EscalateDisputeRequest {
        dispute_id: dispute_id.into(),
        reason: "we cannot agree".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn ship(dispute_id: &str) -> pb::SubmitReturnShipmentRequest {
    pb::SubmitReturnShipmentRequest {
        dispute_id: dispute_id.into(),
        carrier: "UPS".into(),
        tracking_number: "1Z999AA10123456784".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn confirm(dispute_id: &str) -> pb::ConfirmReturnReceivedRequest {
    pb::ConfirmReturnReceivedRequest {
        dispute_id: dispute_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn ship_replacement(dispute_id: &str) -> pb::SubmitReplacementShipmentRequest {
    pb::SubmitReplacementShipmentRequest {
        dispute_id: dispute_id.into(),
        carrier: "DHL".into(),
        tracking_number: "JD014600006281".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn confirm_replacement(dispute_id: &str) -> pb::ConfirmReplacementReceivedRequest {
    pb::ConfirmReplacementReceivedRequest {
        dispute_id: dispute_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn message(dispute_id: &str, text: &str) -> pb::PostDisputeMessageRequest {
    pb::PostDisputeMessageRequest {
        dispute_id: dispute_id.into(),
        text: text.into(),
        evidence_urls: vec![],
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub fn extend(order_id: &str, new_end: DateTime<Utc>) -> pb::ExtendProtectionRequest {
    pb::ExtendProtectionRequest {
        order_id: order_id.into(),
        new_end: Some(timestamp(new_end)),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// The kinds of a dispute's history, in order.
pub async fn history(pool: &PgPool, dispute_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM dispute_events WHERE dispute_id = $1::uuid ORDER BY seq")
        .bind(dispute_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits until the relay has appended every committed event to the stream's log: on Citus
/// the store's record counts an event when the relay appends it (README, "The store's
/// record"); on one PostgreSQL the record is exact at commit, and this changes nothing.
pub async fn relayed(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .unwrap();
        if waiting == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} events still wait for the relay after a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the test's database is on a Citus cluster (README, "Running on Citus").
pub async fn on_citus(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A TCP port on 127.0.0.1 free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A small deterministic generator (xorshift): a generated script is the same on every run.
pub struct Dice(pub u64);

impl Dice {
    pub fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}
