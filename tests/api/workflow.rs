//! The negotiation and return workflow (README, "What it does"): every transition and every refusal.

use chrono::Duration;
use dispute_service::{
    domain::Role,
    grpc::pb::{
        self, DisputeOutcome, DisputeState, FundsState, Remedy, ResolveOutcome, ReturnStatus,
    },
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

fn state(dispute: &Option<pb::Dispute>) -> i32 {
    dispute.as_ref().unwrap().state
}

fn return_status(dispute: &Option<pb::Dispute>) -> i32 {
    dispute
        .as_ref()
        .unwrap()
        .item_return
        .as_ref()
        .unwrap()
        .status
}

#[sqlx::test]
async fn the_full_return_path_refunds_the_buyer_when_the_seller_has_the_item(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app
        .open("order-1", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);

    let accepted = seller
        .respond_to_dispute(accept(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&accepted.dispute),
        DisputeState::AwaitingReturnShipment as i32
    );
    assert_eq!(
        return_status(&accepted.dispute),
        ReturnStatus::AwaitingShipment as i32
    );
    assert_eq!(accepted.order.unwrap().funds_state, FundsState::Held as i32);

    let shipped = buyer
        .submit_return_shipment(ship(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&shipped.dispute),
        DisputeState::ReturnInTransit as i32
    );
    let item_return = shipped.dispute.unwrap().item_return.unwrap();
    assert_eq!(item_return.status, ReturnStatus::InTransit as i32);
    assert_eq!(
        (
            item_return.carrier.as_str(),
            item_return.tracking_number.as_str()
        ),
        ("UPS", "1Z999AA10123456784")
    );

    let received = seller
        .confirm_return_received(confirm(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&received.dispute), DisputeState::Resolved as i32);
    assert_eq!(
        received.dispute.as_ref().unwrap().outcome,
        DisputeOutcome::ResolvedBuyerFavour as i32
    );
    assert_eq!(
        return_status(&received.dispute),
        ReturnStatus::Received as i32
    );
    let order = received.order.unwrap();
    assert_eq!(order.funds_state, FundsState::RefundedToBuyer as i32);
    assert_eq!(order.refunded_to_buyer, Some(usd(10_000)));

    // Once received, the return can no longer be cancelled.
    let too_late = buyer.cancel_return(cancel_return_request(&d)).await;
    assert_eq!(
        reason(too_late),
        (Code::FailedPrecondition, "DISPUTE_CLOSED".into())
    );
    assert_eq!(
        history(&pool, &d).await,
        [
            "DISPUTE_OPENED",
            "REMEDY_ACCEPTED",
            "RETURN_SHIPPED",
            "RETURN_RECEIVED",
            "FUNDS_SETTLED"
        ]
    );
}

#[sqlx::test]
async fn a_seller_accepting_a_refund_remedy_settles_at_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut seller = app.seller().await;
    for (order_id, remedy, funds, refunded) in [
        (
            "full",
            Remedy::FullRefund,
            FundsState::RefundedToBuyer,
            10_000,
        ),
        ("part", Remedy::PartialRefund, FundsState::Split, 2_500),
    ] {
        app.register(order_id).await;
        let d = app.open(order_id, remedy).await.dispute_id;
        let accepted = seller
            .respond_to_dispute(accept(&d))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(&accepted.dispute), DisputeState::Resolved as i32);
        let order = accepted.order.unwrap();
        assert_eq!(order.funds_state, funds as i32);
        assert_eq!(order.refunded_to_buyer, Some(usd(refunded)));
    }
}

