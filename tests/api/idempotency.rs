//! Retries return the first response byte for byte; a reused request id with another
//! payload is refused; refused requests are not remembered.

use dispute_service::grpc::pb::{Remedy, ResolveOutcome};
use prost::Message;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test]
async fn a_retry_returns_the_first_response_byte_for_byte_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let mut agent = app.agent().await;
    let request = resolve_request(
        &dispute.dispute_id,
        ResolveOutcome::RefundPartial,
        Some(1_234),
    );
    let first = agent
        .resolve_funds(request.clone())
        .await
        .unwrap()
        .into_inner();
    app.clock.advance(chrono::Duration::hours(1));
    let retry = agent.resolve_funds(request).await.unwrap().into_inner();
    assert_eq!(first.encode_to_vec(), retry.encode_to_vec());
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM dispute_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        events, 3,
        "opened, resolved, settled; nothing for the retry"
    );
}

#[sqlx::test]
async fn a_request_id_reused_with_another_payload_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", Remedy::FullRefund).await;
    let mut agent = app.agent().await;
    let request = resolve_request(&dispute.dispute_id, ResolveOutcome::RefundFull, None);
    agent.resolve_funds(request.clone()).await.unwrap();
    let mut changed = request;
    changed.note = "a different ruling".into();
    let refused = agent.resolve_funds(changed).await;
    assert_eq!(
        reason(refused),
        (Code::InvalidArgument, "REQUEST_ID_REUSED".into())
    );
}

#[sqlx::test]
async fn request_ids_are_scoped_to_the_actor_the_rpc_and_the_order(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    app.register("order-2").await;
    let mut first = open_request("order-1", Remedy::FullRefund);
    first.request_id = "same-id".into();
    let mut buyer = app.buyer().await;
    let a = buyer
        .open_dispute(first.clone())
        .await
        .unwrap()
        .into_inner();
    // Same RPC, same actor, same order, different payload: refused.
    let mut changed = first.clone();
    changed.description = "another description".into();
    assert_eq!(
        reason(buyer.open_dispute(changed).await),
        (Code::InvalidArgument, "REQUEST_ID_REUSED".into())
    );
    // The same id on another order is another request (README, "Idempotency").
    let mut second = open_request("order-2", Remedy::FullRefund);
    second.request_id = "same-id".into();
    let b = buyer.open_dispute(second).await.unwrap().into_inner();
    assert_ne!(
        a.dispute.as_ref().unwrap().dispute_id,
        b.dispute.unwrap().dispute_id
    );
    // Another RPC may use the same id.
    let mut cancel = cancel_request(&a.dispute.unwrap().dispute_id);
    cancel.request_id = "same-id".into();
    buyer.cancel_dispute(cancel).await.unwrap();
}

#[sqlx::test]
async fn a_refused_request_is_not_remembered(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut buyer = app.buyer().await;
    let request = open_request("order-1", Remedy::FullRefund);
    assert_eq!(
        reason(buyer.open_dispute(request.clone()).await),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0);
    // Once the order exists, the same request succeeds.
    app.register("order-1").await;
    assert!(buyer.open_dispute(request).await.is_ok());
}
