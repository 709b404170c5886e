//! The deadline worker (README, "Deadlines"): each row of the table with a moved clock, the moot
//! cases, the protection end, many workers on one database, a real-time run, an outage.

use std::{sync::Arc, time::Duration as StdDuration};

use chrono::{Duration, Utc};
use dispute_service::{
    clock::SystemClock,
    grpc::pb::{self, DisputeOutcome, DisputeState, FundsState, Remedy, ReturnStatus},
};
use futures::future::join_all;
use sqlx::PgPool;

use crate::helpers::*;

/// Actor of the last history event of a dispute.
async fn last_actor(pool: &PgPool, dispute_id: &str) -> (String, String, String) {
    sqlx::query_as("SELECT kind, actor_role, actor_id FROM dispute_events WHERE dispute_id = $1::uuid ORDER BY seq DESC LIMIT 1")
        .bind(dispute_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_silent_seller_grants_the_buyers_remedy_after_five_days(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("refund").await;
    app.register("return").await;
    let refund = app.open("refund", Remedy::PartialRefund).await.dispute_id;
    let ret = app.open("return", Remedy::ReturnAndRefund).await.dispute_id;
    app.clock.advance(Duration::days(5) - Duration::seconds(1));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "not due a second early"
    );
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 2);
    let settled = app.order("refund").await;
    assert_eq!(
        (settled.funds_state, settled.refunded_to_buyer),
        (FundsState::Split as i32, Some(usd(2_500)))
    );
    assert_eq!(
        app.dispute(&refund).await.outcome,
        DisputeOutcome::ResolvedPartial as i32
    );
    let awaiting = app.dispute(&ret).await;
    assert_eq!(awaiting.state, DisputeState::AwaitingReturnShipment as i32);
    assert_eq!(
        awaiting.item_return.unwrap().status,
        ReturnStatus::AwaitingShipment as i32
    );
    assert_eq!(
        history(&pool, &refund).await,
        [
            "DISPUTE_OPENED",
            "SELLER_RESPONSE_DEADLINE_PASSED",
            "FUNDS_SETTLED"
        ]
    );
    assert_eq!(
        last_actor(&pool, &refund).await,
        ("FUNDS_SETTLED".into(), "SERVICE".into(), "system".into())
    );
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "applied once"
    );
}

#[sqlx::test]
async fn a_negotiation_still_open_after_fifteen_days_goes_under_review(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(100)))
        .await
        .unwrap();
    app.clock.advance(Duration::days(6));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "the seller answered: the 5-day deadline is moot"
    );
    app.clock.advance(Duration::days(9));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 1);
    assert_eq!(
        app.dispute(&d).await.state,
        DisputeState::UnderReview as i32
    );
    app.clock.advance(Duration::days(100));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "an agent decides; no deadline under review"
    );
}

#[sqlx::test]
async fn a_return_not_shipped_in_ten_days_releases_the_funds_to_the_seller(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app
        .open("order-1", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    app.clock.advance(Duration::days(2));
    app.seller()
        .await
        .respond_to_dispute(accept(&d))
        .await
        .unwrap();
    app.clock.advance(Duration::days(10) - Duration::seconds(1));
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "counted from the agreement, not the opening"
    );
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 1);
    let ended = app.dispute(&d).await;
    assert_eq!(ended.outcome, DisputeOutcome::ResolvedSellerFavour as i32);
    assert_eq!(
        ended.item_return.unwrap().status,
        ReturnStatus::Cancelled as i32
    );
    assert_eq!(
        app.order("order-1").await.funds_state,
        FundsState::ReleasedToSeller as i32
    );
}

