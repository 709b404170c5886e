//! Prometheus metrics, served as text at `/metrics` on the admin listener
//! (`DISPUTE_METRICS_ADDR`). The README, "Observability", has the catalogue.
//!
//! Built on `metrics` + `metrics-exporter-prometheus`: the exporter renders the Prometheus
//! text format with real histogram buckets, and its recorder is used as an object, not
//! installed globally, so each `Application` (several run in one test process) has its own
//! registry. Counters change only after the transaction they count has committed. Gauges
//! that mirror live state (pool, exported spans) are read when scraped; the relay sets its
//! lag per partition as it runs.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use metrics::{Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::net::TcpListener;

use crate::{
    domain::{Change, DisputeState, EventKind, Order, Settlement},
    shutdown::{Stop, stopped},
    store::{self, Store},
};

/// Latency buckets, seconds: from a cached read to the request deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How long the listener pauses after a failed accept (say, out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Slow or idle scrapers are cut off after this long without a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

const RPC_HANDLED: &str = "grpc_server_handled_total";
const RPC_SECONDS: &str = "grpc_server_handling_seconds";
const RPC_IN_FLIGHT: &str = "grpc_server_in_flight_requests";
const STREAMS_OPEN: &str = "dispute_event_streams_open";
const POOL_CONNECTIONS: &str = "db_pool_connections";
const POOL_IDLE: &str = "db_pool_idle_connections";
const POOL_MAX: &str = "db_pool_max_connections";
const POOL_WAITERS: &str = "db_pool_waiters";
const OPENED: &str = "disputes_opened_total";
const CANCELLED: &str = "disputes_cancelled_total";
const RESOLVED: &str = "disputes_resolved_total";
const SETTLED: &str = "funds_settled_total";
const SETTLED_MINOR: &str = "funds_settled_minor_units_total";
const DEADLINES: &str = "deadlines_applied_total";
const RELAY_LAG: &str = "dispute_stream_relay_lag_seconds";
const EVENTS_RELAYED: &str = "dispute_stream_events_relayed_total";
const DELIVERY_LAG: &str = "dispute_stream_delivery_lag_seconds";
const DEADLINES_STUCK: &str = "dispute_deadline_candidates_stuck";
/// Delivery lag buckets, seconds: from a relay pass to a consumer days behind.
const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
const SPANS_ENDED: &str = "otel_spans_ended_total";
const SPANS_EXPORTED: &str = "otel_spans_exported_total";
const SPANS_FAILED: &str = "otel_spans_export_failed_total";

