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
    // On Citus a refusal raised on a shard names its rule only in its message.
    error
        .as_database_error()
        .and_then(|e| dispute_service::store::constraints::rule_name(e.constraint(), e.message()))
        .unwrap_or_else(|| panic!("no constraint named in {error}"))
}

/// Applies the migrations before the one whose description contains `description`.
async fn migrate_up_to(pool: &PgPool, description: &str) {
    let all = &dispute_service::store::MIGRATOR;
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new("./migrations"))
        .await
        .unwrap();
    let upto = all
        .migrations
        .iter()
        .position(|m| m.description.contains(description))
        .unwrap_or_else(|| panic!("no migration {description}"));
    before.migrations = std::borrow::Cow::Owned(all.migrations[..upto].to_vec());
    before.run(pool).await.unwrap();
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

/// A dispute or a settlement of an order that does not exist: refused by the composite keys
/// onto the order's facts (since migration 14 nothing else checks that the order exists).
#[sqlx::test]
async fn a_dispute_or_settlement_of_a_missing_order_is_refused(pool: PgPool) {
    spawn_app(pool.clone()).await;
    let dispute = sqlx::query(INSERT_DISPUTE)
        .bind("buyer-1")
        .bind("seller-1")
        .bind("FULL_REFUND")
        .bind(None::<String>)
        .bind(None::<i64>)
        .execute(&pool)
        .await;
    assert_eq!(refused_by(dispute), "disputes_parties_are_the_orders");
    let settlement = sqlx::query(INSERT_SETTLEMENT)
        .bind("USD")
        .bind(10_000_i64)
        .bind("AGENT")
        .execute(&pool)
        .await;
    assert_eq!(refused_by(settlement), "settlements_amount_is_the_orders");
}

