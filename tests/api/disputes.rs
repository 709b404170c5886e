use chrono::Duration;
use dispute_service::grpc::pb::{
    self, DisputeOutcome, DisputeState, FundsState, Remedy, ResolveOutcome, ReturnStatus,
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test]
async fn a_buyer_opens_a_dispute_on_their_order(pool: PgPool) {
    let app = spawn_app(pool).await;
    let order = app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::PartialRefund).await;
    assert_eq!(dispute.state, DisputeState::AwaitingSeller as i32);
    assert_eq!(dispute.buyer_id, "buyer-1");
    assert_eq!(dispute.seller_id, "seller-1");
    assert_eq!(dispute.refund_amount, Some(usd(2_500)));
    assert_eq!(dispute.item_return, None);
    assert_eq!(dispute.protection_ends_at, order.protection_ends_at);
    assert!(
        uuid::Uuid::parse_str(&dispute.dispute_id)
            .unwrap()
            .get_version_num()
            == 7
    );
    let fetched = app
        .seller()
        .await
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: dispute.dispute_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().dispute, Some(dispute));
}

#[sqlx::test]
async fn a_bad_dispute_request_reports_every_violation(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let request = pb::OpenDisputeRequest {
        order_id: "order-1".into(),
        reason: pb::DisputeReason::ItemNotReceived as i32,
        remedy: Remedy::ReturnAndRefund as i32,
        refund_amount: Some(usd(5)),
        description: "x".repeat(2_001),
        evidence_urls: (0..11).map(|i| format!("s3://e/{i}")).collect(),
        request_id: String::new(),
    };
    let mut fields = violated_fields(app.buyer().await.open_dispute(request).await);
    fields.sort();
    assert_eq!(
        fields,
        [
            "description",
            "evidence_urls",
            "refund_amount",
            "remedy",
            "request_id"
        ]
    );

    let mut unspecified = open_request("order-1", Remedy::FullRefund);
    unspecified.reason = 0;
    unspecified.remedy = 0;
    let mut fields = violated_fields(app.buyer().await.open_dispute(unspecified).await);
    fields.sort();
    assert_eq!(fields, ["reason", "remedy"]);
}

#[sqlx::test]
async fn a_partial_refund_must_be_below_the_order_amount_in_its_currency(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let mut buyer = app.buyer().await;
    let mut too_much = open_request("order-1", Remedy::PartialRefund);
    too_much.refund_amount = Some(usd(10_000));
    assert_eq!(
        violated_fields(buyer.open_dispute(too_much).await),
        ["refund_amount.amount_minor"]
    );
    let mut euros = open_request("order-1", Remedy::PartialRefund);
    euros.refund_amount = Some(pb::Money {
        currency_code: "EUR".into(),
        amount_minor: 10,
    });
    assert_eq!(
        violated_fields(buyer.open_dispute(euros).await),
        ["refund_amount.currency_code"]
    );
}