/// The service's metrics. Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(DELIVERY_LAG.to_owned()),
                DELIVERY_BUCKETS,
            )
            .expect("the delivery buckets are not empty")
            .build_recorder();
        let metrics = Self(Arc::new(Inner { recorder }));
        metrics.describe();
        metrics
    }

    fn describe(&self) {
        let counters = [
            (
                RPC_HANDLED,
                "RPCs completed, by method and gRPC status code.",
            ),
            (OPENED, "Disputes opened, by reason."),
            (CANCELLED, "Disputes cancelled by the buyer."),
            (RESOLVED, "Disputes resolved, by outcome."),
            (SETTLED, "Orders settled, by funds outcome and currency."),
            (
                SETTLED_MINOR,
                "Order amounts settled in minor units, by funds outcome and currency.",
            ),
            (
                DEADLINES,
                "Deadlines applied by the worker, by kind (PROTECTION_END included).",
            ),
            (
                EVENTS_RELAYED,
                "Events this replica's relay moved from the outbox into the stream's log.",
            ),
            (SPANS_ENDED, "Trace spans finished by the service."),
            (SPANS_EXPORTED, "Trace spans accepted by the OTLP exporter."),
            (
                SPANS_FAILED,
                "Trace spans lost because their export failed.",
            ),
        ];
        for (name, help) in counters {
            self.0
                .recorder
                .describe_counter(name.into(), None, SharedString::const_str(help));
        }
        let gauges = [
            (RPC_IN_FLIGHT, "RPCs admitted and not yet answered."),
            (STREAMS_OPEN, "WatchEvents streams open."),
            (
                POOL_CONNECTIONS,
                "Database connections open (idle or in use).",
            ),
            (POOL_IDLE, "Database connections open and idle."),
            (POOL_MAX, "Most database connections the pool opens."),
            (POOL_WAITERS, "Callers waiting for a database connection."),
            (
                RELAY_LAG,
                "Age of the oldest committed event not yet in the stream's log, by partition, as of this replica's last relay pass over it (0: none waits; only the partitions this replica holds).",
            ),
            (
                DEADLINES_STUCK,
                "Deadline candidates (disputes and protection ends) that failed to apply and are set aside until their retry time, as of this replica's last worker pass.",
            ),
        ];
        for (name, help) in gauges {
            self.0
                .recorder
                .describe_gauge(name.into(), None, SharedString::const_str(help));
        }
        self.0.recorder.describe_histogram(
            RPC_SECONDS.into(),
            Some(Unit::Seconds),
            SharedString::const_str("Time from admission to the response, by method."),
        );
        self.0.recorder.describe_histogram(
            DELIVERY_LAG.into(),
            Some(Unit::Seconds),
            SharedString::const_str(
                "Time from an event's occurrence to its hand-over to a WatchEvents consumer.",
            ),
        );
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.0
            .recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str) -> metrics::Gauge {
        self.0
            .recorder
            .register_gauge(&Key::from_static_name(name), &METADATA)
    }

    /// One RPC of `service` answered: its code (`grpc-status`) and how long it took.
    pub fn rpc_handled(
        &self,
        service: &'static str,
        method: &'static str,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        let service = Label::new("grpc_service", service);
        let method = Label::new("grpc_method", method);
        self.counter(
            RPC_HANDLED,
            vec![
                service.clone(),
                method.clone(),
                Label::new("grpc_code", code_name(code)),
            ],
        )
        .increment(1);
        self.0
            .recorder
            .register_histogram(
                &Key::from_parts(RPC_SECONDS, vec![service, method]),
                &METADATA,
            )
            .record(elapsed.as_secs_f64());
    }

    /// Marks an RPC in flight until the guard is dropped.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::up(self.gauge(RPC_IN_FLIGHT))
    }

    /// A WatchEvents stream opened; it reports its deliveries until the guard is dropped.
    pub fn stream_opened(&self) -> StreamGuard {
        StreamGuard {
            delivery_lag: self
                .0
                .recorder
                .register_histogram(&Key::from_static_name(DELIVERY_LAG), &METADATA),
            _open: GaugeGuard::up(self.gauge(STREAMS_OPEN)),
        }
    }

    /// The relay's last look at `partition`: its oldest waiting event is `age` seconds old.
    pub fn relay_lag(&self, partition: usize, age: f64) {
        self.0
            .recorder
            .register_gauge(
                &Key::from_parts(
                    RELAY_LAG,
                    vec![Label::new("partition", partition.to_string())],
                ),
                &METADATA,
            )
            .set(age);
    }

    /// The relay moved `count` events into the log.
    pub fn events_relayed(&self, count: u64) {
        self.counter(EVENTS_RELAYED, vec![]).increment(count);
    }

    /// A committed change to a dispute: opened, cancelled, resolved, settled, and which
    /// deadline did it when the worker did.
    pub fn dispute_changed(&self, change: &Change) {
        let dispute = &change.dispute;
        match change.event {
            EventKind::DisputeOpened => self
                .counter(
                    OPENED,
                    vec![Label::new("reason", store::reason_name(dispute.reason))],
                )
                .increment(1),
            kind => {
                if let Some(deadline) = deadline_kind(kind) {
                    self.deadline_applied(deadline);
                }
            }
        }
        match (dispute.state, dispute.outcome) {
            (DisputeState::Cancelled, _) if change.event == EventKind::DisputeCancelled => {
                self.counter(CANCELLED, vec![]).increment(1);
            }
            (DisputeState::Resolved, Some(outcome)) => self
                .counter(
                    RESOLVED,
                    vec![Label::new("outcome", store::outcome_name(outcome))],
                )
                .increment(1),
            _ => {}
        }
        if let Some(settlement) = &change.settlement {
            self.funds_settled(&change.order, settlement);
        }
    }

    /// A committed settlement.
    pub fn funds_settled(&self, order: &Order, settlement: &Settlement) {
        let labels = vec![
            Label::new("outcome", settlement.funds_state().as_str()),
            Label::new("currency", order.amount.currency.as_str().to_owned()),
        ];
        self.counter(SETTLED, labels.clone()).increment(1);
        // Amounts are positive (a schema and domain rule), so the cast cannot wrap.
        self.counter(SETTLED_MINOR, labels)
            .increment(order.amount.minor.unsigned_abs());
    }

    /// The worker released an order's funds at the end of its protection.
    pub fn protection_ended(&self, order: &Order, settlement: &Settlement) {
        self.deadline_applied("PROTECTION_END");
        self.funds_settled(order, settlement);
    }

    /// Deadline candidates set aside after failing to apply (counted by the worker's pass).
    pub fn deadline_candidates_stuck(&self, stuck: i64) {
        self.gauge(DEADLINES_STUCK).set(stuck as f64);
    }

    fn deadline_applied(&self, kind: &'static str) {
        self.counter(DEADLINES, vec![Label::new("kind", kind)])
            .increment(1);
    }

    /// The Prometheus text: live gauges are read now, counters are what they are.
    pub async fn render(&self, store: &Store) -> String {
        let pool = store.pool();
        self.gauge(POOL_CONNECTIONS).set(f64::from(pool.size()));
        self.gauge(POOL_IDLE).set(pool.num_idle() as f64);
        self.gauge(POOL_MAX)
            .set(f64::from(pool.options().get_max_connections()));
        self.gauge(POOL_WAITERS).set(store.waiters() as f64);
        let (ended, exported, failed) = crate::telemetry::span_counters();
        for (name, value) in [
            (SPANS_ENDED, ended),
            (SPANS_EXPORTED, exported),
            (SPANS_FAILED, failed),
        ] {
            self.counter(name, vec![]).absolute(value);
        }
        let handle = self.0.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }

    /// Folds the samples histograms recorded since the last upkeep into their buckets. The
    /// exporter keeps every sample until then: without it, a server nobody scrapes grows by
    /// every request it serves (the soak found 18 → 34 MiB in 10 minutes).
    pub fn upkeep(&self) {
        self.0.recorder.handle().run_upkeep();
    }
}