#[sqlx::test]
async fn a_seller_silent_fifteen_days_after_the_tracking_refunds_the_buyer(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app
        .open("order-1", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    app.seller()
        .await
        .respond_to_dispute(accept(&d))
        .await
        .unwrap();
    app.clock.advance(Duration::days(3));
    app.buyer()
        .await
        .submit_return_shipment(ship(&d))
        .await
        .unwrap();
    app.clock.advance(Duration::days(15) - Duration::seconds(1));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 0);
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 1);
    let ended = app.dispute(&d).await;
    assert_eq!(ended.outcome, DisputeOutcome::ResolvedBuyerFavour as i32);
    assert_eq!(
        ended.item_return.unwrap().status,
        ReturnStatus::Received as i32
    );
    assert_eq!(
        app.order("order-1").await.funds_state,
        FundsState::RefundedToBuyer as i32
    );
}

#[sqlx::test]
async fn a_deadline_made_moot_by_the_buyer_cancelling_does_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.clock.advance(Duration::days(1));
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&d))
        .await
        .unwrap();
    app.clock.advance(Duration::days(10));
    assert_eq!(app.run_deadlines().await.deadlines_applied, 0);
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "DISPUTE_CANCELLED"]
    );
    assert_eq!(
        app.order("order-1").await.funds_state,
        FundsState::Held as i32
    );
}

#[sqlx::test]
async fn protection_end_releases_held_funds_unless_a_dispute_is_active(pool: PgPool) {
    // The clock moves 30 days: the stream keeps its events, so the release's can be read.
    let app = spawn_app_with(pool.clone(), &["--outbox-retention", "3650days"]).await;
    app.register("quiet").await;
    app.register("disputed").await;
    app.register("cancelled").await;
    let active = app.open("disputed", Remedy::FullRefund).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(propose(&active, Remedy::PartialRefund, Some(10)))
        .await
        .unwrap();
    app.seller()
        .await
        .escalate_dispute(escalate(&active))
        .await
        .unwrap();
    let cancelled = app.open("cancelled", Remedy::FullRefund).await.dispute_id;
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&cancelled))
        .await
        .unwrap();

    app.clock.advance(Duration::days(30) - Duration::seconds(1));
    assert_eq!(
        app.run_deadlines().await.orders_released,
        0,
        "protection runs until its end"
    );
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.run_deadlines().await.orders_released, 2);
    let quiet = app.order("quiet").await;
    assert_eq!(
        (quiet.funds_state, quiet.released_to_seller),
        (FundsState::ReleasedToSeller as i32, Some(usd(10_000)))
    );
    assert!(
        !quiet.disputes_closed,
        "only a cancel after the end closes the order"
    );
    assert_eq!(
        app.order("cancelled").await.funds_state,
        FundsState::ReleasedToSeller as i32
    );
    let released: (String, String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT actor_role, actor_id, payload->>'cause' FROM {STREAM_ROWS}
         WHERE event_type = 'FUNDS_SETTLED' AND order_id = 'cancelled'",
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        released,
        ("SERVICE".into(), "system".into(), "PROTECTION_ENDED".into())
    );
    assert_eq!(
        app.order("disputed").await.funds_state,
        FundsState::Held as i32,
        "held while disputed"
    );

    // Once the dispute ends (the buyer cancels, after the end), the cancel itself settles.
    let done = app
        .buyer()
        .await
        .cancel_dispute(cancel_request(&active))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.order.unwrap().funds_state,
        FundsState::ReleasedToSeller as i32
    );
    // Nothing left to apply. (What the pass purged depends on the other tests' open
    // transactions on the same server: the purge stops at the oldest one.)
    let pass = app.run_deadlines().await;
    assert_eq!(
        (pass.deadlines_applied, pass.orders_released, pass.set_aside),
        (0, 0, 0)
    );
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM settlements WHERE actor_id = 'system'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ledger, 2);
}

#[sqlx::test]
async fn old_idempotency_keys_are_forgotten_after_the_retention(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    app.clock.advance(Duration::hours(47));
    assert_eq!(app.run_deadlines().await.keys_purged, 0);
    app.clock.advance(Duration::hours(2));
    assert_eq!(app.run_deadlines().await.keys_purged, 1);
}

