//! History and the event stream (README, "Consuming the event stream"): what each call emits, nothing for refused or
//! rolled-back work, resuming from a cursor, a transaction that commits late (and delays
//! nobody meanwhile), and a stream racing concurrent writers and two relays.

use std::{collections::HashSet, time::Duration as StdDuration};

use chrono::Duration;
use dispute_service::{
    domain::Role,
    grpc::pb::{self, Remedy, ResolveOutcome},
};
use futures::future::join_all;
use sqlx::PgPool;
use tonic::Code;

use crate::{helpers::*, racing};

/// How long a test waits for an event it expects. Generous: tests run side by side.
const PATIENCE: StdDuration = StdDuration::from_secs(15);

fn types(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

fn field<'a>(event: &'a pb::Event, name: &str) -> &'a prost_types::value::Kind {
    event.payload.as_ref().unwrap().fields[name]
        .kind
        .as_ref()
        .unwrap()
}

#[sqlx::test]
async fn every_call_and_deadline_emits_its_events_and_refusals_emit_none(pool: PgPool) {
    // Retention longer than the clock moves below: the stream may still be behind (other
    // events pile up) when the deadline pass purges old events.
    let app = spawn_app_with(pool, &["--outbox-retention", "60days"]).await;
    let mut stream = watch(&app, "").await;
    app.register("order-1").await;
    let d = app
        .open("order-1", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    // Refused: nothing.
    assert!(seller.cancel_dispute(cancel_request(&d)).await.is_err());
    assert!(buyer.cancel_dispute(cancel_request(&d)).await.is_err());
    seller.respond_to_dispute(accept(&d)).await.unwrap();
    buyer.submit_return_shipment(ship(&d)).await.unwrap();
    app.agent()
        .await
        .extend_protection(extend("order-1", app.now() + Duration::days(40)))
        .await
        .unwrap();
    app.clock.advance(Duration::days(16));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 1);
    let events = take(&mut stream, 7, PATIENCE).await;
    assert!(
        take(&mut stream, 1, StdDuration::from_millis(500))
            .await
            .is_empty()
    );
    assert_eq!(
        types(&events),
        [
            "ORDER_REGISTERED",
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "RETURN_SHIPPED",
            "PROTECTION_EXTENDED",
            "RETURN_RECEIPT_DEADLINE_PASSED",
            "FUNDS_SETTLED"
        ]
    );
    let settled = events.last().unwrap();
    assert_eq!(
        (settled.actor_role.as_str(), settled.actor_id.as_str()),
        ("SERVICE", "system")
    );
    assert_eq!(settled.order_id, "order-1");
    assert_eq!(settled.dispute_id, d);
    use prost_types::value::Kind::{NumberValue, StringValue};
    assert_eq!(field(settled, "version"), &NumberValue(2.0));
    assert_eq!(field(settled, "currency_code"), &StringValue("USD".into()));
    assert_eq!(field(settled, "amount_minor"), &StringValue("10000".into()));
    assert_eq!(
        field(settled, "refunded_to_buyer_minor"),
        &StringValue("10000".into())
    );
    assert_eq!(
        field(settled, "released_to_seller_minor"),
        &StringValue("0".into())
    );
    assert_eq!(field(settled, "buyer_id"), &StringValue("buyer-1".into()));
    assert_eq!(field(settled, "seller_id"), &StringValue("seller-1".into()));
    assert_eq!(
        events
            .iter()
            .filter(|e| !e.dispute_id.is_empty())
            .map(|e| e.dispute_sequence)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
}

#[sqlx::test]
async fn the_history_lists_every_change_with_its_actor_and_pages(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(500)))
        .await
        .unwrap();
    app.buyer()
        .await
        .accept_proposal(accept_proposal(&d))
        .await
        .unwrap();
    let mut buyer = app.buyer().await;
    let mut page = pb::ListDisputeEventsRequest {
        dispute_id: d.clone(),
        page_size: 2,
        ..Default::default()
    };
    let mut events = Vec::new();
    loop {
        let response = buyer
            .list_dispute_events(page.clone())
            .await
            .unwrap()
            .into_inner();
        events.extend(response.events);
        if response.next_page_token.is_empty() {
            break;
        }
        page.page_token = response.next_page_token;
    }
    let summary: Vec<(i32, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.kind.as_str(),
                e.actor_role.as_str(),
                e.actor_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "DISPUTE_OPENED", "BUYER", "buyer-1"),
            (2, "REMEDY_PROPOSED", "SELLER", "seller-1"),
            (3, "PROPOSAL_ACCEPTED", "BUYER", "buyer-1"),
            (4, "FUNDS_SETTLED", "BUYER", "buyer-1"),
        ]
    );
    use prost_types::value::Kind::StringValue;
    let proposed = events[1].payload.as_ref().unwrap().fields["note"]
        .kind
        .clone();
    assert_eq!(proposed, Some(StringValue("how about this instead".into())));
    // Visible as the dispute is: a stranger is told it does not exist.
    let hidden = app
        .client(Role::Buyer, "buyer-2")
        .await
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: d.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(reason(hidden), (Code::NotFound, "DISPUTE_NOT_FOUND".into()));
}

