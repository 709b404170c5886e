use chrono::Duration;
use dispute_service::grpc::pb;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test]
async fn a_registered_order_holds_its_amount_in_escrow(pool: PgPool) {
    let app = spawn_app(pool).await;
    let order = app.register("order-1").await;
    assert_eq!(order.funds_state, pb::FundsState::Held as i32);
    assert_eq!(order.amount, Some(usd(10_000)));
    assert_eq!(order.refunded_to_buyer, None);
    assert_eq!(order.released_to_seller, None);
    assert_eq!(order.settled_at, None);
    let fetched = app
        .buyer()
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "order-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().order, Some(order));
}

#[sqlx::test]
async fn registering_the_same_facts_again_succeeds_and_other_facts_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let end = app.now() + Duration::days(30);
    let mut service = app.service().await;
    let first = service
        .register_order(register_request("order-1", end))
        .await
        .unwrap()
        .into_inner();
    let mut again = register_request("order-1", end);
    again.request_id = "another-request".into();
    let second = service.register_order(again).await.unwrap().into_inner();
    assert_eq!(first, second);

    let mut different = register_request("order-1", end);
    different.request_id = "third-request".into();
    different.amount = Some(usd(9_999));
    assert_eq!(
        reason(service.register_order(different).await),
        (Code::AlreadyExists, "ORDER_ALREADY_EXISTS".into())
    );
}

#[sqlx::test]
async fn a_malformed_registration_reports_every_bad_field_and_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let request = pb::RegisterOrderRequest {
        order_id: "bad id!".into(),
        buyer_id: String::new(),
        seller_id: "x".repeat(65),
        amount: Some(pb::Money {
            currency_code: "usd".into(),
            amount_minor: 0,
        }),
        protection_ends_at: None,
        request_id: String::new(),
    };
    let mut fields = violated_fields(app.service().await.register_order(request).await);
    fields.sort();
    assert_eq!(
        fields,
        [
            "amount.amount_minor",
            "amount.currency_code",
            "buyer_id",
            "order_id",
            "protection_ends_at",
            "request_id",
            "seller_id"
        ]
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((orders, keys), (0, 0));
}

#[sqlx::test]
async fn a_missing_order_is_not_found(pool: PgPool) {
    let app = spawn_app(pool).await;
    let result = app
        .agent()
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "nope".into(),
        })
        .await;
    assert_eq!(reason(result), (Code::NotFound, "ORDER_NOT_FOUND".into()));
}
