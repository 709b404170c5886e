//! Replacement instead of refund (README, "Replacement"): the path, each refusal, both
//! deadlines, and the protection end that moves out while the replacement travels.

use chrono::{DateTime, Duration, Utc};
use dispute_service::grpc::pb::{
    self, DeadlineConsequence, DeadlineKind, DisputeOutcome, DisputeState, FundsState, Remedy,
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

fn next(dispute: &pb::Dispute) -> (i32, DateTime<Utc>, i32) {
    let deadline = dispute.next_deadline.as_ref().expect("a next deadline");
    (
        deadline.kind,
        from_timestamp(deadline.due_at.as_ref().unwrap()),
        deadline.consequence,
    )
}

/// A replacement dispute on `order_id`, accepted by the seller now.
async fn agreed(app: &TestApp, order_id: &str) -> pb::Dispute {
    app.register(order_id).await;
    let d = app.open(order_id, Remedy::Replacement).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(accept(&d))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
}

#[sqlx::test]
async fn the_replacement_path_ships_protects_the_buyer_and_pays_the_seller_on_receipt(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let registered_end = app.now() + Duration::days(30);
    let agreed = agreed(&app, "order-1").await;
    let d = agreed.dispute_id.clone();
    assert_eq!(
        agreed.state,
        DisputeState::AwaitingReplacementShipment as i32
    );
    let replacement = agreed.replacement.clone().expect("an agreed replacement");
    assert_eq!(
        (replacement.carrier.as_str(), replacement.shipped_at),
        ("", None)
    );
    assert_eq!(
        next(&agreed),
        (
            DeadlineKind::ReplacementShipment as i32,
            app.now() + Duration::days(10),
            DeadlineConsequence::RefundBuyer as i32
        )
    );

    // Shipped on day 8: protection moves from day 30 to day 38.
    app.clock.advance(Duration::days(8));
    let shipped_at = app.now();
    let request = ship_replacement(&d);
    let mut seller = app.seller().await;
    let shipped = seller
        .submit_replacement_shipment(request.clone())
        .await
        .unwrap()
        .into_inner();
    let dispute = shipped.dispute.clone().unwrap();
    assert_eq!(dispute.state, DisputeState::ReplacementInTransit as i32);
    let replacement = dispute.replacement.clone().unwrap();
    assert_eq!(
        (
            replacement.carrier.as_str(),
            replacement.tracking_number.as_str(),
            from_timestamp(replacement.shipped_at.as_ref().unwrap())
        ),
        ("DHL", "JD014600006281", shipped_at)
    );
    let order = shipped.order.clone().unwrap();
    assert_eq!(
        from_timestamp(order.protection_ends_at.as_ref().unwrap()),
        shipped_at + Duration::days(30)
    );
    assert!(from_timestamp(order.protection_ends_at.as_ref().unwrap()) > registered_end);
    assert_eq!(
        from_timestamp(dispute.protection_ends_at.as_ref().unwrap()),
        from_timestamp(order.protection_ends_at.as_ref().unwrap())
    );
    assert_eq!(
        next(&dispute),
        (
            DeadlineKind::ReplacementReceipt as i32,
            shipped_at + Duration::days(30),
            DeadlineConsequence::ReleaseToSeller as i32
        )
    );
    // A retry answers the same, and writes nothing.
    let again = seller
        .submit_replacement_shipment(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, shipped);

    let received = app
        .buyer()
        .await
        .confirm_replacement_received(confirm_replacement(&d))
        .await
        .unwrap()
        .into_inner();
    let dispute = received.dispute.unwrap();
    assert_eq!(
        (dispute.state, dispute.outcome),
        (
            DisputeState::Resolved as i32,
            DisputeOutcome::ResolvedSellerFavour as i32
        )
    );
    assert_eq!(dispute.next_deadline, None);
    let order = received.order.unwrap();
    assert_eq!(
        (
            order.funds_state,
            order.released_to_seller,
            order.refunded_to_buyer
        ),
        (
            FundsState::ReleasedToSeller as i32,
            Some(usd(10_000)),
            Some(usd(0))
        )
    );
    assert_eq!(
        history(&pool, &d).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "REPLACEMENT_SHIPPED",
            "REPLACEMENT_RECEIVED",
            "FUNDS_SETTLED"
        ]
    );
}

#[sqlx::test]
async fn a_seller_may_propose_a_replacement_the_buyer_accepts(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(propose(&d, Remedy::Replacement, None))
        .await
        .unwrap();
    let accepted = app
        .buyer()
        .await
        .accept_proposal(accept_proposal(&d))
        .await
        .unwrap()
        .into_inner();
    let dispute = accepted.dispute.unwrap();
    assert_eq!(
        dispute.state,
        DisputeState::AwaitingReplacementShipment as i32
    );
    assert_eq!(accepted.order.unwrap().funds_state, FundsState::Held as i32);
}