#[sqlx::test]
async fn a_consumer_that_disconnects_and_resumes_sees_every_event_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for i in 0..5 {
        app.register(&format!("order-{i}")).await;
    }
    let mut stream = watch(&app, "").await;
    let first = take(&mut stream, 3, PATIENCE).await;
    drop(stream);
    for i in 5..8 {
        app.register(&format!("order-{i}")).await;
    }
    // At least once: the consumer resumes from the last cursor it processed.
    let mut resumed = watch(&app, &first.last().unwrap().cursor).await;
    let rest = take(&mut resumed, 5, PATIENCE).await;
    let mut seen = HashSet::new();
    let all: Vec<_> = first
        .iter()
        .chain(&rest)
        .filter(|e| seen.insert(e.event_id.clone()))
        .collect();
    // Each order once (across orders the stream promises no order), the first of its
    // order's events.
    let mut orders: Vec<(&str, i64)> = all
        .iter()
        .map(|e| (e.order_id.as_str(), e.order_sequence))
        .collect();
    orders.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("order-{i}")).collect();
    assert_eq!(
        orders,
        expected.iter().map(|o| (o.as_str(), 1)).collect::<Vec<_>>()
    );
    assert_eq!(all.len(), first.len() + rest.len(), "no event twice");
    let bad = app
        .service()
        .await
        .watch_events(pb::WatchEventsRequest {
            after_cursor: "nonsense".into(),
        })
        .await;
    assert_eq!(violated_fields(bad), ["after_cursor"]);
}