/// RegisterOrder's insert skips a conflict on any unique key of `orders` (its `ON CONFLICT`
/// has no target: `store::write::save`), which is right only while every such key starts
/// with the order's id, so that a conflict can only be the id taken. A unique key on
/// anything else would be skipped as silently: this test stops it being added unseen.
#[sqlx::test]
async fn every_unique_key_of_orders_starts_with_the_orders_id(pool: PgPool) {
    spawn_app(pool.clone()).await;
    let keys: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = 'orders'::regclass AND i.indisunique
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        keys.iter().any(|(name, _)| name == "orders_pkey"),
        "{keys:?}"
    );
    for (name, first) in &keys {
        assert_eq!(first.as_deref(), Some("order_id"), "{name}");
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
        "UPDATE orders SET protection_ends_at = '2000-01-01Z' WHERE order_id = 'order-1'",
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
        "UPDATE disputes SET replacement_agreed_at = '2000-01-01Z' WHERE dispute_id = $1::uuid",
    ] {
        let edited = sqlx::query(edit).bind(&d).execute(&pool).await;
        assert_eq!(refused_by(edited), "disputes_replacement_fixed", "{edit}");
    }
    // The seller's accept was its first response: kept once.
    let moved = sqlx::query(
        "UPDATE disputes SET seller_first_response_at = '2100-01-01Z' WHERE dispute_id = $1::uuid",
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
    migrate_up_to(&pool, "first responses from history").await;
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

/// Migration 10 (every key with its order, the dispute directory, per-order idempotency
/// keys, the record from the tables; on Citus, the tables distributed) on a database that
/// already holds a service's data: every row kept, the new columns filled in, and the
/// service answers as before — the same disputes, histories and store record.
#[sqlx::test(migrations = false)]
async fn migrating_a_populated_database_keeps_every_row_and_answer(pool: PgPool) {
    let all = &dispute_service::store::MIGRATOR;
    migrate_up_to(&pool, "distributable").await;
    // Two orders of one seller, ten days ago: one settled by its resolved dispute, one held
    // with an open dispute; their histories, outbox rows, ledger row, keys and setbacks.
    sqlx::raw_sql(
        "INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                             registered_protection_ends_at, funds_state, refunded_minor, released_minor,
                             settled_at, disputes_closed, dispute_count, created_at, updated_at)
         VALUES ('o-1', 'b-1', 's-1', 'USD', 100, now() + interval '20 days', now() + interval '20 days',
                 'REFUNDED_TO_BUYER', 100, 0, now() - interval '8 days', true, 1, now() - interval '10 days',
                 now() - interval '8 days'),
                ('o-2', 'b-1', 's-1', 'USD', 300, now() + interval '20 days', now() + interval '20 days', 'HELD',
                 NULL, NULL, NULL, false, 1, now() - interval '10 days', now() - interval '9 days');
         INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, description,
                               evidence_urls, state, outcome, seller_first_response_at, created_at, updated_at)
         VALUES ('00000000-0000-7000-8000-000000000001', 'o-1', 'b-1', 's-1', 'QUALITY_ISSUE', 'FULL_REFUND',
                 'broken', '{}', 'RESOLVED', 'RESOLVED_BUYER_FAVOUR', now() - interval '8 days',
                 now() - interval '9 days', now() - interval '8 days'),
                ('00000000-0000-7000-8000-000000000002', 'o-2', 'b-1', 's-1', 'ITEM_NOT_RECEIVED', 'FULL_REFUND',
                 'lost', '{}', 'AWAITING_SELLER', NULL, NULL, now() - interval '9 days', now() - interval '9 days');
         INSERT INTO settlements (order_id, dispute_id, currency_code, amount_minor, refund_minor, release_minor,
                                  actor_role, actor_id, settled_at)
         VALUES ('o-1', '00000000-0000-7000-8000-000000000001', 'USD', 100, 100, 0, 'SELLER', 's-1',
                 now() - interval '8 days');
         INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload)
         VALUES ('00000000-0000-7000-8000-000000000001', 1, 'DISPUTE_OPENED', 'BUYER', 'b-1', now() - interval '9 days', '{}'),
                ('00000000-0000-7000-8000-000000000001', 2, 'REMEDY_ACCEPTED', 'SELLER', 's-1', now() - interval '8 days', '{}'),
                ('00000000-0000-7000-8000-000000000001', 3, 'FUNDS_SETTLED', 'SELLER', 's-1', now() - interval '8 days', '{}'),
                ('00000000-0000-7000-8000-000000000002', 1, 'DISPUTE_OPENED', 'BUYER', 'b-1', now() - interval '9 days', '{}');
         INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role, actor_id,
                             occurred_at, payload)
         VALUES (gen_random_uuid(), 'ORDER_REGISTERED', 'o-1', NULL, NULL, 'SERVICE', 'orders', now() - interval '10 days', '{}'),
                (gen_random_uuid(), 'DISPUTE_OPENED', 'o-2', '00000000-0000-7000-8000-000000000002', 1, 'BUYER',
                 'b-1', now() - interval '9 days', '{}');
         INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at, reply)
         VALUES ('BUYER', 'b-1', 'OpenDispute', 'r-1', '\\x01', now() - interval '1 hour',
                 '{\"order_id\": \"o-2\", \"dispute_id\": \"00000000-0000-7000-8000-000000000002\"}'),
                ('SELLER', 's-1', 'ExtendProtection', 'r-2', '\\x02', now() - interval '1 hour', NULL);
         INSERT INTO deadline_setbacks (dispute_id, order_id, attempts, retry_at, last_error, first_failed_at,
                                        candidate_updated_at)
         VALUES ('00000000-0000-7000-8000-000000000002', NULL, 1, now(), 'boom', now(), now() - interval '9 days'),
                (NULL, 'o-2', 2, now(), 'boom', now(), now() - interval '9 days');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table}"
            )))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let tables = ["orders", "disputes", "settlements", "dispute_events"];
    let mut counts = Vec::new();
    for table in tables {
        counts.push(count(table).await);
    }
    let outbox = count("outbox").await;
    all.run(&pool).await.unwrap();
    for (table, was) in tables.into_iter().zip(counts) {
        assert_eq!(count(table).await, was, "{table}");
    }
    // The outbox's events moved to the stream's log (migration 11), numbered per order.
    assert_eq!(count("outbox").await, 0);
    let moved: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT order_id, order_sequence, event_type FROM event_log ORDER BY order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(moved.len() as i64, outbox);
    assert_eq!(
        moved,
        [
            ("o-1".to_owned(), 1, "ORDER_REGISTERED".to_owned()),
            ("o-2".to_owned(), 1, "DISPUTE_OPENED".to_owned())
        ]
    );
    // The new columns, filled in from what each row belonged to.
    let history_orders: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT dispute_id::text, seq, order_id FROM dispute_events ORDER BY dispute_id, seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let d1 = "00000000-0000-7000-8000-000000000001";
    let d2 = "00000000-0000-7000-8000-000000000002";
    assert_eq!(
        history_orders,
        [
            (d1.to_owned(), 1, "o-1".to_owned()),
            (d1.to_owned(), 2, "o-1".to_owned()),
            (d1.to_owned(), 3, "o-1".to_owned()),
            (d2.to_owned(), 1, "o-2".to_owned()),
        ]
    );
    let directory: Vec<(String, String)> = sqlx::query_as(
        "SELECT dispute_id::text, order_id FROM dispute_directory ORDER BY dispute_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        directory,
        [
            (d1.to_owned(), "o-1".to_owned()),
            (d2.to_owned(), "o-2".to_owned())
        ]
    );
    // The acknowledged key moves to its reply's order; the one never answered is dropped.
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT request_id, order_id FROM idempotency_keys")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(keys, [("r-1".to_owned(), "o-2".to_owned())]);
    let setbacks: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT dispute_id::text, order_id FROM deadline_setbacks ORDER BY dispute_id NULLS LAST",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        setbacks,
        [
            (Some(d2.to_owned()), "o-2".to_owned()),
            (None, "o-2".to_owned())
        ]
    );
    // The service reads it all back: both disputes, a whole history, the store record as
    // the rows say (two orders registered, one dispute of each reason, one ended for the
    // buyer, one first response, one dispute open).
    let app = spawn_app(pool.clone()).await;
    assert_eq!(app.dispute(d1).await.order_id, "o-1");
    assert_eq!(
        app.dispute(d2).await.state,
        pb::DisputeState::AwaitingSeller as i32
    );
    let mut agent = app.agent().await;
    let listed = agent
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: d1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 3);
    let stats = agent
        .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
            seller_id: "s-1".into(),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.orders_registered, 2);
    assert_eq!(stats.open_disputes, 1);
    assert_eq!(stats.disputes_opened, 2);
    // And it goes on writing to the migrated rows: the open dispute's history continues.
    let mut seller = app
        .client(dispute_service::domain::Role::Seller, "s-1")
        .await;
    seller.respond_to_dispute(accept(d2)).await.unwrap();
    assert_eq!(
        history(&pool, d2).await,
        ["DISPUTE_OPENED", "REMEDY_ACCEPTED", "FUNDS_SETTLED"]
    );
}

