//! The schema stands behind the code: writes made around the service (plain SQL) that
//! break an invariant are refused by name, and a write the schema refuses reaches the
//! caller as the domain error of its rule, never as INTERNAL.

use dispute_service::grpc::pb::{self, Remedy, ResolveOutcome};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

/// The name of the constraint that refused `result`.
fn refused_by(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    let error = result.expect_err("the write must be refused");
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .unwrap_or_else(|| panic!("no constraint named in {error}"))
        .to_owned()
}

const INSERT_DISPUTE: &str = "INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy,
     refund_currency, refund_minor, description, evidence_urls, state, outcome, created_at, updated_at)
     VALUES (gen_random_uuid(), 'order-1', $1, $2, 'QUALITY_ISSUE', $3, $4, $5, '', '{}', 'CANCELLED',
             'CANCELLED_BY_BUYER', now(), now())";

#[sqlx::test]
async fn a_dispute_between_other_parties_than_its_orders_is_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    for (buyer, seller) in [("buyer-2", "seller-1"), ("buyer-1", "seller-2")] {
        let written = sqlx::query(INSERT_DISPUTE)
            .bind(buyer)
            .bind(seller)
            .bind("FULL_REFUND")
            .bind(None::<String>)
            .bind(None::<i64>)
            .execute(&pool)
            .await;
        assert_eq!(refused_by(written), "disputes_parties_are_the_orders");
    }
}

#[sqlx::test]
async fn a_partial_refund_in_another_currency_than_the_orders_is_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let asked = sqlx::query(INSERT_DISPUTE)
        .bind("buyer-1")
        .bind("seller-1")
        .bind("PARTIAL_REFUND")
        .bind(Some("EUR"))
        .bind(Some(500_i64))
        .execute(&pool)
        .await;
    assert_eq!(refused_by(asked), "disputes_refund_in_order_currency");

    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let proposed = sqlx::query(
        "UPDATE disputes SET state = 'NEGOTIATING', proposal_remedy = 'PARTIAL_REFUND',
            proposal_refund_currency = 'EUR', proposal_refund_minor = 500, proposal_message = 'x'
         WHERE dispute_id = $1::uuid",
    )
    .bind(&dispute.dispute_id)
    .execute(&pool)
    .await;
    assert_eq!(refused_by(proposed), "disputes_proposal_in_order_currency");
}

const INSERT_SETTLEMENT: &str = "INSERT INTO settlements (order_id, currency_code, amount_minor, refund_minor,
     release_minor, actor_role, actor_id, settled_at) VALUES ('order-1', $1, $2, 0, $2, $3, 'x', now())";

#[sqlx::test]
async fn a_settlement_of_another_amount_or_currency_than_its_orders_is_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    for (currency, amount) in [("USD", 9_999_i64), ("EUR", 10_000)] {
        let written = sqlx::query(INSERT_SETTLEMENT)
            .bind(currency)
            .bind(amount)
            .bind("AGENT")
            .execute(&pool)
            .await;
        assert_eq!(refused_by(written), "settlements_amount_is_the_orders");
    }
}

#[sqlx::test]
async fn a_settlement_by_an_unknown_role_is_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let written = sqlx::query(INSERT_SETTLEMENT)
        .bind("USD")
        .bind(10_000_i64)
        .bind("ROOT")
        .execute(&pool)
        .await;
    assert_eq!(refused_by(written), "settlements_role_known");
}

#[sqlx::test]
async fn the_guard_triggers_name_the_rule_they_enforce(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let earlier = sqlx::query(
        "UPDATE orders SET protection_ends_at = protection_ends_at - interval '1 day' WHERE order_id = 'order-1'",
    )
    .execute(&pool)
    .await;
    assert_eq!(refused_by(earlier), "orders_protection_only_later");
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    app.agent()
        .await
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await
        .unwrap();
    let changed = sqlx::query(
        "UPDATE orders SET funds_state = 'RELEASED_TO_SELLER', refunded_minor = 0, released_minor = 10000 WHERE order_id = 'order-1'",
    )
    .execute(&pool)
    .await;
    assert_eq!(refused_by(changed), "orders_settled_immutable");
    let reopened = sqlx::query(
        "UPDATE disputes SET state = 'AWAITING_SELLER', outcome = NULL WHERE order_id = 'order-1'",
    )
    .execute(&pool)
    .await;
    assert_eq!(refused_by(reopened), "disputes_terminal_immutable");
}

#[sqlx::test]
async fn a_write_the_schema_refuses_is_the_rules_error_not_internal(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    // The ledger says settled while the order row still says held: the domain, reading the
    // order, allows the ruling, and the ledger's one-row-per-order key refuses it.
    sqlx::query(INSERT_SETTLEMENT)
        .bind("USD")
        .bind(10_000_i64)
        .bind("AGENT")
        .execute(&pool)
        .await
        .unwrap();
    let ruling = app
        .agent()
        .await
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await;
    assert_eq!(
        reason(ruling),
        (Code::FailedPrecondition, "FUNDS_SETTLED".into())
    );
    // Nothing was written: the dispute is as it was.
    let after = app.dispute(&dispute.dispute_id).await;
    assert_eq!(after.state, pb::DisputeState::AwaitingSeller as i32);
    assert_eq!(
        history(&app.pool, &dispute.dispute_id).await,
        ["DISPUTE_OPENED"]
    );
}