/// Waits until the relay has moved the events of `order_id` into the log.
async fn relayed(pool: &PgPool, order_id: &str) {
    for _ in 0..300 {
        let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(pool)
            .await
            .unwrap();
        if moved > 0 {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("the relay never moved the events of {order_id}");
}

#[sqlx::test]
async fn a_stream_opened_while_none_was_gets_the_next_commit_without_waiting_for_its_safety_poll(
    pool: PgPool,
) {
    // With no stream open the feed reads nothing; when one opens, the feed starts again
    // from the log's tail, which may already hold a commit the stream's first read missed.
    // Well under the stream's 5 s safety poll: the feed sends the stream back to the log.
    let prompt = StdDuration::from_secs(3);
    let app = spawn_app(pool.clone()).await;
    app.register("before").await;
    relayed(&pool, "before").await;
    let mut stream = watch(&app, "").await;
    let first = take(&mut stream, 1, PATIENCE).await;
    assert_eq!(first[0].order_id, "before");
    app.register("after").await;
    let next = take(&mut stream, 1, prompt).await;
    assert_eq!(next.first().map(|e| e.order_id.as_str()), Some("after"));

    // Again after the only stream left and the feed went idle.
    drop(stream);
    app.register("unwatched").await;
    relayed(&pool, "unwatched").await;
    let mut resumed = watch(&app, &next[0].cursor).await;
    let first = take(&mut resumed, 1, PATIENCE).await;
    assert_eq!(first[0].order_id, "unwatched");
    app.register("again").await;
    let next = take(&mut resumed, 1, prompt).await;
    assert_eq!(next.first().map(|e| e.order_id.as_str()), Some("again"));
}

#[sqlx::test]
async fn a_transaction_that_commits_late_is_never_skipped_and_delays_no_one(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("early").await;
    let mut stream = watch(&app, "").await;
    assert_eq!(
        types(&take(&mut stream, 1, PATIENCE).await),
        ["ORDER_REGISTERED"]
    );

    // A transaction writes an event, then stays open while others commit.
    let mut late = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, order_id, order_sequence, actor_role, actor_id, occurred_at, payload)
         VALUES (gen_random_uuid(), 'LATE', 'late-order', 1, 'SERVICE', 'test', now(), '{}')",
    )
    .execute(&mut *late)
    .await
    .unwrap();
    for i in 0..3 {
        app.register(&format!("after-{i}")).await;
    }
    // The later commits are delivered while it is open: nothing waits for it.
    let mut after = take(&mut stream, 3, PATIENCE).await;
    after.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    assert_eq!(
        after
            .iter()
            .map(|e| e.order_id.as_str())
            .collect::<Vec<_>>(),
        ["after-0", "after-1", "after-2"]
    );
    late.commit().await.unwrap();
    let events = take(&mut stream, 1, PATIENCE).await;
    assert_eq!(
        types(&events),
        ["LATE"],
        "the late commit is moved, not skipped"
    );

    // A rolled-back transaction's event never appears.
    let mut doomed = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, order_id, order_sequence, actor_role, actor_id, occurred_at, payload)
         VALUES (gen_random_uuid(), 'ROLLED_BACK', 'x', 1, 'SERVICE', 'test', now(), '{}')",
    )
    .execute(&mut *doomed)
    .await
    .unwrap();
    doomed.rollback().await.unwrap();
    app.register("last").await;
    let next = take(&mut stream, 1, PATIENCE).await;
    assert_eq!(
        (next[0].r#type.as_str(), next[0].order_id.as_str()),
        ("ORDER_REGISTERED", "last")
    );
    assert!(
        take(&mut stream, 1, StdDuration::from_millis(500))
            .await
            .is_empty(),
        "nothing else"
    );
}

#[sqlx::test]
async fn a_consumer_racing_eight_writers_and_two_relays_receives_exactly_the_committed_set(
    pool: PgPool,
) {
    // The server relays nothing: two relays of their own race for every partition. A lease
    // of a millisecond has always run out, so both take every partition on every pass and
    // append to the same partitions at once; the log's keys decide each race.
    let app = spawn_app_with(pool.clone(), &["--relay-enabled", "false"]).await;
    let (stop_relays, stopped) = dispute_service::shutdown::channel();
    let relays: Vec<_> = (0..2)
        .map(|r| {
            let relay = dispute_service::relay::Relay::new(
                dispute_service::store::Store::new(pool.clone()),
                dispute_service::metrics::Metrics::new(),
                dispute_service::relay::RelayConfig {
                    holder: format!("racing-relay-{r}"),
                    lease: StdDuration::from_millis(1),
                    poll: StdDuration::from_millis(5),
                    gather: dispute_service::relay::GATHER,
                    batch: 37,
                },
            );
            tokio::spawn(relay.run(stopped.clone()))
        })
        .collect();
    let (expected, received) = racing::write_and_consume(
        &app,
        8,
        StdDuration::from_secs(4),
        Some(&pool),
        std::future::ready(()),
    )
    .await;
    let _ = stop_relays.send(true);
    join_all(relays).await;
    racing::assert_exactly_the_committed_events(&expected, &received);
}