/// The gRPC code as grpc-go and its Prometheus middleware spell it (`OK`, `NotFound`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Which deadline an event applied, if it was one (its name in the deadline table).
fn deadline_kind(event: EventKind) -> Option<&'static str> {
    crate::domain::rule_of(event).map(|rule| rule.name)
}

/// Holds a gauge one higher while alive.
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    fn up(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// An open WatchEvents stream; [`StreamGuard::delivered`] records each hand-over.
pub struct StreamGuard {
    delivery_lag: metrics::Histogram,
    _open: GaugeGuard,
}

impl StreamGuard {
    /// An event that occurred at `occurred_at` was handed to the consumer now.
    pub fn delivered(&self, occurred_at: chrono::DateTime<chrono::Utc>) {
        let lag = (chrono::Utc::now() - occurred_at)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        self.delivery_lag.record(lag.max(0) as f64 / 1e6);
    }
}

/// Serves `GET /metrics` on `listener` until `stop`. Anything else is 404. HTTP/1.1 only,
/// one task per scraper, cut off when the request head is slow. Folds the histograms'
/// pending samples every [`UPKEEP_EVERY`] whether or not anyone scrapes.
pub async fn serve(listener: TcpListener, metrics: Metrics, store: Store, mut stop: Stop) {
    use hyper::{Response, StatusCode, body::Incoming, service::service_fn};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (socket, _) = tokio::select! {
            _ = upkeep.tick() => {
                metrics.upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let (metrics, store) = (metrics.clone(), store.clone());
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move {
                if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            metrics.render(&store).await,
                        )))
                } else {
                    Response::builder().status(StatusCode::NOT_FOUND).body(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            b"not found; metrics are at /metrics\n",
                        )),
                    )
                }
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_has_the_grpc_go_spelling() {
        // grpc-go's codes.Code String() spellings, the labels dashboards are written for.
        use tonic::Code::*;
        let spelled = [
            (Ok, "OK"),
            (Cancelled, "Canceled"),
            (Unknown, "Unknown"),
            (InvalidArgument, "InvalidArgument"),
            (DeadlineExceeded, "DeadlineExceeded"),
            (NotFound, "NotFound"),
            (AlreadyExists, "AlreadyExists"),
            (PermissionDenied, "PermissionDenied"),
            (ResourceExhausted, "ResourceExhausted"),
            (FailedPrecondition, "FailedPrecondition"),
            (Aborted, "Aborted"),
            (OutOfRange, "OutOfRange"),
            (Unimplemented, "Unimplemented"),
            (Internal, "Internal"),
            (Unavailable, "Unavailable"),
            (DataLoss, "DataLoss"),
            (Unauthenticated, "Unauthenticated"),
        ];
        // All 17 codes, each once.
        let numbers: std::collections::BTreeSet<i32> =
            spelled.iter().map(|(code, _)| *code as i32).collect();
        assert_eq!(numbers, (0..=16).collect());
        for (code, name) in spelled {
            assert_eq!(code_name(code), name, "{code:?}");
        }
    }

    #[test]
    fn only_deadline_events_count_as_deadlines() {
        assert_eq!(
            deadline_kind(EventKind::SellerResponseDeadlinePassed),
            Some("SELLER_RESPONSE")
        );
        assert_eq!(
            deadline_kind(EventKind::ReturnReceiptDeadlinePassed),
            Some("RETURN_RECEIPT")
        );
        assert_eq!(deadline_kind(EventKind::DisputeOpened), None);
        assert_eq!(deadline_kind(EventKind::FundsResolved), None);
    }
}