#[sqlx::test]
async fn many_workers_on_one_database_apply_each_of_hundreds_of_deadlines_once(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &["--worker-batch", "25"]).await;
    let mut service = app.service().await;
    let mut buyer = app.buyer().await;
    let end = app.now() + Duration::days(30);
    for i in 0..300 {
        let id = format!("order-{i}");
        service
            .register_order(register_request(&id, end))
            .await
            .unwrap();
        let remedy = if i % 2 == 0 {
            Remedy::FullRefund
        } else {
            Remedy::PartialRefund
        };
        buyer.open_dispute(open_request(&id, remedy)).await.unwrap();
    }
    for i in 300..400 {
        service
            .register_order(register_request(&format!("order-{i}"), end))
            .await
            .unwrap();
    }
    app.clock.advance(Duration::days(31));
    let workers: Vec<_> = (0..4).map(|_| app.worker()).collect();
    let passes = join_all(workers.iter().map(|w| w.run_once())).await;
    let applied: usize = passes
        .iter()
        .map(|p| p.as_ref().unwrap().deadlines_applied)
        .sum();
    let released: usize = passes
        .iter()
        .map(|p| p.as_ref().unwrap().orders_released)
        .sum();
    assert_eq!((applied, released), (300, 100));

    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM settlements),
                (SELECT count(*) FROM dispute_events WHERE actor_id = 'system'),
                (SELECT count(*) FROM orders WHERE funds_state = 'HELD')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // 300 deadline events and their 300 settlements in the disputes' histories.
    assert_eq!(counts, (400, 600, 0));
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o JOIN settlements s USING (order_id)
         WHERE o.refunded_minor <> s.refund_minor OR s.refund_minor + s.release_minor <> o.amount_minor",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
}

#[sqlx::test]
async fn an_order_whose_short_protection_ends_is_released_without_any_call(pool: PgPool) {
    // The real clock and the worker inside the server, every 200ms.
    let config = serve_config(&["--worker-enabled", "true", "--worker-interval", "200ms"]);
    let server = start(config, pool, Arc::new(SystemClock)).await;
    let mut service = server.service().await;
    let ends = Utc::now() + Duration::seconds(2);
    service
        .register_order(register_request("order-1", ends))
        .await
        .unwrap();
    let mut state = FundsState::Held as i32;
    for _ in 0..100 {
        state = server.order("order-1").await.funds_state;
        if state != FundsState::Held as i32 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(state, FundsState::ReleasedToSeller as i32);
    server.stop().await.unwrap();
}

#[sqlx::test]
async fn the_worker_survives_a_database_outage_and_resumes(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    app.clock.advance(Duration::days(31));
    // Take the database away: refuse new connections and end the existing ones.
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let admin_options = (*pool.connect_options()).clone().database("postgres");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin_options)
        .await
        .unwrap();
    let outage = |allow: bool| {
        let (admin, db) = (admin.clone(), db.clone());
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {allow}"
            )))
            .execute(&admin)
            .await
            .unwrap();
            if !allow {
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                    .bind(&db)
                    .execute(&admin)
                    .await
                    .unwrap();
            }
        }
    };
    outage(false).await;
    let worker = app.worker();
    assert!(
        worker.run_once().await.is_err(),
        "a pass fails while the database is away"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(app.worker().run(stop_rx));
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    outage(true).await;
    let mut state = FundsState::Held as i32;
    for _ in 0..100 {
        if let Ok(order) = app
            .agent()
            .await
            .get_order(pb::GetOrderRequest {
                order_id: "order-1".into(),
            })
            .await
        {
            state = order.into_inner().order.unwrap().funds_state;
            if state != FundsState::Held as i32 {
                break;
            }
        }
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert_eq!(
        state,
        FundsState::ReleasedToSeller as i32,
        "the worker resumed after the outage"
    );
    let _ = stop_tx.send(true);
    running.await.unwrap();
}
