//! What the parties' apps need to see: the next deadline as a countdown (and the worker
//! keeping to it), page tokens and cursors that cannot be forged or reused with another
//! filter, inbox listings, explained counter-proposals, re-registration after an
//! extension.

use std::collections::HashSet;

use chrono::Duration;
use dispute_service::{
    domain::Role,
    grpc::pb::{self, DeadlineConsequence, DeadlineKind, DisputeState, ListOrder, Remedy},
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test]
async fn every_deadline_fires_exactly_when_the_api_said_and_does_what_it_said(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);

    // The seller stays silent: the buyer's full refund is granted.
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await;
    let next = d.next_deadline.as_ref().unwrap();
    assert_eq!(
        from_timestamp(next.due_at.as_ref().unwrap()),
        from_timestamp(d.created_at.as_ref().unwrap()) + Duration::days(5)
    );
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::SellerResponse,
        DeadlineConsequence::GrantBuyerRemedy,
    )
    .await;
    assert_eq!(after.state(), DisputeState::Resolved);
    assert_eq!(after.outcome(), pb::DisputeOutcome::ResolvedBuyerFavour);
    assert_eq!(
        after.next_deadline, None,
        "a resolved dispute waits for nothing"
    );

    // A counter-proposal nobody takes up: an agent reviews.
    app.register("order-2").await;
    let d = app.open("order-2", Remedy::FullRefund).await;
    seller
        .respond_to_dispute(propose(&d.dispute_id, Remedy::PartialRefund, Some(1_000)))
        .await
        .unwrap();
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::Negotiation,
        DeadlineConsequence::Escalate,
    )
    .await;
    assert_eq!(after.state(), DisputeState::UnderReview);
    assert_eq!(after.next_deadline, None, "under review waits for an agent");

    // A return agreed and never shipped: the seller is paid.
    app.register("order-3").await;
    let d = app.open("order-3", Remedy::ReturnAndRefund).await;
    seller
        .respond_to_dispute(accept(&d.dispute_id))
        .await
        .unwrap();
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::ReturnShipment,
        DeadlineConsequence::ReleaseToSeller,
    )
    .await;
    assert_eq!(after.outcome(), pb::DisputeOutcome::ResolvedSellerFavour);

    // A return shipped and never confirmed: the buyer is refunded.
    app.register("order-4").await;
    let d = app.open("order-4", Remedy::ReturnAndRefund).await;
    seller
        .respond_to_dispute(accept(&d.dispute_id))
        .await
        .unwrap();
    buyer
        .submit_return_shipment(ship(&d.dispute_id))
        .await
        .unwrap();
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::ReturnReceipt,
        DeadlineConsequence::RefundBuyer,
    )
    .await;
    assert_eq!(after.outcome(), pb::DisputeOutcome::ResolvedBuyerFavour);

    // A partial refund asked and the seller silent.
    app.register("order-5").await;
    let d = app.open("order-5", Remedy::PartialRefund).await;
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::SellerResponse,
        DeadlineConsequence::GrantBuyerRemedy,
    )
    .await;
    assert_eq!(after.outcome(), pb::DisputeOutcome::ResolvedPartial);

    // A return asked and the seller silent: the return starts, with its own countdown.
    app.register("order-6").await;
    let d = app.open("order-6", Remedy::ReturnAndRefund).await;
    let after = at_the_deadline(
        &app,
        &d.dispute_id,
        DeadlineKind::SellerResponse,
        DeadlineConsequence::GrantBuyerRemedy,
    )
    .await;
    assert_eq!(after.state(), DisputeState::AwaitingReturnShipment);
    assert_eq!(
        after.next_deadline.unwrap().kind(),
        DeadlineKind::ReturnShipment
    );
}

async fn list(
    client: &mut Client,
    request: pb::ListDisputesRequest,
) -> Result<pb::ListDisputesResponse, tonic::Status> {
    client.list_disputes(request).await.map(|r| r.into_inner())
}