#[sqlx::test]
async fn retention_deletes_old_stream_events_but_never_the_history(pool: PgPool) {
    // A patient seller: no deadline fires while the clock moves past the retention.
    let app = spawn_app_with(pool.clone(), &["--deadline-seller-response", "60days"]).await;
    app.register("order-1").await;
    app.agent()
        .await
        .extend_protection(extend("order-1", app.now() + Duration::days(40)))
        .await
        .unwrap();
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let mut stream = watch(&app, "").await;
    let seen = take(&mut stream, 3, PATIENCE).await;
    app.clock.advance(Duration::days(8));
    let pass = app.run_deadlines().await;
    // The order's three events are in one partition: all but its last go (the next event
    // of the partition numbers on from the last).
    assert_eq!(pass.events_purged, 2);
    // Resuming from before the retention mark is refused; from the start is allowed.
    let expired = app
        .service()
        .await
        .watch_events(pb::WatchEventsRequest {
            after_cursor: seen[0].cursor.clone(),
        })
        .await;
    assert_eq!(reason(expired), (Code::OutOfRange, "CURSOR_EXPIRED".into()));
    assert!(
        app.service()
            .await
            .watch_events(pb::WatchEventsRequest {
                after_cursor: seen[1].cursor.clone()
            })
            .await
            .is_ok()
    );
    assert_eq!(history(&pool, &d).await, ["DISPUTE_OPENED"]);
    // The partition numbers on after the purge: the next event of the order reaches a
    // consumer resuming after the last one it took, as the order's fourth.
    app.agent()
        .await
        .extend_protection(extend("order-1", app.now() + Duration::days(50)))
        .await
        .unwrap();
    let next = take(&mut watch(&app, &seen[2].cursor).await, 1, PATIENCE).await;
    assert_eq!(
        (next[0].r#type.as_str(), next[0].order_sequence),
        ("PROTECTION_EXTENDED", 4)
    );
}

#[sqlx::test]
async fn each_command_records_its_event_in_the_dispute_history(pool: PgPool) {
    // Keep stream events past the 16 days the clock moves.
    let app = spawn_app_with(pool.clone(), &["--outbox-retention", "30days"]).await;
    let (mut buyer, mut seller, mut agent) =
        (app.buyer().await, app.seller().await, app.agent().await);
    let mut opened = Vec::new();
    for id in [
        "cancel",
        "cancel-return",
        "resolve",
        "escalate",
        "negotiation",
        "unshipped",
    ] {
        app.register(id).await;
        let remedy = if id == "cancel-return" || id == "unshipped" {
            Remedy::ReturnAndRefund
        } else {
            Remedy::FullRefund
        };
        opened.push(app.open(id, remedy).await.dispute_id);
    }
    let [
        cancel,
        cancel_return,
        resolve,
        escalated,
        negotiation,
        unshipped,
    ] = opened.try_into().unwrap();
    buyer.cancel_dispute(cancel_request(&cancel)).await.unwrap();
    buyer
        .cancel_return(cancel_return_request(&cancel_return))
        .await
        .unwrap();
    agent
        .resolve_funds(resolve_request(
            &resolve,
            ResolveOutcome::ReleaseToSeller,
            None,
        ))
        .await
        .unwrap();
    seller
        .respond_to_dispute(propose(&escalated, Remedy::PartialRefund, Some(100)))
        .await
        .unwrap();
    buyer.escalate_dispute(escalate(&escalated)).await.unwrap();
    seller
        .respond_to_dispute(propose(&negotiation, Remedy::PartialRefund, Some(100)))
        .await
        .unwrap();
    seller.respond_to_dispute(accept(&unshipped)).await.unwrap();
    app.clock.advance(Duration::days(16));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 2);

    assert_eq!(
        history(&pool, &cancel).await,
        ["DISPUTE_OPENED", "DISPUTE_CANCELLED"]
    );
    assert_eq!(
        history(&pool, &cancel_return).await,
        ["DISPUTE_OPENED", "DISPUTE_CANCELLED"]
    );
    assert_eq!(
        history(&pool, &resolve).await,
        ["DISPUTE_OPENED", "FUNDS_RESOLVED", "FUNDS_SETTLED"]
    );
    assert_eq!(
        history(&pool, &escalated).await,
        ["DISPUTE_OPENED", "REMEDY_PROPOSED", "DISPUTE_ESCALATED"]
    );
    assert_eq!(
        history(&pool, &negotiation).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_PROPOSED",
            "NEGOTIATION_DEADLINE_PASSED"
        ]
    );
    assert_eq!(
        history(&pool, &unshipped).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "RETURN_SHIPMENT_DEADLINE_PASSED",
            "FUNDS_SETTLED"
        ]
    );
    // The stream holds the same events, and the order-level ones.
    let streamed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {STREAM_ROWS} WHERE dispute_id IS NOT NULL"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    let history_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM dispute_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(streamed, history_rows);
}

