//! Health, reflection, message limits and shutdown.

use dispute_service::grpc::pb;
use sqlx::PgPool;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(app.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[sqlx::test]
async fn health_is_serving_once_the_schema_is_current_and_not_serving_after_shutdown(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut status = ServingStatus::Unknown;
    for _ in 0..50 {
        status = health(&app, "dispute.v1.DisputeService").await;
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    app.stop().await.expect("a clean stop");
}

#[sqlx::test(migrations = false)]
async fn health_is_not_serving_while_the_schema_is_missing(pool: PgPool) {
    let app = spawn_app(pool).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        health(&app, "dispute.v1.DisputeService").await,
        ServingStatus::NotServing
    );
}

#[sqlx::test]
async fn reflection_lists_the_service_on_v1_and_v1alpha(pool: PgPool) {
    use tokio_stream::StreamExt;
    let app = spawn_app(pool).await;
    let channel = app.channel().await;
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = format!("{:?}", stream.next().await.unwrap().unwrap());
    assert!(answer.contains("dispute.v1.DisputeService"), "{answer}");

    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "google.rpc.ErrorInfo".into(),
        )),
    };
    let mut stream = v1alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = format!("{:?}", stream.next().await.unwrap().unwrap());
    assert!(
        answer.contains("FileDescriptorResponse"),
        "google.rpc descriptors are registered: {answer}"
    );
}

#[sqlx::test]
async fn a_request_over_64_kib_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let mut request = open_request("order-1", pb::Remedy::FullRefund);
    request.description = "x".repeat(70 * 1024);
    let status = app.buyer().await.open_dispute(request).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
}
