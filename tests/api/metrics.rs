//! `/metrics` after a scripted flow: every series the README lists, with the values the
//! flow must produce (counted by hand from the rules, not read from the code).

use std::collections::BTreeMap;

use chrono::Duration;
use dispute_service::grpc::pb::{self, DisputeReason, Remedy, ResolveOutcome};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

/// `GET path` over plain HTTP/1.1; the status line and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The Prometheus text as series → value, a series being its name and sorted labels.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match key.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (key, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        series.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    series
}

struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Scrape {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        *self
            .0
            .get(&(name.to_owned(), labels))
            .unwrap_or_else(|| panic!("no series {name} {labels_:?}", labels_ = self.names(name)))
    }

    fn names(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.0
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, labels)| labels)
            .collect()
    }

    fn rpc(&self, method: &str, code: &str) -> f64 {
        self.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "dispute.v1.DisputeService"),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    }
}

#[sqlx::test]
async fn a_scripted_flow_shows_in_every_series_with_the_values_the_rules_give(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut buyer = app.buyer().await;
    let mut agent = app.agent().await;
    for order in ["order-a", "order-b", "order-c", "order-d"] {
        app.register(order).await;
    }
    let mut stream = app
        .service()
        .await
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();

    // order-a: opened (NOT_AS_DESCRIBED), the same request again (a replay, counted once),
    // then cancelled by the buyer inside the protection window (funds stay held).
    let open_a = open_request("order-a", Remedy::FullRefund);
    let a = buyer.open_dispute(open_a.clone()).await.unwrap();
    buyer.open_dispute(open_a).await.unwrap();
    let a = a.into_inner().dispute.unwrap();
    buyer
        .cancel_dispute(cancel_request(&a.dispute_id))
        .await
        .unwrap();

    // order-b: ITEM_NOT_RECEIVED, an agent refunds in full.
    let mut open_b = open_request("order-b", Remedy::FullRefund);
    open_b.reason = DisputeReason::ItemNotReceived as i32;
    let b = buyer.open_dispute(open_b).await.unwrap().into_inner();
    agent
        .resolve_funds(resolve_request(
            &b.dispute.unwrap().dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await
        .unwrap();

    // order-c: QUALITY_ISSUE asking 2,500 of 10,000 back; the seller stays silent for 5
    // days, so the remedy is granted: a split.
    let mut open_c = open_request("order-c", Remedy::PartialRefund);
    open_c.reason = DisputeReason::QualityIssue as i32;
    buyer.open_dispute(open_c).await.unwrap();
    app.clock.advance(Duration::days(5) + Duration::seconds(1));
    app.run_deadlines().await;

    // Protection ends (30 days): order-a (dispute cancelled) and order-d (never disputed)
    // are released to the seller.
    app.clock.advance(Duration::days(26));
    app.run_deadlines().await;

    // One refused call.
    let missing = buyer
        .get_order(pb::GetOrderRequest {
            order_id: "no-such-order".into(),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let (status, body) = get(app.metrics_addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let scrape = Scrape(parse(&body));

    assert_eq!(scrape.rpc("RegisterOrder", "OK"), 4.0);
    assert_eq!(scrape.rpc("OpenDispute", "OK"), 4.0);
    assert_eq!(scrape.rpc("CancelDispute", "OK"), 1.0);
    assert_eq!(scrape.rpc("ResolveFunds", "OK"), 1.0);
    assert_eq!(scrape.rpc("GetOrder", "NotFound"), 1.0);
    assert_eq!(
        scrape.value(
            "grpc_server_handling_seconds_count",
            &[
                ("grpc_service", "dispute.v1.DisputeService"),
                ("grpc_method", "RegisterOrder")
            ]
        ),
        4.0
    );
    assert_eq!(scrape.value("grpc_server_in_flight_requests", &[]), 0.0);
    assert_eq!(scrape.value("dispute_event_streams_open", &[]), 1.0);

    for (reason, count) in [
        ("NOT_AS_DESCRIBED", 1.0),
        ("ITEM_NOT_RECEIVED", 1.0),
        ("QUALITY_ISSUE", 1.0),
    ] {
        assert_eq!(
            scrape.value("disputes_opened_total", &[("reason", reason)]),
            count,
            "{reason}"
        );
    }
    assert_eq!(scrape.value("disputes_cancelled_total", &[]), 1.0);
    for (outcome, count) in [("RESOLVED_BUYER_FAVOUR", 1.0), ("RESOLVED_PARTIAL", 1.0)] {
        assert_eq!(
            scrape.value("disputes_resolved_total", &[("outcome", outcome)]),
            count,
            "{outcome}"
        );
    }
    assert_eq!(scrape.names("disputes_resolved_total").len(), 2);
    for (outcome, count, minor) in [
        ("REFUNDED_TO_BUYER", 1.0, 10_000.0),
        ("SPLIT", 1.0, 10_000.0),
        ("RELEASED_TO_SELLER", 2.0, 20_000.0),
    ] {
        let labels = [("outcome", outcome), ("currency", "USD")];
        assert_eq!(
            scrape.value("funds_settled_total", &labels),
            count,
            "{outcome}"
        );
        assert_eq!(
            scrape.value("funds_settled_minor_units_total", &labels),
            minor,
            "{outcome}"
        );
    }
    assert_eq!(
        scrape.value("deadlines_applied_total", &[("kind", "SELLER_RESPONSE")]),
        1.0
    );
    assert_eq!(
        scrape.value("deadlines_applied_total", &[("kind", "PROTECTION_END")]),
        2.0
    );
    assert_eq!(scrape.names("deadlines_applied_total").len(), 2);
    assert_eq!(
        scrape.value("dispute_deadline_candidates_stuck", &[]),
        0.0,
        "every deadline applied: nothing set aside"
    );

    assert_eq!(scrape.value("db_pool_max_connections", &[]), 10.0);
    let open = scrape.value("db_pool_connections", &[]);
    assert!((1.0..=10.0).contains(&open), "{open}");
    assert!(scrape.value("db_pool_idle_connections", &[]) <= open);
    assert_eq!(scrape.value("db_pool_waiters", &[]), 0.0);
    // The stream has handed its consumer at least the one event it read, each within this
    // test's age of its occurrence.
    let delivered = scrape.value("dispute_stream_delivery_lag_seconds_count", &[]);
    assert!(delivered >= 1.0, "{delivered}");
    let lag = scrape.value("dispute_stream_delivery_lag_seconds_sum", &[]) / delivered;
    assert!((0.0..600.0).contains(&lag), "{lag}");
    // This only replica's relay holds every partition and reports each one's lag; it moved
    // every event written.
    assert_eq!(scrape.names("dispute_stream_relay_lag_seconds").len(), 16);
    assert!(scrape.value("dispute_stream_events_relayed_total", &[]) >= 1.0);
    // The span counters are process-wide (this test process exports no spans): present.
    for counter in [
        "otel_spans_ended_total",
        "otel_spans_exported_total",
        "otel_spans_export_failed_total",
    ] {
        assert_eq!(scrape.names(counter).len(), 1, "{counter}");
    }

    let (status, _) = get(app.metrics_addr, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[sqlx::test]
async fn made_up_method_names_mint_no_series(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut raw = crate::raw::Raw::open(app.addr).await;
    // Everything an unknown name can create, created once.
    made_up_calls(&mut raw, 0..50).await;
    let (_, before) = get(app.metrics_addr, "/metrics").await;
    made_up_calls(&mut raw, 50..3_050).await;
    let (_, after) = get(app.metrics_addr, "/metrics").await;

    let series = |text: &str| parse(text).into_keys().collect::<Vec<_>>();
    assert_eq!(series(&after), series(&before), "no series was added");
    assert!(
        !after.contains("MadeUp"),
        "a made-up name became a label value"
    );
    let methods: std::collections::BTreeSet<String> = series(&after)
        .into_iter()
        .filter_map(|(_, labels)| labels.get("grpc_method").cloned())
        .collect();
    assert_eq!(methods, ["unknown".to_owned()].into());
    // Only the counts' digits may grow.
    assert!(
        after.len() <= before.len() + 100,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}

/// Calls `MadeUp{i}` of the service for each `i`, without a token.
async fn made_up_calls(raw: &mut crate::raw::Raw, names: std::ops::Range<usize>) {
    for i in names {
        let path = format!("/dispute.v1.DisputeService/MadeUp{i}");
        let answer = raw.call(&path, "", bytes::Bytes::new()).await;
        assert_eq!(answer.code, Code::Unauthenticated, "{path}");
    }
}