#[sqlx::test]
async fn events_carry_the_trace_id_of_the_request_that_caused_them(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let mut request = tonic::Request::new(open_request("order-1", Remedy::FullRefund));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let d = app
        .buyer()
        .await
        .open_dispute(request)
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
        .dispute_id;
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&d))
        .await
        .unwrap();
    let history = app
        .buyer()
        .await
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: d,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        history[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    let own = &history[1].trace_id;
    assert!(
        own.len() == 32 && own.bytes().all(|b| b.is_ascii_hexdigit()),
        "a trace of its own: {own}"
    );
    assert_ne!(own, &history[0].trace_id);
    let untraced: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {STREAM_ROWS} WHERE trace_id IS NULL"
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(untraced, 0);
}

#[sqlx::test]
async fn settlement_amounts_in_events_equal_the_ledger_for_any_int64(pool: PgPool) {
    let app = spawn_app(pool).await;
    // Beyond 2^53 a double cannot tell neighbours apart; i64::MAX is the largest amount.
    let amounts = [9_007_199_254_740_993_i64, i64::MAX];
    for (i, amount) in amounts.into_iter().enumerate() {
        let order_id = format!("big-{i}");
        let mut request = register_request(&order_id, app.now() + Duration::days(30));
        request.amount = Some(usd(amount));
        app.service().await.register_order(request).await.unwrap();
        let dispute = app.open(&order_id, Remedy::FullRefund).await;
        app.agent()
            .await
            .resolve_funds(resolve_request(
                &dispute.dispute_id,
                ResolveOutcome::RefundPartial,
                Some(amount - 1),
            ))
            .await
            .unwrap();
    }
    let ledger: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT order_id, amount_minor, refund_minor, release_minor FROM settlements ORDER BY order_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ledger.len(), 2);
    let mut stream = watch(&app, "").await;
    // Per order: registered, opened, resolved, settled.
    let events = take(&mut stream, 8, PATIENCE).await;
    let settled: Vec<&pb::Event> = events
        .iter()
        .filter(|e| e.r#type == "FUNDS_SETTLED")
        .collect();
    assert_eq!(settled.len(), 2);
    use prost_types::value::Kind::StringValue;
    for (order_id, amount, refund, release) in ledger {
        let event = settled.iter().find(|e| e.order_id == order_id).unwrap();
        assert_eq!(
            field(event, "amount_minor"),
            &StringValue(amount.to_string())
        );
        assert_eq!(
            field(event, "refunded_to_buyer_minor"),
            &StringValue(refund.to_string())
        );
        assert_eq!(
            field(event, "released_to_seller_minor"),
            &StringValue(release.to_string())
        );
        assert_eq!(release, 1, "{order_id}: refund amount − 1, release 1");
    }
}

#[sqlx::test]
async fn a_consumer_that_stops_reading_falls_behind_the_feed_and_still_misses_nothing(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let mut stream = watch(&app, "").await;
    // More events than the stream's own buffer holds, one commit each, while the consumer
    // reads nothing: its task blocks, the shared feed's batches pass it by, and it must
    // catch up from the log.
    let total = 800;
    let mut service = app.service().await;
    for i in 0..total {
        service
            .register_order(register_request(
                &format!("order-{i:04}"),
                app.now() + Duration::days(30),
            ))
            .await
            .unwrap();
    }
    let events = take(&mut stream, total, PATIENCE).await;
    let mut orders: Vec<&str> = events.iter().map(|e| e.order_id.as_str()).collect();
    orders.sort_unstable();
    let expected: Vec<String> = (0..total).map(|i| format!("order-{i:04}")).collect();
    assert_eq!(orders, expected, "every event once");
    assert!(
        take(&mut stream, 1, StdDuration::from_millis(500))
            .await
            .is_empty()
    );
}