#[sqlx::test]
async fn each_refusal_has_its_reason_and_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let waiting = app.open("order-1", Remedy::Replacement).await.dispute_id;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    // Not agreed yet: nothing to ship or confirm.
    assert_eq!(
        reason(
            seller
                .submit_replacement_shipment(ship_replacement(&waiting))
                .await
        ),
        (Code::FailedPrecondition, "INVALID_DISPUTE_STATE".into())
    );
    assert_eq!(
        reason(
            buyer
                .confirm_replacement_received(confirm_replacement(&waiting))
                .await
        ),
        (Code::FailedPrecondition, "INVALID_DISPUTE_STATE".into())
    );
    // Roles: the buyer does not ship, the seller does not confirm.
    assert_eq!(
        reason(
            buyer
                .submit_replacement_shipment(ship_replacement(&waiting))
                .await
        ),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    assert_eq!(
        reason(
            seller
                .confirm_replacement_received(confirm_replacement(&waiting))
                .await
        ),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    // Another store's seller is told the dispute does not exist.
    let mut stranger = app
        .client(dispute_service::domain::Role::Seller, "seller-2")
        .await;
    assert_eq!(
        reason(
            stranger
                .submit_replacement_shipment(ship_replacement(&waiting))
                .await
        ),
        (Code::NotFound, "DISPUTE_NOT_FOUND".into())
    );
    // Every bad field at once.
    let bad = pb::SubmitReplacementShipmentRequest {
        dispute_id: "nope".into(),
        carrier: String::new(),
        tracking_number: "x".repeat(129),
        request_id: String::new(),
    };
    let mut fields = violated_fields(seller.submit_replacement_shipment(bad).await);
    fields.sort();
    assert_eq!(
        fields,
        ["carrier", "dispute_id", "request_id", "tracking_number"]
    );
    // No return to cancel on a replacement.
    seller.respond_to_dispute(accept(&waiting)).await.unwrap();
    assert_eq!(
        reason(buyer.cancel_return(cancel_return_request(&waiting)).await),
        (Code::FailedPrecondition, "NO_RETURN".into())
    );
    assert_eq!(
        history(&pool, &waiting).await,
        ["DISPUTE_OPENED", "REMEDY_ACCEPTED"],
        "refusals wrote nothing"
    );
    // Once ended, nothing more.
    seller
        .submit_replacement_shipment(ship_replacement(&waiting))
        .await
        .unwrap();
    buyer
        .confirm_replacement_received(confirm_replacement(&waiting))
        .await
        .unwrap();
    assert_eq!(
        reason(
            buyer
                .confirm_replacement_received(confirm_replacement(&waiting))
                .await
        ),
        (Code::FailedPrecondition, "DISPUTE_CLOSED".into())
    );
}

#[sqlx::test]
async fn while_it_travels_the_buyer_may_escalate_or_cancel_under_the_moved_protection(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let escalated = agreed(&app, "escalated").await.dispute_id;
    let cancelled = agreed(&app, "cancelled").await.dispute_id;
    let mut seller = app.seller().await;
    app.clock.advance(Duration::days(20));
    for d in [&escalated, &cancelled] {
        seller
            .submit_replacement_shipment(ship_replacement(d))
            .await
            .unwrap();
    }
    let mut buyer = app.buyer().await;
    let under_review = buyer
        .escalate_dispute(escalate(&escalated))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(under_review.state, DisputeState::UnderReview as i32);
    // Day 35: past the registered end (30), not past the moved one (50): funds stay held.
    app.clock.advance(Duration::days(15));
    let ended = buyer
        .cancel_dispute(cancel_request(&cancelled))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ended.dispute.unwrap().outcome,
        DisputeOutcome::CancelledByBuyer as i32
    );
    let order = ended.order.unwrap();
    assert_eq!(
        (order.funds_state, order.disputes_closed),
        (FundsState::Held as i32, false)
    );
    // Neither the seller nor an agent may cancel it for the buyer.
    for mut client in [app.seller().await, app.agent().await] {
        assert_eq!(
            reason(client.cancel_dispute(cancel_request(&escalated)).await),
            (Code::PermissionDenied, "ONLY_BUYER_CAN_CANCEL".into())
        );
    }
}

#[sqlx::test]
async fn a_replacement_never_shipped_refunds_the_buyer_at_its_deadline_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let d = agreed(&app, "order-1").await;
    let dispute = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::ReplacementShipment,
        DeadlineConsequence::RefundBuyer,
    )
    .await;
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "applied once"
    );
    assert_eq!(
        (dispute.state, dispute.outcome),
        (
            DisputeState::Resolved as i32,
            DisputeOutcome::ResolvedBuyerFavour as i32
        )
    );
    let order = app.order("order-1").await;
    assert_eq!(
        (order.funds_state, order.refunded_to_buyer),
        (FundsState::RefundedToBuyer as i32, Some(usd(10_000)))
    );
    assert_eq!(
        history(&pool, &d.dispute_id).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "REPLACEMENT_SHIPMENT_DEADLINE_PASSED",
            "FUNDS_SETTLED"
        ]
    );
}

#[sqlx::test]
async fn a_buyer_silent_long_after_the_shipment_lets_the_funds_go_to_the_seller(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let d = agreed(&app, "order-1").await.dispute_id;
    app.clock.advance(Duration::days(3));
    let shipped = app
        .seller()
        .await
        .submit_replacement_shipment(ship_replacement(&d))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(shipped.state, DisputeState::ReplacementInTransit as i32);
    let dispute = at_the_deadline(
        &app,
        &d,
        DeadlineKind::ReplacementReceipt,
        DeadlineConsequence::ReleaseToSeller,
    )
    .await;
    assert_eq!(
        app.run_deadlines().await.deadlines_applied,
        0,
        "applied once"
    );
    assert_eq!(dispute.outcome, DisputeOutcome::ResolvedSellerFavour as i32);
    let order = app.order("order-1").await;
    assert_eq!(
        (order.funds_state, order.released_to_seller),
        (FundsState::ReleasedToSeller as i32, Some(usd(10_000)))
    );
    assert_eq!(
        history(&pool, &d).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "REPLACEMENT_SHIPPED",
            "REPLACEMENT_RECEIPT_DEADLINE_PASSED",
            "FUNDS_SETTLED"
        ]
    );
}
