//! Traces leave the real binary over OTLP/gRPC to a receiver in the test, configured by
//! the standard `OTEL_*` variables only; a collector that hangs never slows a call.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dispute_service::{
    domain::Role,
    grpc::pb::{self, Remedy},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value},
    trace::v1::{Span, span::SpanKind},
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use crate::{helpers::*, process::Binary};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const FAILED_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// A resource's attributes, as text.
type Resource = Vec<(String, String)>;

/// An OTLP trace receiver: keeps every span it is sent, with its resource's attributes.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(Resource, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource: Resource = resource_spans
                .resource
                .map(|r| {
                    r.attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(kv.value)))
                        .collect()
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((resource.clone(), span));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        endpoint
    }

    fn spans(&self) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, span)| span.clone()).collect()
    }
}

fn text(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.clone()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_traceparent<T>(message: T, trace_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    request
}

/// The SERVER span of `method` in trace `trace_id`.
fn server_span<'a>(spans: &'a [Span], trace_id: &str, method: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| {
            hex(&s.trace_id) == trace_id
                && s.kind == SpanKind::Server as i32
                && attribute(s, "rpc.method").as_deref() == Some(method)
        })
        .unwrap_or_else(|| panic!("no SERVER span for {method} in trace {trace_id}"))
}

/// True when `span` descends from `ancestor` through spans of `spans`.
fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == parent) {
            Some(next) => parent = next.parent_span_id.clone(),
            None => return false,
        }
    }
    false
}

#[sqlx::test]
async fn a_call_with_a_traceparent_is_exported_as_a_child_server_span_with_its_sql(pool: PgPool) {
    let receiver = Receiver::default();
    let endpoint = receiver.clone().start().await;
    // A long batch delay: the spans can only arrive through the flush on SIGTERM.
    let binary = Binary::serve(
        &pool,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_SERVICE_NAME", "dispute-service-under-test"),
        ],
    );
    let mut service = client_at(binary.addr, Role::Service, "order-service").await;
    let mut buyer = client_at(binary.addr, Role::Buyer, "buyer-1").await;
    let protection = chrono::Utc::now() + chrono::Duration::days(30);
    service
        .register_order(register_request("order-1", protection))
        .await
        .unwrap();
    let dispute = buyer
        .open_dispute(with_traceparent(
            open_request("order-1", Remedy::FullRefund),
            TRACE_ID,
        ))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    let missing = buyer
        .get_order(with_traceparent(
            pb::GetOrderRequest {
                order_id: "no-such-order".into(),
            },
            FAILED_TRACE_ID,
        ))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    // The history records the trace the caller started.
    let events = buyer
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: dispute.dispute_id.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].trace_id, TRACE_ID);

    let log = binary.log();
    let status = binary.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");

    let spans = receiver.spans();
    let open = server_span(&spans, TRACE_ID, "OpenDispute");
    println!("{} spans exported; OpenDispute: {open:#?}", spans.len());
    assert_eq!(hex(&open.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(open.name, "dispute.v1.DisputeService/OpenDispute");
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "dispute.v1.DisputeService"),
        ("rpc.method", "OpenDispute"),
        ("rpc.grpc.status_code", "0"),
        ("actor.role", "BUYER"),
        ("order.id", "order-1"),
        ("dispute.id", dispute.dispute_id.as_str()),
    ] {
        assert_eq!(attribute(open, key).as_deref(), Some(value), "{key}");
    }
    let sql: Vec<&Span> = spans
        .iter()
        .filter(|s| attribute(s, "db.system").as_deref() == Some("postgresql"))
        .filter(|s| descends_from(&spans, s, open))
        .collect();
    assert!(
        sql.iter().any(|s| s.name == "SELECT orders"
            && attribute(s, "db.operation").as_deref() == Some("SELECT")
            && attribute(s, "db.sql.table").as_deref() == Some("orders")),
        "no SELECT orders under OpenDispute: {:?}",
        sql.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(sql.iter().any(|s| s.name == "INSERT disputes"));
    assert!(sql.iter().any(|s| s.name == "COMMIT"));
    // Each span of the call lies within the call's: it starts after the call's span starts
    // and ends before it ends (the service's span layer ends a span when it closes).
    assert!(open.end_time_unix_nano > open.start_time_unix_nano);
    for s in &sql {
        assert!(
            open.start_time_unix_nano <= s.start_time_unix_nano
                && s.start_time_unix_nano <= s.end_time_unix_nano
                && s.end_time_unix_nano <= open.end_time_unix_nano,
            "{} [{}, {}] outside OpenDispute [{}, {}]",
            s.name,
            s.start_time_unix_nano,
            s.end_time_unix_nano,
            open.start_time_unix_nano,
            open.end_time_unix_nano
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "transaction" && descends_from(&spans, s, open))
    );

    let failed = server_span(&spans, FAILED_TRACE_ID, "GetOrder");
    assert_eq!(
        attribute(failed, "rpc.grpc.status_code").as_deref(),
        Some("5")
    );

    // The resource names the service as configured.
    let resources = receiver.spans.lock().unwrap();
    assert!(resources.iter().all(|(resource, _)| {
        resource.contains(&("service.name".into(), "dispute-service-under-test".into()))
    }));

    // Nothing secret or free-text in any exported attribute.
    let description = open_request("x", Remedy::FullRefund).description;
    let secrets = [SECRET, "Bearer", "eyJ", description.as_str()];
    for (_, span) in resources.iter() {
        for kv in &span.attributes {
            let value = text(kv.value.clone());
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "{} = {value} leaks {secret}",
                    kv.key
                );
            }
        }
    }

    // Log lines written inside the request carry its trace and span ids.
    let opened = log
        .iter()
        .find(|line| line["fields"]["message"] == "dispute changed")
        .expect("a 'dispute changed' line");
    println!("a log line: {opened}");
    assert_eq!(opened["trace_id"], TRACE_ID);
    assert_eq!(opened["span_id"].as_str().map(str::len), Some(16));
}