/// Migration 13 (on Citus the record folded from the log by the relay) on a database with
/// events still waiting for the relay, written before it (their payloads say neither a
/// dispute's reason nor whether its change `ended` it): every registration, opening and
/// ending is counted once — on Citus by the migration from the tables or by the relay as
/// it appends, on one PostgreSQL by the triggers at commit — and the record equals a
/// recount of the rows.
#[sqlx::test(migrations = false)]
async fn migrating_with_events_waiting_for_the_relay_counts_each_once(pool: PgPool) {
    let all = &dispute_service::store::MIGRATOR;
    migrate_up_to(&pool, "record folded from the log").await;
    // o-1: registered, disputed and the dispute cancelled, then noted by an agent, all its
    // events waiting; o-2: registered and disputed, its events long relayed.
    let d1 = "00000000-0000-7000-8000-000000000001";
    let d2 = "00000000-0000-7000-8000-000000000002";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                             registered_protection_ends_at, created_at, updated_at, event_sequence)
         VALUES ('o-1', 'b-1', 's-1', 'USD', 100, now() + interval '20 days', now() + interval '20 days',
                 now() - interval '2 days', now() - interval '1 day', 4),
                ('o-2', 'b-1', 's-1', 'USD', 300, now() + interval '20 days', now() + interval '20 days',
                 now() - interval '2 days', now() - interval '2 days', 2);
         INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, description,
                               evidence_urls, state, outcome, created_at, updated_at)
         VALUES ('{d1}', 'o-1', 'b-1', 's-1', 'NOT_AS_DESCRIBED', 'FULL_REFUND', 'torn', '{{}}',
                 'AWAITING_SELLER', NULL, now() - interval '2 days', now() - interval '2 days'),
                ('{d2}', 'o-2', 'b-1', 's-1', 'ITEM_NOT_RECEIVED', 'FULL_REFUND', 'lost', '{{}}',
                 'AWAITING_SELLER', NULL, now() - interval '2 days', now() - interval '2 days');
         UPDATE disputes SET state = 'CANCELLED', outcome = 'CANCELLED_BY_BUYER', updated_at = now() - interval '1 day'
         WHERE order_id = 'o-1' AND dispute_id = '{d1}';
         INSERT INTO outbox (event_id, event_type, order_id, order_sequence, dispute_id, dispute_seq,
                             actor_role, actor_id, occurred_at, payload)
         VALUES (gen_random_uuid(), 'ORDER_REGISTERED', 'o-1', 1, NULL, NULL, 'SERVICE', 'orders',
                 now() - interval '2 days', '{{\"seller_id\": \"s-1\"}}'),
                (gen_random_uuid(), 'DISPUTE_OPENED', 'o-1', 2, '{d1}', 1, 'BUYER', 'b-1',
                 now() - interval '2 days', '{{\"seller_id\": \"s-1\", \"state\": \"AWAITING_SELLER\"}}'),
                (gen_random_uuid(), 'DISPUTE_CANCELLED', 'o-1', 3, '{d1}', 2, 'BUYER', 'b-1',
                 now() - interval '1 day',
                 '{{\"seller_id\": \"s-1\", \"state\": \"CANCELLED\", \"outcome\": \"CANCELLED_BY_BUYER\"}}'),
                (gen_random_uuid(), 'INTERNAL_NOTE_ADDED', 'o-1', 4, '{d1}', 3, 'AGENT', 'a-1',
                 now() - interval '1 day',
                 '{{\"seller_id\": \"s-1\", \"state\": \"CANCELLED\", \"outcome\": \"CANCELLED_BY_BUYER\"}}');"
    )))
    .execute(&pool)
    .await
    .unwrap();
    all.run(&pool).await.unwrap();
    let app = spawn_app(pool.clone()).await;
    relayed(&pool).await;
    let stats = app
        .agent()
        .await
        .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
            seller_id: "s-1".into(),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    let counted = crate::record::answered(&stats);
    assert_eq!(
        (
            counted.orders,
            counted.by_reason,
            counted.outcomes,
            counted.open
        ),
        (2, [1, 1, 0], [1, 0, 0, 0], 1),
        "two orders, two disputes opened, one cancelled"
    );
    assert_eq!(
        counted,
        crate::record::recount_from_the_tables(&pool, "s-1", 90, app.now()).await
    );
}

