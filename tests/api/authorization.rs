//! Every RPC × every role × (own, someone else's, missing): the policy table decides the
//! role, ownership decides visibility, and someone else's looks exactly like missing.

use chrono::Duration;
use dispute_service::{
    domain::Role,
    grpc::{FILE_DESCRIPTOR_SET, pb},
};
use futures::StreamExt;
use prost::Message;
use sqlx::PgPool;
use tonic::{Code, Status};

use crate::helpers::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Own,
    Others,
    Missing,
}

#[derive(Debug, PartialEq)]
enum Seen {
    Allowed,
    Denied,
    Hidden,
}

struct Fixture {
    order_id: String,
    dispute_id: String,
    fresh_order_id: String,
    buyer: String,
    /// The store whose record is asked for.
    seller: String,
}

async fn fixture(app: &TestApp, case: usize, target: Target) -> Fixture {
    let (buyer, seller) = match target {
        Target::Own | Target::Missing => ("buyer-1", "seller-1"),
        Target::Others => ("buyer-2", "seller-2"),
    };
    let mut service = app.service().await;
    let end = app.now() + Duration::days(30);
    let mut ids = Vec::new();
    for suffix in ["a", "b"] {
        let mut request = register_request(&format!("case-{case}-{suffix}"), end);
        request.buyer_id = buyer.into();
        request.seller_id = seller.into();
        ids.push(
            service
                .register_order(request)
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id,
        );
    }
    let dispute = app
        .client(Role::Buyer, buyer)
        .await
        .open_dispute(open_request(&ids[0], pb::Remedy::FullRefund))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    match target {
        Target::Missing => Fixture {
            order_id: format!("missing-{case}"),
            dispute_id: uuid::Uuid::now_v7().to_string(),
            fresh_order_id: format!("missing-{case}"),
            buyer: buyer.into(),
            seller: format!("missing-seller-{case}"),
        },
        _ => Fixture {
            order_id: ids[0].clone(),
            dispute_id: dispute.dispute_id,
            fresh_order_id: ids[1].clone(),
            buyer: buyer.into(),
            seller: seller.into(),
        },
    }
}

/// Calls `rpc` on the fixture; lists report an empty answer as hidden. A refusal for the
/// dispute's state means the call got past the role and ownership checks.
async fn call(app: &TestApp, client: &mut Client, rpc: &str, f: &Fixture) -> Result<bool, Status> {
    match call_rpc(app, client, rpc, f).await {
        Err(status) if status.code() == Code::FailedPrecondition => Ok(true),
        other => other,
    }
}