#[sqlx::test]
async fn a_replacement_and_a_first_response_once_written_are_never_edited(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::Replacement).await.dispute_id;
    // In transit without a shipment, or a shipment without its tracking: refused.
    let accepted = app.seller().await.respond_to_dispute(accept(&d)).await;
    accepted.unwrap();
    let unshipped = sqlx::query(
        "UPDATE disputes SET state = 'REPLACEMENT_IN_TRANSIT' WHERE dispute_id = $1::uuid",
    )
    .bind(&d)
    .execute(&pool)
    .await;
    assert_eq!(
        refused_by(unshipped),
        "disputes_replacement_in_transit_shipped"
    );
    let untracked = sqlx::query(
        "UPDATE disputes SET replacement_shipped_at = now() WHERE dispute_id = $1::uuid",
    )
    .bind(&d)
    .execute(&pool)
    .await;
    assert_eq!(refused_by(untracked), "disputes_replacement_shipment_whole");
    app.seller()
        .await
        .submit_replacement_shipment(ship_replacement(&d))
        .await
        .unwrap();
    for edit in [
        "UPDATE disputes SET replacement_tracking = 'JD2-OTHER' WHERE dispute_id = $1::uuid",
        "UPDATE disputes SET replacement_agreed_at = replacement_agreed_at - interval '1 day' WHERE dispute_id = $1::uuid",
    ] {
        let edited = sqlx::query(edit).bind(&d).execute(&pool).await;
        assert_eq!(refused_by(edited), "disputes_replacement_fixed", "{edit}");
    }
    // The seller's accept was its first response: kept once.
    let moved = sqlx::query(
        "UPDATE disputes SET seller_first_response_at = seller_first_response_at + interval '1 hour'
         WHERE dispute_id = $1::uuid",
    )
    .bind(&d)
    .execute(&pool)
    .await;
    assert_eq!(refused_by(moved), "disputes_first_response_fixed");
    let unknown =
        sqlx::query("UPDATE disputes SET remedy = 'STORE_CREDIT' WHERE dispute_id = $1::uuid")
            .bind(&d)
            .execute(&pool)
            .await;
    assert_eq!(refused_by(unknown), "disputes_remedy_known");
}

/// Migration 7 gives disputes written before migration 6 their seller's first response,
/// from their history: the seller's first act, not a deadline, not an extension.
#[sqlx::test(migrations = false)]
async fn first_responses_of_older_disputes_come_from_their_history(pool: PgPool) {
    let all = &dispute_service::store::MIGRATOR;
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new("./migrations"))
        .await
        .unwrap();
    let upto = all
        .migrations
        .iter()
        .position(|m| m.description.contains("first responses from history"))
        .expect("the backfill migration");
    before.migrations = std::borrow::Cow::Owned(all.migrations[..upto].to_vec());
    before.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                             registered_protection_ends_at, funds_state, refunded_minor, released_minor,
                             settled_at, created_at, updated_at)
         VALUES ('o-1', 'b-1', 's-1', 'USD', 100, '2026-02-01Z', '2026-02-01Z', 'REFUNDED_TO_BUYER', 100, 0,
                 '2026-01-03Z', '2026-01-01Z', '2026-01-03Z'),
                ('o-2', 'b-1', 's-1', 'USD', 100, '2026-02-01Z', '2026-02-01Z', 'HELD', NULL, NULL, NULL,
                 '2026-01-01Z', '2026-01-01Z');
         INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, description,
                               evidence_urls, state, outcome, created_at, updated_at)
         VALUES ('00000000-0000-7000-8000-000000000001', 'o-1', 'b-1', 's-1', 'QUALITY_ISSUE', 'FULL_REFUND',
                 '', '{}', 'RESOLVED', 'RESOLVED_BUYER_FAVOUR', '2026-01-01Z', '2026-01-03Z'),
                ('00000000-0000-7000-8000-000000000002', 'o-2', 'b-1', 's-1', 'QUALITY_ISSUE', 'FULL_REFUND',
                 '', '{}', 'AWAITING_SELLER', NULL, '2026-01-01Z', '2026-01-01Z');
         INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload)
         VALUES ('00000000-0000-7000-8000-000000000001', 1, 'DISPUTE_OPENED', 'BUYER', 'b-1', '2026-01-01Z', '{}'),
                ('00000000-0000-7000-8000-000000000001', 2, 'PROTECTION_EXTENDED', 'SELLER', 's-1', '2026-01-01T06:00Z', '{}'),
                ('00000000-0000-7000-8000-000000000001', 3, 'REMEDY_ACCEPTED', 'SELLER', 's-1', '2026-01-03Z', '{}'),
                ('00000000-0000-7000-8000-000000000001', 4, 'FUNDS_SETTLED', 'SELLER', 's-1', '2026-01-03Z', '{}'),
                ('00000000-0000-7000-8000-000000000002', 1, 'DISPUTE_OPENED', 'BUYER', 'b-1', '2026-01-01Z', '{}'),
                ('00000000-0000-7000-8000-000000000002', 2, 'SELLER_RESPONSE_DEADLINE_PASSED', 'SERVICE', 'system', '2026-01-06Z', '{}');",
    )
    .execute(&pool)
    .await
    .unwrap();
    all.run(&pool).await.unwrap();
    let first: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT seller_first_response_at FROM disputes ORDER BY dispute_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    use chrono::TimeZone;
    assert_eq!(
        first,
        [
            Some(chrono::Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap()),
            None
        ]
    );
    // The terminal dispute's guard is back.
    let edited = sqlx::query("UPDATE disputes SET description = 'x' WHERE order_id = 'o-1'")
        .execute(&pool)
        .await;
    assert_eq!(refused_by(edited), "disputes_terminal_immutable");
}