#[sqlx::test]
async fn opening_is_refused_with_a_reason_for_each_precondition(pool: PgPool) {
    let app = spawn_app_with(pool, &["--max-disputes-per-order", "2"]).await;
    let mut buyer = app.buyer().await;
    for id in ["active", "limit", "settled", "expired"] {
        app.register(id).await;
    }
    // An active dispute.
    app.open("active", Remedy::FullRefund).await;
    assert_eq!(
        reason(
            buyer
                .open_dispute(open_request("active", Remedy::FullRefund))
                .await
        ),
        (Code::AlreadyExists, "DISPUTE_ALREADY_OPEN".into())
    );
    // The limit: two opened and cancelled before protection ends.
    for _ in 0..2 {
        let d = app.open("limit", Remedy::FullRefund).await;
        buyer
            .cancel_dispute(cancel_request(&d.dispute_id))
            .await
            .unwrap();
    }
    assert_eq!(
        reason(
            buyer
                .open_dispute(open_request("limit", Remedy::FullRefund))
                .await
        ),
        (Code::FailedPrecondition, "DISPUTE_LIMIT_REACHED".into())
    );
    // Settled by a ruling.
    let d = app.open("settled", Remedy::FullRefund).await;
    app.agent()
        .await
        .resolve_funds(resolve_request(
            &d.dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        reason(
            buyer
                .open_dispute(open_request("settled", Remedy::FullRefund))
                .await
        ),
        (Code::FailedPrecondition, "FUNDS_SETTLED".into())
    );
    // Protection over.
    app.clock.advance(Duration::days(31));
    assert_eq!(
        reason(
            buyer
                .open_dispute(open_request("expired", Remedy::FullRefund))
                .await
        ),
        (Code::FailedPrecondition, "PROTECTION_EXPIRED".into())
    );
}

#[sqlx::test]
async fn cancelling_before_protection_ends_keeps_funds_held_and_allows_a_new_dispute(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let mut buyer = app.buyer().await;
    let cancelled = buyer
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await
        .unwrap()
        .into_inner();
    let (d, o) = (cancelled.dispute.unwrap(), cancelled.order.unwrap());
    assert_eq!(d.state, DisputeState::Cancelled as i32);
    assert_eq!(d.outcome, DisputeOutcome::CancelledByBuyer as i32);
    assert_eq!(o.funds_state, FundsState::Held as i32);
    assert!(!o.disputes_closed);
    assert_eq!(o.settled_at, None);
    let again = app.open("order-1", Remedy::FullRefund).await;
    assert_eq!(again.state, DisputeState::AwaitingSeller as i32);
}

#[sqlx::test]
async fn cancelling_after_protection_ends_releases_funds_and_closes_the_order(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    app.clock.advance(Duration::days(31));
    let mut buyer = app.buyer().await;
    let cancelled = buyer
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await
        .unwrap()
        .into_inner();
    let order = cancelled.order.unwrap();
    assert_eq!(order.funds_state, FundsState::ReleasedToSeller as i32);
    assert_eq!(order.released_to_seller, Some(usd(10_000)));
    assert_eq!(order.refunded_to_buyer, Some(usd(0)));
    assert!(order.disputes_closed);
    assert!(order.settled_at.is_some());
    assert_eq!(
        reason(
            buyer
                .open_dispute(open_request("order-1", Remedy::FullRefund))
                .await
        ),
        (Code::FailedPrecondition, "DISPUTES_CLOSED".into())
    );
    let ledger: (i64, i64) = sqlx::query_as(
        "SELECT refund_minor, release_minor FROM settlements WHERE order_id = 'order-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ledger, (0, 10_000));
}

#[sqlx::test]
async fn a_return_dispute_is_cancelled_through_the_return(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::ReturnAndRefund).await;
    assert_eq!(
        dispute.item_return.as_ref().unwrap().status,
        ReturnStatus::Requested as i32
    );
    let mut buyer = app.buyer().await;
    let refused = buyer
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await;
    let status = refused.as_ref().unwrap_err();
    assert!(status.message().contains("CancelReturn"), "{status:?}");
    assert_eq!(
        reason(refused),
        (Code::FailedPrecondition, "RETURN_IN_PROGRESS".into())
    );
    let cancelled = buyer
        .cancel_return(cancel_return_request(&dispute.dispute_id))
        .await
        .unwrap()
        .into_inner();
    let d = cancelled.dispute.unwrap();
    assert_eq!(d.state, DisputeState::Cancelled as i32);
    assert_eq!(
        d.item_return.unwrap().status,
        ReturnStatus::Cancelled as i32
    );
}

#[sqlx::test]
async fn cancel_return_on_a_dispute_without_a_return_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let result = app
        .buyer()
        .await
        .cancel_return(cancel_return_request(&dispute.dispute_id))
        .await;
    assert_eq!(
        reason(result),
        (Code::FailedPrecondition, "NO_RETURN".into())
    );
}

#[sqlx::test]
async fn a_terminal_dispute_cannot_be_cancelled_or_resolved_again(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await
        .unwrap();
    let again = app
        .buyer()
        .await
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await;
    assert_eq!(
        reason(again),
        (Code::FailedPrecondition, "DISPUTE_CLOSED".into())
    );
    let resolve = app
        .agent()
        .await
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await;
    assert_eq!(
        reason(resolve),
        (Code::FailedPrecondition, "DISPUTE_CLOSED".into())
    );
}

#[sqlx::test]
async fn an_agent_rules_any_way_and_money_is_conserved(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut agent = app.agent().await;
    for (id, outcome, refund, funds, disputed, buyer_gets) in [
        (
            "full",
            ResolveOutcome::RefundFull,
            None,
            FundsState::RefundedToBuyer,
            DisputeOutcome::ResolvedBuyerFavour,
            10_000,
        ),
        (
            "part",
            ResolveOutcome::RefundPartial,
            Some(3_000),
            FundsState::Split,
            DisputeOutcome::ResolvedPartial,
            3_000,
        ),
        (
            "none",
            ResolveOutcome::ReleaseToSeller,
            None,
            FundsState::ReleasedToSeller,
            DisputeOutcome::ResolvedSellerFavour,
            0,
        ),
    ] {
        app.register(id).await;
        let dispute = app.open(id, Remedy::FullRefund).await;
        let resolved = agent
            .resolve_funds(resolve_request(&dispute.dispute_id, outcome, refund))
            .await
            .unwrap()
            .into_inner();
        let order = resolved.order.unwrap();
        assert_eq!(order.funds_state, funds as i32);
        assert_eq!(resolved.dispute.unwrap().outcome, disputed as i32);
        assert_eq!(order.refunded_to_buyer, Some(usd(buyer_gets)));
        assert_eq!(order.released_to_seller, Some(usd(10_000 - buyer_gets)));
    }
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM settlements WHERE refund_minor + release_minor <> amount_minor",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
}

