//! Writers and a stream consumer racing (README, "Consuming the event stream"): what the
//! stream must deliver, by the rules, given the calls the writers were told succeeded, and
//! the check that it delivered exactly that. Used beside racing relays
//! (`events::a_consumer_racing…`) and a live shard move (`citus::a_shard_moved…`).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Duration as Days;
use dispute_service::grpc::pb::{self, Remedy, ResolveOutcome};
use futures::future::join_all;
use sqlx::PgPool;

use crate::helpers::*;

/// What each order's events must be, by the rules, given the calls acknowledged on it.
pub type Expected = HashMap<String, Vec<&'static str>>;

/// `writers` tasks register orders and open a dispute on each (resolving every other one,
/// and trying to cancel the rest as an agent, which is refused and emits nothing) for
/// `duration`; each call's events are expected once it is acknowledged. With `rollbacks`,
/// every third order also gets an event written by a transaction that rolls back. A
/// consumer reads the stream meanwhile, dropping it and resuming after the last event it
/// took every 50 events, until it has as many events as expected after the writers
/// stopped (then it looks once more, for anything that should not come). `meanwhile`
/// runs beside them. Returns the expected events and what the consumer received.
pub async fn write_and_consume(
    app: &TestApp,
    writers: usize,
    duration: Duration,
    rollbacks: Option<&PgPool>,
    meanwhile: impl Future<Output = ()>,
) -> (Expected, Vec<pb::Event>) {
    let expected = Arc::new(Mutex::new(Expected::new()));
    let deadline = tokio::time::Instant::now() + duration;
    let expect = |expected: &Mutex<Expected>, id: &str, kinds: &[&'static str]| {
        expected
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .extend(kinds);
    };
    let writers = (0..writers).map(|w| {
        let (service, buyer, agent) = (app.service(), app.buyer(), app.agent());
        let end = app.now() + Days::days(30);
        let (expected, rollbacks) = (expected.clone(), rollbacks.cloned());
        async move {
            let (mut service, mut buyer, mut agent) = (service.await, buyer.await, agent.await);
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let id = format!("w{w}-{i}");
                service
                    .register_order(register_request(&id, end))
                    .await
                    .unwrap();
                expect(&expected, &id, &["ORDER_REGISTERED"]);
                let d = buyer
                    .open_dispute(open_request(&id, Remedy::FullRefund))
                    .await
                    .unwrap()
                    .into_inner()
                    .dispute
                    .unwrap();
                expect(&expected, &id, &["DISPUTE_OPENED"]);
                if i % 2 == 0 {
                    agent
                        .resolve_funds(resolve_request(
                            &d.dispute_id,
                            ResolveOutcome::RefundFull,
                            None,
                        ))
                        .await
                        .unwrap();
                    expect(&expected, &id, &["FUNDS_RESOLVED", "FUNDS_SETTLED"]);
                } else {
                    // Refused (only the buyer cancels): emits nothing.
                    let _ = agent.cancel_dispute(cancel_request(&d.dispute_id)).await;
                }
                if let Some(pool) = rollbacks.as_ref().filter(|_| i % 3 == 0) {
                    let mut doomed = pool.begin().await.unwrap();
                    sqlx::query(
                        "INSERT INTO outbox (event_id, event_type, order_id, order_sequence, actor_role,
                                             actor_id, occurred_at, payload)
                         VALUES (gen_random_uuid(), 'ROLLED_BACK', $1, 99, 'SERVICE', 'test', now(), '{}')",
                    )
                    .bind(&id)
                    .execute(&mut *doomed)
                    .await
                    .unwrap();
                    doomed.rollback().await.unwrap();
                }
                i += 1;
            }
        }
    });
    let written = AtomicBool::new(false);
    let writing = async {
        join_all(writers).await;
        written.store(true, Ordering::SeqCst);
    };
    let consumer = async {
        let mut received: Vec<pb::Event> = Vec::new();
        let mut cursor = String::new();
        let patience = tokio::time::Instant::now() + duration + Duration::from_secs(90);
        loop {
            let mut stream = watch(app, &cursor).await;
            let batch = take(&mut stream, 50, Duration::from_millis(500)).await;
            if let Some(last) = batch.last() {
                cursor = last.cursor.clone();
            }
            received.extend(batch);
            let want: usize = expected.lock().unwrap().values().map(Vec::len).sum();
            if written.load(Ordering::SeqCst) && received.len() >= want {
                let late = take(&mut watch(app, &cursor).await, 1, Duration::from_secs(1)).await;
                received.extend(late);
                return received;
            }
            assert!(
                tokio::time::Instant::now() < patience,
                "the stream stalled at {} of {want} events",
                received.len()
            );
        }
    };
    let (_, received, ()) = tokio::join!(writing, consumer, meanwhile);
    let expected = expected.lock().unwrap().clone();
    (expected, received)
}

/// The consumer received every expected event once and nothing else: per order, exactly
/// its events in the order they happened, `order_sequence` 1, 2, 3…
pub fn assert_exactly_the_committed_events(expected: &Expected, received: &[pb::Event]) {
    assert!(
        expected.len() > 40,
        "the writers wrote {} orders",
        expected.len()
    );
    let ids: HashSet<&str> = received.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "an event came twice");
    let mut per_order: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    for event in received {
        per_order
            .entry(event.order_id.as_str())
            .or_default()
            .push((event.order_sequence, event.r#type.as_str()));
    }
    assert_eq!(
        per_order.len(),
        expected.len(),
        "events of exactly the orders written"
    );
    for (order, kinds) in expected {
        let got = &per_order[order.as_str()];
        let sequences: Vec<i64> = got.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            sequences,
            (1..=kinds.len() as i64).collect::<Vec<_>>(),
            "{order}: order_sequence 1, 2, 3… in the order delivered"
        );
        let types: Vec<&str> = got.iter().map(|(_, kind)| *kind).collect();
        assert_eq!(
            &types, kinds,
            "{order}: exactly its committed events, in order"
        );
    }
}