#[sqlx::test]
async fn the_buyer_accepts_exactly_what_the_seller_proposed(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let proposed = app
        .seller()
        .await
        .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(4_000)))
        .await
        .unwrap()
        .into_inner();
    let dispute = proposed.dispute.unwrap();
    assert_eq!(dispute.state, DisputeState::Negotiating as i32);
    let proposal = dispute.proposal.unwrap();
    assert_eq!(
        (proposal.remedy, proposal.refund_amount),
        (Remedy::PartialRefund as i32, Some(usd(4_000)))
    );
    assert_eq!(proposal.message, "how about this instead");

    // The proposal cannot be edited behind the buyer's back: the database refuses.
    let edit =
        sqlx::query("UPDATE disputes SET proposal_refund_minor = 1 WHERE dispute_id = $1::uuid")
            .bind(&d)
            .execute(&pool)
            .await;
    assert!(
        edit.unwrap_err()
            .to_string()
            .contains("a proposal is never edited")
    );

    let accepted = app
        .buyer()
        .await
        .accept_proposal(accept_proposal(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        accepted.dispute.as_ref().unwrap().outcome,
        DisputeOutcome::ResolvedPartial as i32
    );
    let order = accepted.order.unwrap();
    assert_eq!(
        (order.refunded_to_buyer, order.released_to_seller),
        (Some(usd(4_000)), Some(usd(6_000)))
    );
}

#[sqlx::test]
async fn accepting_a_proposed_return_starts_a_return(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.seller()
        .await
        .respond_to_dispute(propose(&d, Remedy::ReturnAndRefund, None))
        .await
        .unwrap();
    let accepted = app
        .buyer()
        .await
        .accept_proposal(accept_proposal(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&accepted.dispute),
        DisputeState::AwaitingReturnShipment as i32
    );
    assert_eq!(
        return_status(&accepted.dispute),
        ReturnStatus::AwaitingShipment as i32
    );
    // Now the dispute involves a return: it is cancelled through the return.
    let refused = app.buyer().await.cancel_dispute(cancel_request(&d)).await;
    assert_eq!(
        reason(refused),
        (Code::FailedPrecondition, "RETURN_IN_PROGRESS".into())
    );
}

#[sqlx::test]
async fn a_bad_answer_reports_every_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut not_received = open_request("order-1", Remedy::FullRefund);
    not_received.reason = pb::DisputeReason::ItemNotReceived as i32;
    app.register("order-1").await;
    let d = app
        .buyer()
        .await
        .open_dispute(not_received)
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
        .dispute_id;
    let mut seller = app.seller().await;
    let too_much = seller
        .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(10_000)))
        .await;
    assert_eq!(
        violated_fields(too_much),
        ["counter_refund_amount.amount_minor"]
    );
    let nothing_to_return = seller
        .respond_to_dispute(propose(&d, Remedy::ReturnAndRefund, None))
        .await;
    assert_eq!(violated_fields(nothing_to_return), ["counter_remedy"]);
    let mut muddled = propose(&d, Remedy::FullRefund, Some(5));
    muddled.decision = pb::SellerDecision::Accept as i32;
    assert_eq!(
        violated_fields(seller.respond_to_dispute(muddled).await),
        ["counter_remedy"]
    );
    let mut blank = accept(&d);
    blank.decision = 0;
    blank.dispute_id = "nope".into();
    blank.request_id = String::new();
    let mut fields = violated_fields(seller.respond_to_dispute(blank).await);
    fields.sort();
    assert_eq!(fields, ["decision", "dispute_id", "request_id"]);
    let mut no_reason = escalate(&d);
    no_reason.reason = "  ".into();
    assert_eq!(
        violated_fields(seller.escalate_dispute(no_reason).await),
        ["reason"]
    );
    let mut no_tracking = ship(&d);
    no_tracking.carrier = String::new();
    no_tracking.tracking_number = "x".repeat(129);
    let mut fields = violated_fields(app.buyer().await.submit_return_shipment(no_tracking).await);
    fields.sort();
    assert_eq!(fields, ["carrier", "tracking_number"]);
}