#[sqlx::test]
async fn an_agent_must_give_a_note(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let mut request = resolve_request(&dispute.dispute_id, ResolveOutcome::RefundFull, None);
    request.note = String::new();
    assert_eq!(
        violated_fields(app.agent().await.resolve_funds(request).await),
        ["note"]
    );
}

#[sqlx::test]
async fn a_seller_may_refund_at_least_what_was_asked_but_never_release(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::PartialRefund).await; // asks 2_500
    let mut seller = app.seller().await;
    let release = seller
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::ReleaseToSeller,
            None,
        ))
        .await;
    assert_eq!(
        reason(release),
        (Code::PermissionDenied, "SELLER_CANNOT_REDUCE_REFUND".into())
    );
    let less = seller
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundPartial,
            Some(2_499),
        ))
        .await;
    assert_eq!(
        reason(less),
        (Code::PermissionDenied, "SELLER_CANNOT_REDUCE_REFUND".into())
    );
    let enough = seller
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundPartial,
            Some(2_500),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enough.order.unwrap().funds_state, FundsState::Split as i32);
}

#[sqlx::test]
async fn a_seller_abandons_a_return_by_refunding_in_full(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::ReturnAndRefund).await;
    let resolved = app
        .seller()
        .await
        .resolve_funds(resolve_request(
            &dispute.dispute_id,
            ResolveOutcome::RefundFull,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resolved.order.unwrap().funds_state,
        FundsState::RefundedToBuyer as i32
    );
    assert_eq!(
        resolved.dispute.unwrap().item_return.unwrap().status,
        ReturnStatus::Cancelled as i32
    );
}

#[sqlx::test]
async fn lists_page_newest_first_and_parties_see_only_their_own(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut opened = Vec::new();
    for i in 0..5 {
        let id = format!("order-{i}");
        app.register(&id).await;
        opened.push(app.open(&id, Remedy::FullRefund).await.dispute_id);
    }
    opened.reverse();
    let mut agent = app.agent().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = agent
            .list_disputes(pb::ListDisputesRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.disputes.into_iter().map(|d| d.dispute_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, opened);

    let filtered = agent
        .list_disputes(pb::ListDisputesRequest {
            order_id: "order-3".into(),
            state: DisputeState::AwaitingSeller as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.disputes.len(), 1);

    let stranger = app
        .client(dispute_service::domain::Role::Buyer, "buyer-2")
        .await
        .list_disputes(pb::ListDisputesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stranger.disputes.is_empty());
    let peeking = app
        .client(dispute_service::domain::Role::Buyer, "buyer-2")
        .await
        .list_disputes(pb::ListDisputesRequest {
            buyer_id: "buyer-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(peeking.disputes.is_empty());
    let own = app
        .buyer()
        .await
        .list_disputes(pb::ListDisputesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.disputes.len(), 5);

    let bad = agent
        .list_disputes(pb::ListDisputesRequest {
            page_token: "garbage".into(),
            page_size: -1,
            ..Default::default()
        })
        .await;
    let mut fields = violated_fields(bad);
    fields.sort();
    assert_eq!(fields, ["page_size", "page_token"]);
}

/// A dispute whose directory row is missing (its command committed and the filing after it
/// failed) is still found, by a read and by a command, and filed again (README, "Running on
/// Citus"). On one node a read finds the dispute by its key without the directory, so there
/// only a command files it again.
#[sqlx::test]
async fn a_dispute_missing_from_the_directory_is_found_and_filed_again(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let unfile = |pool: PgPool, d: String| async move {
        let mut tx = pool.begin().await.unwrap();
        // On Citus a session changes a distributed table's triggers only when it asks to.
        sqlx::query("SET LOCAL citus.enable_unsafe_triggers = on")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("ALTER TABLE dispute_directory DISABLE TRIGGER dispute_directory_immutable")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("DELETE FROM dispute_directory WHERE dispute_id = $1::uuid")
            .bind(&d)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("ALTER TABLE dispute_directory ENABLE TRIGGER dispute_directory_immutable")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    let filed = |pool: PgPool, d: String| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT order_id FROM dispute_directory WHERE dispute_id = $1::uuid",
        )
        .bind(d)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    unfile(pool.clone(), d.clone()).await;
    assert_eq!(filed(pool.clone(), d.clone()).await, None);
    assert_eq!(app.dispute(&d).await.order_id, "order-1");
    let filed_by_the_read = on_citus(&pool).await.then_some("order-1");
    assert_eq!(
        filed(pool.clone(), d.clone()).await.as_deref(),
        filed_by_the_read
    );
    unfile(pool.clone(), d.clone()).await;
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&d))
        .await
        .unwrap();
    assert_eq!(
        filed(pool.clone(), d.clone()).await.as_deref(),
        Some("order-1")
    );
    assert_eq!(
        app.dispute(&d).await.state,
        pb::DisputeState::Cancelled as i32
    );
}