async fn call_rpc(
    app: &TestApp,
    client: &mut Client,
    rpc: &str,
    f: &Fixture,
) -> Result<bool, Status> {
    match rpc {
        "RegisterOrder" => {
            let mut request = register_request(&f.fresh_order_id, app.now() + Duration::days(30));
            request.buyer_id = f.buyer.clone();
            request.seller_id = f.buyer.replace("buyer", "seller");
            client.register_order(request).await.map(found)
        }
        "GetOrder" => client
            .get_order(pb::GetOrderRequest {
                order_id: f.order_id.clone(),
            })
            .await
            .map(found),
        "OpenDispute" => client
            .open_dispute(open_request(&f.fresh_order_id, pb::Remedy::FullRefund))
            .await
            .map(found),
        "CancelDispute" => client
            .cancel_dispute(cancel_request(&f.dispute_id))
            .await
            .map(found),
        "CancelReturn" => {
            // Hidden or denied before the missing return is noticed.
            match client
                .cancel_return(cancel_return_request(&f.dispute_id))
                .await
            {
                Err(status) if status.code() == Code::FailedPrecondition => Ok(true),
                other => other.map(found),
            }
        }
        "ResolveFunds" => client
            .resolve_funds(resolve_request(
                &f.dispute_id,
                pb::ResolveOutcome::RefundFull,
                None,
            ))
            .await
            .map(found),
        "GetDispute" => client
            .get_dispute(pb::GetDisputeRequest {
                dispute_id: f.dispute_id.clone(),
            })
            .await
            .map(found),
        "ListDisputes" => client
            .list_disputes(pb::ListDisputesRequest {
                order_id: f.order_id.clone(),
                ..Default::default()
            })
            .await
            .map(|page| !page.into_inner().disputes.is_empty()),
        "RespondToDispute" => client
            .respond_to_dispute(pb::RespondToDisputeRequest {
                dispute_id: f.dispute_id.clone(),
                decision: pb::SellerDecision::Accept as i32,
                request_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await
            .map(found),
        "AcceptProposal" => client
            .accept_proposal(pb::AcceptProposalRequest {
                dispute_id: f.dispute_id.clone(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "EscalateDispute" => client
            .escalate_dispute(pb::EscalateDisputeRequest {
                dispute_id: f.dispute_id.clone(),
                reason: "we disagree".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "SubmitReturnShipment" => client
            .submit_return_shipment(pb::SubmitReturnShipmentRequest {
                dispute_id: f.dispute_id.clone(),
                carrier: "UPS".into(),
                tracking_number: "1Z999".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "ConfirmReturnReceived" => client
            .confirm_return_received(pb::ConfirmReturnReceivedRequest {
                dispute_id: f.dispute_id.clone(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "ExtendProtection" => client
            .extend_protection(pb::ExtendProtectionRequest {
                order_id: f.order_id.clone(),
                new_end: Some(timestamp(app.now() + Duration::days(60))),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "ListDisputeEvents" => client
            .list_dispute_events(pb::ListDisputeEventsRequest {
                dispute_id: f.dispute_id.clone(),
                ..Default::default()
            })
            .await
            .map(found),
        "WatchEvents" => client
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .map(found),
        "SubmitReplacementShipment" => client
            .submit_replacement_shipment(pb::SubmitReplacementShipmentRequest {
                dispute_id: f.dispute_id.clone(),
                carrier: "DHL".into(),
                tracking_number: "JD014600".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "ConfirmReplacementReceived" => client
            .confirm_replacement_received(pb::ConfirmReplacementReceivedRequest {
                dispute_id: f.dispute_id.clone(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "PostDisputeMessage" => client
            .post_dispute_message(pb::PostDisputeMessageRequest {
                dispute_id: f.dispute_id.clone(),
                text: "any news?".into(),
                evidence_urls: vec![],
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        "GetSellerDisputeStats" => client
            .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
                seller_id: f.seller.clone(),
                window: None,
            })
            .await
            .map(found),
        "AddInternalNote" => client
            .add_internal_note(pb::AddInternalNoteRequest {
                dispute_id: f.dispute_id.clone(),
                text: "called the buyer".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .map(found),
        other => panic!("no call written for {other}: add it to this test"),
    }
}

fn found<T>(_: T) -> bool {
    true
}

/// What each role gets from each RPC on its own resource, someone else's and a missing
/// one: `A` allowed, `H` hidden (NOT_FOUND, or an empty list), `D` PERMISSION_DENIED.
/// For GetSellerDisputeStats the three are the caller's store (seller-1), another store
/// and a store with no orders: a seller reads only its own record, an agent any.
/// Written from the rules in the README ("What it does" and the authorization table), not
/// read from the code: widening or narrowing the policy table fails this test.
const EXPECTED: &[(&str, [&str; 4])] = &[
    //  RPC                    BUYER  SELLER  AGENT  SERVICE
    ("RegisterOrder", ["DDD", "DDD", "DDD", "AAA"]),
    ("GetOrder", ["AHH", "AHH", "AAH", "AAH"]),
    ("OpenDispute", ["AHH", "DDD", "DDD", "DDD"]),
    ("CancelDispute", ["AHH", "DDD", "DDD", "DDD"]),
    ("CancelReturn", ["AHH", "DDD", "DDD", "DDD"]),
    ("ResolveFunds", ["DDD", "AHH", "AAH", "DDD"]),
    ("GetDispute", ["AHH", "AHH", "AAH", "AAH"]),
    ("ListDisputes", ["AHH", "AHH", "AAH", "AAH"]),
    ("RespondToDispute", ["DDD", "AHH", "DDD", "DDD"]),
    ("AcceptProposal", ["AHH", "DDD", "DDD", "DDD"]),
    ("EscalateDispute", ["AHH", "AHH", "DDD", "DDD"]),
    ("SubmitReturnShipment", ["AHH", "DDD", "DDD", "DDD"]),
    ("ConfirmReturnReceived", ["DDD", "AHH", "DDD", "DDD"]),
    ("ExtendProtection", ["DDD", "AHH", "AAH", "DDD"]),
    ("ListDisputeEvents", ["AHH", "AHH", "AAH", "AAH"]),
    ("WatchEvents", ["DDD", "DDD", "AAA", "AAA"]),
    ("SubmitReplacementShipment", ["DDD", "AHH", "DDD", "DDD"]),
    ("ConfirmReplacementReceived", ["AHH", "DDD", "DDD", "DDD"]),
    ("PostDisputeMessage", ["AHH", "AHH", "AAH", "DDD"]),
    ("GetSellerDisputeStats", ["DDD", "ADD", "AAA", "DDD"]),
    ("AddInternalNote", ["DDD", "DDD", "AAH", "DDD"]),
];

const ROLES: [Role; 4] = [Role::Buyer, Role::Seller, Role::Agent, Role::Service];
const TARGETS: [Target; 3] = [Target::Own, Target::Others, Target::Missing];

fn expected(rpc: &str, role: Role, target: Target) -> Seen {
    let (_, row) = EXPECTED.iter().find(|(name, _)| *name == rpc).unwrap();
    let column = ROLES.iter().position(|r| *r == role).unwrap();
    let cell = TARGETS.iter().position(|t| *t == target).unwrap();
    match row[column].as_bytes()[cell] {
        b'A' => Seen::Allowed,
        b'H' => Seen::Hidden,
        b'D' => Seen::Denied,
        other => panic!("bad table cell {}", other as char),
    }
}

#[test]
fn the_table_covers_every_rpc_of_the_service_once() {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "DisputeService")
        .unwrap();
    let mut rpcs: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    let mut table: Vec<&str> = EXPECTED.iter().map(|(rpc, _)| *rpc).collect();
    rpcs.sort();
    table.sort();
    assert_eq!(table, rpcs);
}

#[sqlx::test]
async fn every_rpc_role_and_ownership_gets_the_answer_the_rules_give(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut cases = Vec::new();
    for (rpc, _) in EXPECTED {
        for role in ROLES {
            for target in TARGETS {
                cases.push((cases.len(), *rpc, role, target));
            }
        }
    }
    // One client (one connection) per role, shared by every case; cases run side by side,
    // each on orders of its own.
    let mut clients = Vec::new();
    for role in ROLES {
        let sub = match role {
            Role::Buyer => "buyer-1",
            Role::Seller => "seller-1",
            Role::Agent => "agent-1",
            Role::Service => "order-service",
        };
        clients.push((role, app.client(role, sub).await));
    }
    let (app, clients) = (&app, &clients);
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|(case, rpc, role, target)| async move {
            let fixture = fixture(app, case, target).await;
            let mut client = clients.iter().find(|(r, _)| *r == role).unwrap().1.clone();
            let result = call(app, &mut client, rpc, &fixture).await;
            let seen = match &result {
                Ok(true) => Seen::Allowed,
                Ok(false) => Seen::Hidden,
                Err(status) if status.code() == Code::NotFound => Seen::Hidden,
                Err(status) if status.code() == Code::PermissionDenied => Seen::Denied,
                Err(status) => {
                    return Some(format!(
                        "{rpc} as {role:?} on {target:?}: unexpected {status:?}"
                    ));
                }
            };
            let want = expected(rpc, role, target);
            (seen != want).then(|| {
                format!("{rpc} as {role:?} on {target:?}: got {seen:?}, want {want:?}: {result:?}")
            })
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[sqlx::test]
async fn someone_elses_dispute_is_byte_identical_to_a_missing_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", pb::Remedy::FullRefund).await;
    let mut stranger = app.client(Role::Buyer, "buyer-2").await;
    let others = stranger
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: dispute.dispute_id.clone(),
        })
        .await
        .unwrap_err();
    let missing = stranger
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(others.code(), Code::NotFound);
    assert_eq!(others.message(), missing.message());
    assert_eq!(others.details(), missing.details());
    let others = stranger
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await
        .unwrap_err();
    assert_eq!(
        (others.code(), others.details()),
        (missing.code(), missing.details())
    );
}

#[sqlx::test]
async fn seller_agent_and_service_are_told_only_the_buyer_can_cancel(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", pb::Remedy::ReturnAndRefund).await;
    for mut client in [app.seller().await, app.agent().await, app.service().await] {
        let refused = client
            .cancel_dispute(cancel_request(&dispute.dispute_id))
            .await;
        assert!(
            refused
                .as_ref()
                .unwrap_err()
                .message()
                .contains("only the buyer can cancel")
        );
        assert_eq!(
            reason(refused),
            (Code::PermissionDenied, "ONLY_BUYER_CAN_CANCEL".into())
        );
        let refused = client
            .cancel_return(cancel_return_request(&dispute.dispute_id))
            .await;
        assert_eq!(
            reason(refused),
            (Code::PermissionDenied, "ONLY_BUYER_CAN_CANCEL".into())
        );
    }
    let still = app
        .agent()
        .await
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: dispute.dispute_id,
        })
        .await
        .unwrap();
    assert_eq!(
        still.into_inner().dispute.unwrap().state,
        pb::DisputeState::AwaitingSeller as i32
    );
}