#[sqlx::test]
async fn escalation_puts_a_dispute_under_review_for_an_agent(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    // Either party, while negotiating.
    for (order_id, escalating) in [("by-buyer", &mut buyer), ("by-seller", &mut seller)] {
        app.register(order_id).await;
        let d = app.open(order_id, Remedy::FullRefund).await.dispute_id;
        app.seller()
            .await
            .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(100)))
            .await
            .unwrap();
        let escalated = escalating
            .escalate_dispute(escalate(&d))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(&escalated.dispute), DisputeState::UnderReview as i32);
    }
    // The seller, when the returned item is missing, wrong or damaged; not the buyer.
    app.register("in-transit").await;
    let d = app
        .open("in-transit", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    seller.respond_to_dispute(accept(&d)).await.unwrap();
    buyer.submit_return_shipment(ship(&d)).await.unwrap();
    assert_eq!(
        reason(buyer.escalate_dispute(escalate(&d)).await),
        (Code::FailedPrecondition, "INVALID_DISPUTE_STATE".into())
    );
    let escalated = seller
        .escalate_dispute(escalate(&d))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&escalated.dispute), DisputeState::UnderReview as i32);
    // An agent decides.
    let ruled = app
        .agent()
        .await
        .resolve_funds(resolve_request(&d, ResolveOutcome::ReleaseToSeller, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ruled.order.unwrap().funds_state,
        FundsState::ReleasedToSeller as i32
    );
    // Not escalatable while awaiting the seller.
    app.register("fresh").await;
    let d = app.open("fresh", Remedy::FullRefund).await.dispute_id;
    assert_eq!(
        reason(buyer.escalate_dispute(escalate(&d)).await),
        (Code::FailedPrecondition, "INVALID_DISPUTE_STATE".into())
    );
}