/// Accepts connections and never answers: an export hangs until its own timeout.
async fn blackhole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    endpoint
}

/// A `RUST_LOG` directive scoped to a span logs what runs inside that span and nothing
/// else: here sqlx's statement lines (`sqlx::query`, debug) inside an RPC's span. The
/// service tells the log layer's filter which span is entered only when `RUST_LOG` scopes
/// a directive to a span (`telemetry::Unentered`); this proves it does then.
#[sqlx::test]
async fn a_log_directive_scoped_to_the_rpc_span_logs_the_calls_statements_only(pool: PgPool) {
    let binary = Binary::serve(&pool, &[("RUST_LOG", "info,[rpc]=debug")]);
    let statements = |binary: &Binary| -> Vec<serde_json::Value> {
        let log = binary.log().into_iter();
        log.filter(|line| line["target"] == "sqlx::query").collect()
    };
    // Serving: its startup statements (the migrations' check among them) ran, in no RPC.
    assert_eq!(statements(&binary), Vec::<serde_json::Value>::new());
    let mut service = client_at(binary.addr, Role::Service, "order-service").await;
    let protection = chrono::Utc::now() + chrono::Duration::days(30);
    service
        .register_order(register_request("order-1", protection))
        .await
        .unwrap();
    let inside = statements(&binary);
    assert!(
        !inside.is_empty(),
        "RegisterOrder's statements were not logged"
    );
    for line in inside {
        assert_eq!(line["span"]["name"], "rpc", "{line}");
    }
    assert!(binary.terminate(Duration::from_secs(20)).await.success());
}