/// Every rule of an order's and a dispute's shape (checked by one trigger per table since
/// migration 15, CHECK constraints before it) refuses, by its name, a row written around
/// the service that breaks it and no rule checked before it. (The rules of a replacement's
/// shipment and of a known remedy are broken in the test above.) Literal values only: Citus
/// refuses an UPDATE that calls a STABLE function on a column (`now()`, `+ interval`).
#[sqlx::test]
async fn every_rule_of_an_orders_and_a_disputes_shape_refuses_by_name(pool: PgPool) {
    // Refused as PostgreSQL refuses a row by a CHECK constraint: check_violation, and the
    // rule named (`refused_by`).
    let check_violation = |result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>| {
        let code = result
            .as_ref()
            .err()
            .and_then(|e| e.as_database_error()?.code());
        assert_eq!(code.as_deref(), Some("23514"), "{result:?}");
        refused_by(result)
    };
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let insert_order =
        "INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
         protection_ends_at, registered_protection_ends_at, dispute_count, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, now(), now(), $6, now(), now())";
    for (order, buyer, seller, currency, amount, count, rule) in [
        ("o-2", "b", "s", "USD", 0, 0, "orders_amount_positive"),
        ("o-2", "b 1", "s", "USD", 1, 0, "orders_buyer_id_format"),
        ("o-2", "b", "s", "usd", 1, 0, "orders_currency_format"),
        ("o/2", "b", "s", "USD", 1, 0, "orders_order_id_format"),
        ("o-2", "b", "s;", "USD", 1, 0, "orders_seller_id_format"),
        (
            "o-2",
            "b",
            "s",
            "USD",
            1,
            -1,
            "orders_dispute_count_non_negative",
        ),
    ] {
        let written = sqlx::query(insert_order)
            .bind(order)
            .bind(buyer)
            .bind(seller)
            .bind(currency)
            .bind(amount)
            .bind(count)
            .execute(&pool)
            .await;
        assert_eq!(check_violation(written), rule);
    }
    for (set, rule) in [
        ("disputes_closed = true", "orders_closed_only_when_settled"),
        ("event_sequence = -1", "orders_event_sequence_not_negative"),
        ("funds_state = 'LOST'", "orders_funds_state_known"),
        ("funds_state = 'SPLIT'", "orders_money_conserved"),
        (
            "registered_protection_ends_at = '2999-01-01Z'",
            "orders_protection_never_shortened",
        ),
    ] {
        let written = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET {set} WHERE order_id = 'order-1'"
        )))
        .execute(&pool)
        .await;
        assert_eq!(check_violation(written), rule, "{set}");
    }
    let insert_dispute =
        "INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy,
         return_status, description, evidence_urls, state, outcome, created_at, updated_at)
         VALUES (gen_random_uuid(), 'order-1', 'buyer-1', 'seller-1', $1, $2, $3, '', '{}',
                 'CANCELLED', 'CANCELLED_BY_BUYER', now(), now())";
    for (reason, remedy, return_status, rule) in [
        ("BORED", "FULL_REFUND", None, "disputes_reason_known"),
        (
            "ITEM_NOT_RECEIVED",
            "RETURN_AND_REFUND",
            None,
            "disputes_no_return_of_missing_item",
        ),
        (
            "ITEM_NOT_RECEIVED",
            "FULL_REFUND",
            Some("REQUESTED"),
            "disputes_no_return_without_item",
        ),
    ] {
        let written = sqlx::query(insert_dispute)
            .bind(reason)
            .bind(remedy)
            .bind(return_status)
            .execute(&pool)
            .await;
        assert_eq!(check_violation(written), rule);
    }
    // The dispute is awaiting the seller, a full refund of a quality issue, nothing proposed.
    for (set, rule) in [
        (
            "return_status = 'AWAITING_SHIPMENT'",
            "disputes_agreed_return_is_dated",
        ),
        (
            "description = repeat('x', 2001)",
            "disputes_description_length",
        ),
        (
            "evidence_urls = array_fill('u'::text, ARRAY[11])",
            "disputes_evidence_count",
        ),
        (
            "seller_first_response_at = '2000-01-01Z'",
            "disputes_first_response_after_opening",
        ),
        (
            "outcome = 'RESOLVED_PARTIAL'",
            "disputes_outcome_iff_terminal",
        ),
        (
            "state = 'RESOLVED', outcome = 'WON'",
            "disputes_outcome_known",
        ),
        (
            "state = 'RESOLVED', outcome = 'CANCELLED_BY_BUYER'",
            "disputes_outcome_matches_state",
        ),
        (
            "remedy = 'PARTIAL_REFUND'",
            "disputes_partial_refund_amount",
        ),
        (
            "proposal_message = repeat('x', 2001)",
            "disputes_proposal_message_length",
        ),
        (
            "proposal_remedy = 'PARTIAL_REFUND'",
            "disputes_proposal_refund_amount",
        ),
        (
            "proposal_remedy = 'STORE_CREDIT'",
            "disputes_proposal_remedy_known",
        ),
        ("state = 'NEGOTIATING'", "disputes_proposal_when_negotiated"),
        (
            "state = 'AWAITING_REPLACEMENT_SHIPMENT'",
            "disputes_replacement_agreed",
        ),
        (
            "remedy = 'RETURN_AND_REFUND'",
            "disputes_return_remedy_has_return",
        ),
        ("return_status = 'LOST'", "disputes_return_status_known"),
        (
            "return_status = 'IN_TRANSIT'",
            "disputes_shipped_return_is_tracked",
        ),
        ("state = 'LOST'", "disputes_state_known"),
    ] {
        let written = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE disputes SET {set} WHERE dispute_id = $1::uuid"
        )))
        .bind(&d)
        .execute(&pool)
        .await;
        assert_eq!(check_violation(written), rule, "{set}");
    }
    // Nothing was written: the order and its dispute are as the service left them.
    let dispute = app.dispute(&d).await;
    assert_eq!(dispute.state, pb::DisputeState::AwaitingSeller as i32);
    assert_eq!(
        app.order("order-1").await.funds_state,
        pb::FundsState::Held as i32
    );
}