#[sqlx::test]
async fn each_step_is_refused_out_of_turn_to_the_wrong_role_and_to_strangers(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app
        .open("order-1", Remedy::ReturnAndRefund)
        .await
        .dispute_id;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    let wrong_state = (
        Code::FailedPrecondition,
        "INVALID_DISPUTE_STATE".to_string(),
    );
    assert_eq!(
        reason(buyer.accept_proposal(accept_proposal(&d)).await),
        wrong_state
    );
    assert_eq!(
        reason(buyer.submit_return_shipment(ship(&d)).await),
        wrong_state
    );
    assert_eq!(
        reason(seller.confirm_return_received(confirm(&d)).await),
        wrong_state
    );
    // Wrong role: the policy table refuses before anything is loaded.
    assert_eq!(
        reason(buyer.respond_to_dispute(accept(&d)).await),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    assert_eq!(
        reason(seller.accept_proposal(accept_proposal(&d)).await),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    assert_eq!(
        reason(app.agent().await.respond_to_dispute(accept(&d)).await),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    // Someone else's dispute is not found.
    let mut stranger = app.client(Role::Seller, "seller-2").await;
    assert_eq!(
        reason(stranger.respond_to_dispute(accept(&d)).await),
        (Code::NotFound, "DISPUTE_NOT_FOUND".into())
    );
    // Answering twice is out of turn.
    seller.respond_to_dispute(accept(&d)).await.unwrap();
    assert_eq!(
        reason(seller.respond_to_dispute(accept(&d)).await),
        wrong_state
    );
}

#[sqlx::test]
async fn the_buyer_can_cancel_in_every_open_state(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    // NEGOTIATING and UNDER_REVIEW: CancelDispute.
    for (order_id, under_review) in [("negotiating", false), ("review", true)] {
        app.register(order_id).await;
        let d = app.open(order_id, Remedy::FullRefund).await.dispute_id;
        seller
            .respond_to_dispute(propose(&d, Remedy::PartialRefund, Some(10)))
            .await
            .unwrap();
        if under_review {
            seller.escalate_dispute(escalate(&d)).await.unwrap();
        }
        let cancelled = buyer
            .cancel_dispute(cancel_request(&d))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(&cancelled.dispute), DisputeState::Cancelled as i32);
        assert_eq!(
            cancelled.order.unwrap().funds_state,
            FundsState::Held as i32
        );
    }
    // AWAITING_RETURN_SHIPMENT and RETURN_IN_TRANSIT: CancelReturn.
    for (order_id, shipped) in [("awaiting", false), ("transit", true)] {
        app.register(order_id).await;
        let d = app.open(order_id, Remedy::ReturnAndRefund).await.dispute_id;
        seller.respond_to_dispute(accept(&d)).await.unwrap();
        if shipped {
            buyer.submit_return_shipment(ship(&d)).await.unwrap();
        }
        assert_eq!(
            reason(buyer.cancel_dispute(cancel_request(&d)).await),
            (Code::FailedPrecondition, "RETURN_IN_PROGRESS".into())
        );
        let cancelled = buyer
            .cancel_return(cancel_return_request(&d))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(&cancelled.dispute), DisputeState::Cancelled as i32);
        assert_eq!(
            return_status(&cancelled.dispute),
            ReturnStatus::Cancelled as i32
        );
    }
    // After protection ends, cancelling a return in transit releases the funds and closes the order.
    app.register("late").await;
    let d = app.open("late", Remedy::ReturnAndRefund).await.dispute_id;
    seller.respond_to_dispute(accept(&d)).await.unwrap();
    buyer.submit_return_shipment(ship(&d)).await.unwrap();
    app.clock.advance(Duration::days(31));
    let cancelled = buyer
        .cancel_return(cancel_return_request(&d))
        .await
        .unwrap()
        .into_inner();
    let order = cancelled.order.unwrap();
    assert_eq!(order.funds_state, FundsState::ReleasedToSeller as i32);
    assert!(order.disputes_closed);
}

#[sqlx::test]
async fn protection_only_moves_later(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let order = app.register("order-1").await;
    let end = app.now() + Duration::days(30);
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let mut seller = app.seller().await;
    for not_later in [end, end - Duration::days(1)] {
        let refused = seller.extend_protection(extend("order-1", not_later)).await;
        assert_eq!(
            reason(refused),
            (Code::FailedPrecondition, "PROTECTION_NOT_EXTENDED".into())
        );
    }
    let extended = seller
        .extend_protection(extend("order-1", end + Duration::days(10)))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        extended.protection_ends_at,
        Some(timestamp(end + Duration::days(10)))
    );
    assert_ne!(extended.protection_ends_at, order.protection_ends_at);
    let agent_extended = app
        .agent()
        .await
        .extend_protection(extend("order-1", end + Duration::days(20)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        agent_extended.order.unwrap().protection_ends_at,
        Some(timestamp(end + Duration::days(20)))
    );
    // The dispute sees it, and its history records it.
    let dispute = app
        .buyer()
        .await
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: d.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(
        dispute.protection_ends_at,
        Some(timestamp(end + Duration::days(20)))
    );
    assert_eq!(
        history(&pool, &d).await,
        [
            "DISPUTE_OPENED",
            "PROTECTION_EXTENDED",
            "PROTECTION_EXTENDED"
        ]
    );
    // Not for strangers, not for buyers, not once settled.
    let mut stranger = app.client(Role::Seller, "seller-2").await;
    assert_eq!(
        reason(
            stranger
                .extend_protection(extend("order-1", end + Duration::days(40)))
                .await
        ),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
    assert_eq!(
        reason(
            app.buyer()
                .await
                .extend_protection(extend("order-1", end + Duration::days(40)))
                .await
        ),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    app.agent()
        .await
        .resolve_funds(resolve_request(&d, ResolveOutcome::RefundFull, None))
        .await
        .unwrap();
    assert_eq!(
        reason(
            seller
                .extend_protection(extend("order-1", end + Duration::days(40)))
                .await
        ),
        (Code::FailedPrecondition, "FUNDS_SETTLED".into())
    );
}