/// Latencies of `calls` GetOrder calls on `order_id` against `binary`, sorted.
async fn latencies(binary: &Binary, order_id: &str, calls: usize) -> Vec<Duration> {
    let mut service = client_at(binary.addr, Role::Service, "order-service").await;
    let protection = chrono::Utc::now() + chrono::Duration::days(30);
    service
        .register_order(register_request(order_id, protection))
        .await
        .unwrap();
    let mut took = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        service
            .get_order(pb::GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("every call succeeds");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

#[sqlx::test]
async fn a_collector_that_hangs_never_slows_or_fails_a_call(pool: PgPool) {
    let baseline = Binary::serve(&pool, &[]);
    let quiet = latencies(&baseline, "order-1", 200).await;
    assert!(baseline.terminate(Duration::from_secs(20)).await.success());

    let endpoint = blackhole().await;
    let binary = Binary::serve(
        &pool,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ],
    );
    let hung = latencies(&binary, "order-2", 200).await;
    let p50 = |v: &[Duration]| v[v.len() / 2];
    println!(
        "GetOrder p50 / max: no collector {:?} / {:?}; hanging collector {:?} / {:?}",
        p50(&quiet),
        quiet[quiet.len() - 1],
        p50(&hung),
        hung[hung.len() - 1],
    );
    // An export blocks for its 30 s timeout; had any call waited on one, it would show.
    assert!(
        hung[hung.len() - 1] < Duration::from_secs(5),
        "a call waited on the exporter: {:?}",
        hung[hung.len() - 1]
    );
    // The flush on SIGTERM gives up after a few seconds instead of hanging the shutdown.
    assert!(binary.terminate(Duration::from_secs(30)).await.success());
}

/// The database round trips of each write, counted from its exported statement spans
/// (BEGIN, each statement, COMMIT): exactly the statements its rows need, one per table it
/// writes, each naming the order (README, "Performance"): the lock (which reads the
/// request's key too), the rows, the events (the history's last number read first when it
/// goes on), the key with its reply; a dispute's command first finds its order in the
/// directory, and a new dispute is filed there (on Citus once committed). A replay is the
/// lock statement alone: it found the key and its reply.
#[sqlx::test]
async fn every_write_runs_exactly_the_statements_its_rows_need(pool: PgPool) {
    let receiver = Receiver::default();
    let endpoint = receiver.clone().start().await;
    let binary = Binary::serve(&pool, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let mut service = client_at(binary.addr, Role::Service, "order-service").await;
    let mut buyer = client_at(binary.addr, Role::Buyer, "buyer-1").await;
    let mut seller = client_at(binary.addr, Role::Seller, "seller-1").await;
    let trace = |n: u32| format!("{:032x}", 0xabc0 + n);
    let protection = chrono::Utc::now() + chrono::Duration::days(30);
    service
        .register_order(with_traceparent(
            register_request("order-1", protection),
            &trace(1),
        ))
        .await
        .unwrap();
    let open = open_request("order-1", Remedy::FullRefund);
    let dispute = buyer
        .open_dispute(with_traceparent(open.clone(), &trace(2)))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    buyer
        .open_dispute(with_traceparent(open, &trace(3)))
        .await
        .unwrap();
    seller
        .extend_protection(with_traceparent(
            extend("order-1", protection + chrono::Duration::days(5)),
            &trace(4),
        ))
        .await
        .unwrap();
    // A full refund accepted: the dispute, the order, the ledger and two events.
    seller
        .respond_to_dispute(with_traceparent(accept(&dispute.dispute_id), &trace(5)))
        .await
        .unwrap();
    assert!(binary.terminate(Duration::from_secs(20)).await.success());

    let spans = receiver.spans();
    let statements = |n: u32, method: &str| {
        let call = server_span(&spans, &trace(n), method);
        let mut statements: Vec<(u64, String)> = spans
            .iter()
            .filter(|s| attribute(s, "db.system").as_deref() == Some("postgresql"))
            .filter(|s| attribute(s, "db.operation").is_some())
            .filter(|s| descends_from(&spans, s, call))
            // Whether the database is distributed is read once per process, by whichever
            // caller asks first: not a statement of the command's.
            .filter(|s| s.name != "SELECT pg_extension")
            .map(|s| (s.start_time_unix_nano, s.name.clone()))
            .collect();
        statements.sort_by_key(|(start, _)| *start);
        statements
            .into_iter()
            .map(|(_, name)| name)
            .collect::<Vec<_>>()
    };
    // The lock statement reads the request's idempotency key; the write's last statement
    // inserts it with the reply.
    let lock_and_read_key = |lock: &'static str| vec!["BEGIN", lock];
    let mut register = lock_and_read_key("SELECT orders");
    register.extend([
        "INSERT orders",
        "INSERT outbox",
        "INSERT idempotency_keys",
        "COMMIT",
    ]);
    assert_eq!(statements(1, "RegisterOrder"), register);
    let mut open = lock_and_read_key("SELECT orders");
    open.extend([
        "UPDATE orders",
        "INSERT disputes",
        "INSERT dispute_events",
        "INSERT outbox",
        "INSERT idempotency_keys",
    ]);
    // The new dispute's directory row: on one node in the command's transaction, on Citus
    // (another shard) after it.
    if on_citus(&pool).await {
        open.extend(["COMMIT", "INSERT dispute_directory"]);
    } else {
        open.extend(["INSERT dispute_directory", "COMMIT"]);
    }
    assert_eq!(statements(2, "OpenDispute"), open);
    // A replay: the lock statement found the key and its reply.
    assert_eq!(
        statements(3, "OpenDispute"),
        lock_and_read_key("SELECT orders"),
        "a replay"
    );
    let mut extend = lock_and_read_key("SELECT orders");
    extend.extend([
        "UPDATE orders",
        "SELECT dispute_events",
        "INSERT dispute_events",
        "INSERT outbox",
        "INSERT idempotency_keys",
        "COMMIT",
    ]);
    assert_eq!(statements(4, "ExtendProtection"), extend);
    let mut respond = vec!["SELECT dispute_directory"];
    respond.extend(lock_and_read_key("SELECT disputes"));
    respond.extend([
        "UPDATE orders",
        "UPDATE disputes",
        "INSERT settlements",
        "SELECT dispute_events",
        "INSERT dispute_events",
        "INSERT outbox",
        "INSERT idempotency_keys",
        "COMMIT",
    ]);
    assert_eq!(statements(5, "RespondToDispute"), respond);
}