#[sqlx::test]
async fn page_tokens_are_bound_to_their_caller_and_filter_and_cannot_be_edited(pool: PgPool) {
    let app = spawn_app(pool).await;
    for i in 0..5 {
        let order = format!("order-{i}");
        app.register(&order).await;
        app.open(&order, Remedy::FullRefund).await;
    }
    let mut buyer = app.buyer().await;
    let request = pb::ListDisputesRequest {
        buyer_id: "buyer-1".into(),
        page_size: 2,
        ..Default::default()
    };
    let first = list(&mut buyer, request.clone()).await.unwrap();
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    let second = list(
        &mut buyer,
        pb::ListDisputesRequest {
            page_token: token.clone(),
            ..request.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(second.disputes.len(), 2);
    assert!(
        second
            .disputes
            .iter()
            .all(|d| first.disputes.iter().all(|f| f.dispute_id != d.dispute_id))
    );

    let refused =
        |result: Result<pb::ListDisputesResponse, tonic::Status>| violated_fields(result.map(drop));
    // Another filter with the same token.
    let other_filter = pb::ListDisputesRequest {
        page_token: token.clone(),
        state: DisputeState::AwaitingSeller as i32,
        ..request.clone()
    };
    assert_eq!(
        refused(list(&mut buyer, other_filter).await),
        ["page_token"]
    );
    // An edited token: one character changed.
    let mut edited = token.clone().into_bytes();
    let last = edited.len() - 1;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    let with_edited = pb::ListDisputesRequest {
        page_token: edited,
        ..request.clone()
    };
    assert_eq!(refused(list(&mut buyer, with_edited).await), ["page_token"]);
    // The readable format tokens used to have: a forged position.
    use base64::Engine;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode("v1:ffffffff-ffff-7fff-bfff-ffffffffffff");
    let with_forged = pb::ListDisputesRequest {
        page_token: forged,
        ..request.clone()
    };
    assert_eq!(refused(list(&mut buyer, with_forged).await), ["page_token"]);
    // Another caller with the same filter.
    let mut agent = app.agent().await;
    let as_agent = pb::ListDisputesRequest {
        page_token: token,
        ..request.clone()
    };
    assert_eq!(refused(list(&mut agent, as_agent).await), ["page_token"]);

    // A stream cursor edited by one character is refused, not followed.
    let mut service = app.service().await;
    let mut stream = service
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let cursor = stream
        .message()
        .await
        .unwrap()
        .unwrap()
        .event
        .unwrap()
        .cursor;
    let mut bytes = cursor.into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let status = service
        .watch_events(pb::WatchEventsRequest {
            after_cursor: String::from_utf8(bytes).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[sqlx::test]
async fn inboxes_list_what_waits_for_me_in_the_order_of_last_change_with_a_total(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (mut buyer, mut seller) = (app.buyer().await, app.seller().await);
    // Six disputes, one per waiting state (and a resolved one).
    let mut ids = Vec::new();
    for i in 0..6 {
        let order = format!("order-{i}");
        app.register(&order).await;
        let remedy = if i >= 2 {
            Remedy::ReturnAndRefund
        } else {
            Remedy::FullRefund
        };
        ids.push(app.open(&order, remedy).await.dispute_id);
        app.clock.advance(Duration::seconds(1));
    }
    // 0: awaiting the seller (seller's move)
    // 1: negotiating (buyer's move)
    seller
        .respond_to_dispute(propose(&ids[1], Remedy::PartialRefund, Some(500)))
        .await
        .unwrap();
    // 2: awaiting the return's shipment (buyer's move)
    seller.respond_to_dispute(accept(&ids[2])).await.unwrap();
    // 3: return in transit (seller's move)
    seller.respond_to_dispute(accept(&ids[3])).await.unwrap();
    buyer.submit_return_shipment(ship(&ids[3])).await.unwrap();
    // 4: under review (an agent's move): the buyer escalates the seller's counter-offer
    seller
        .respond_to_dispute(propose(&ids[4], Remedy::PartialRefund, Some(500)))
        .await
        .unwrap();
    buyer.escalate_dispute(escalate(&ids[4])).await.unwrap();
    // 5: cancelled (nobody's)
    buyer
        .cancel_return(cancel_return_request(&ids[5]))
        .await
        .unwrap();

    let mine = |client: &mut Client, party: (&str, &str)| {
        let mut client = client.clone();
        let request = pb::ListDisputesRequest {
            buyer_id: if party.0 == "buyer" {
                party.1.into()
            } else {
                String::new()
            },
            seller_id: if party.0 == "seller" {
                party.1.into()
            } else {
                String::new()
            },
            needs_my_action: true,
            ..Default::default()
        };
        async move { list(&mut client, request).await.unwrap() }
    };
    let ids_of = |page: &pb::ListDisputesResponse| -> HashSet<String> {
        page.disputes.iter().map(|d| d.dispute_id.clone()).collect()
    };
    let seller_inbox = mine(&mut seller, ("seller", "seller-1")).await;
    assert_eq!(
        ids_of(&seller_inbox),
        HashSet::from([ids[0].clone(), ids[3].clone()])
    );
    assert_eq!(seller_inbox.total_size, Some(2));
    let buyer_inbox = mine(&mut buyer, ("buyer", "buyer-1")).await;
    assert_eq!(
        ids_of(&buyer_inbox),
        HashSet::from([ids[1].clone(), ids[2].clone()])
    );
    let mut agent = app.agent().await;
    let agent_inbox = list(
        &mut agent,
        pb::ListDisputesRequest {
            needs_my_action: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids_of(&agent_inbox), HashSet::from([ids[4].clone()]));
    assert_eq!(
        agent_inbox.total_size, None,
        "an unscoped list is not counted"
    );

    // A set of states.
    let open_returns = list(
        &mut buyer,
        pb::ListDisputesRequest {
            buyer_id: "buyer-1".into(),
            states: vec![
                DisputeState::AwaitingReturnShipment as i32,
                DisputeState::ReturnInTransit as i32,
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ids_of(&open_returns),
        HashSet::from([ids[2].clone(), ids[3].clone()])
    );
    assert_eq!(open_returns.total_size, Some(2));

    // By last change: touching the oldest dispute brings it first; pages of two cover all
    // six exactly once, in that order.
    app.clock.advance(Duration::seconds(1));
    seller.respond_to_dispute(accept(&ids[0])).await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &mut buyer,
            pb::ListDisputesRequest {
                buyer_id: "buyer-1".into(),
                order_by: ListOrder::UpdatedDesc as i32,
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(page.total_size, Some(6));
        seen.extend(page.disputes.iter().map(|d| {
            (
                d.dispute_id.clone(),
                from_timestamp(d.updated_at.as_ref().unwrap()),
            )
        }));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0].0, ids[0], "the dispute changed last comes first");
    assert!(
        seen.windows(2).all(|w| w[0].1 >= w[1].1),
        "newest change first: {seen:?}"
    );
    assert_eq!(
        seen.iter().map(|(id, _)| id).collect::<HashSet<_>>().len(),
        6
    );
}

#[sqlx::test]
async fn a_counter_proposal_without_a_message_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await;
    let mut seller = app.seller().await;
    for message in ["", "   "] {
        let request = pb::RespondToDisputeRequest {
            message: message.into(),
            ..propose(&d.dispute_id, Remedy::PartialRefund, Some(1_000))
        };
        assert_eq!(
            violated_fields(seller.respond_to_dispute(request).await),
            ["message"]
        );
    }
}

#[sqlx::test]
async fn the_order_service_may_send_its_registration_again_after_an_extension(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut service = app.service().await;
    let end = app.now() + Duration::days(30);
    let original = register_request("order-1", end);
    service.register_order(original.clone()).await.unwrap();
    let mut seller = app.client(Role::Seller, "seller-1").await;
    seller
        .extend_protection(extend("order-1", end + Duration::days(10)))
        .await
        .unwrap();
    // The same facts under a new request id: the same registration, the extension kept.
    let again = service
        .register_order(pb::RegisterOrderRequest {
            request_id: "register-again".into(),
            ..original.clone()
        })
        .await
        .expect("the original facts are not a conflict")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        from_timestamp(again.protection_ends_at.as_ref().unwrap()),
        end + Duration::days(10)
    );
    // With the extended end, too.
    service
        .register_order(pb::RegisterOrderRequest {
            request_id: "register-extended".into(),
            ..register_request("order-1", end + Duration::days(10))
        })
        .await
        .expect("the extended facts are not a conflict");
    // Other facts still are.
    let (code, reason) = reason(
        service
            .register_order(pb::RegisterOrderRequest {
                request_id: "register-other".into(),
                ..register_request("order-1", end + Duration::days(3))
            })
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::AlreadyExists, "ORDER_ALREADY_EXISTS")
    );
}
