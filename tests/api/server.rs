//! Health, reflection, message limits and shutdown.

use chrono::Utc;
use dispute_service::{domain::Role, grpc::pb};
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

/// Waits (at most 5 s) until the service's health is SERVING.
async fn until_serving(app: &TestApp) {
    let mut status = ServingStatus::Unknown;
    for _ in 0..100 {
        status = health(app, "dispute.v1.DisputeService").await;
        if status == ServingStatus::Serving {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, ServingStatus::Serving);
}

#[sqlx::test]
async fn health_is_serving_once_the_schema_is_current_and_not_serving_after_shutdown(pool: PgPool) {
    let app = spawn_app(pool).await;
    until_serving(&app).await;
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    // Watch health across the shutdown: NOT_SERVING is announced before the server goes.
    let mut watch = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: "dispute.v1.DisputeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let TestApp { server, .. } = app;
    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("health announced the shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    stopping.await.unwrap().expect("a clean stop");
}

#[sqlx::test(migrations = false)]
async fn health_is_not_serving_while_the_schema_is_missing(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &["--health-interval", "50ms"]).await;
    // The health task has looked at the database when it has asked it for the schema's
    // state; until then NOT_SERVING would only be the initial answer.
    let asked = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE '%_sqlx_migrations%'
               AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut checked = false;
    for _ in 0..200 {
        if asked().await > 0 {
            checked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(checked, "the health task never asked for the schema");
    assert_eq!(
        health(&app, "dispute.v1.DisputeService").await,
        ServingStatus::NotServing
    );
    // And the same task turns SERVING once the schema is there.
    dispute_service::store::MIGRATOR.run(&pool).await.unwrap();
    until_serving(&app).await;
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
    let refused = app.buyer().await.open_dispute(request).await;
    assert_eq!(
        reason(refused),
        (Code::OutOfRange, "MESSAGE_TOO_LARGE".into())
    );
}

/// Holds the order's row lock in a transaction of its own, so commands on it wait.
async fn hold_order_lock(
    pool: &PgPool,
    order_id: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[sqlx::test]
async fn requests_beyond_the_in_flight_bound_are_refused_not_queued(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &["--max-in-flight", "1"]).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", pb::Remedy::FullRefund).await;
    let lock = hold_order_lock(&pool, "order-1").await;
    let mut buyer = app.buyer().await;
    let waiting = tokio::spawn(async move {
        buyer
            .cancel_dispute(cancel_request(&dispute.dispute_id))
            .await
    });
    // The call holds the one slot once it waits on the lock.
    until_waiting_on_locks(&pool, 1).await;
    let refused = app
        .agent()
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "order-1".into(),
        })
        .await;
    assert_eq!(
        reason(refused),
        (Code::ResourceExhausted, "OVERLOADED".into())
    );
    lock.rollback().await.unwrap();
    assert!(
        waiting.await.unwrap().is_ok(),
        "the admitted call completes"
    );
    assert!(
        app.agent()
            .await
            .get_order(pb::GetOrderRequest {
                order_id: "order-1".into()
            })
            .await
            .is_ok()
    );
}

#[sqlx::test]
async fn a_request_past_its_deadline_fails_and_changes_nothing(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &["--request-timeout", "300ms"]).await;
    app.register("order-1").await;
    let dispute = app.open("order-1", pb::Remedy::FullRefund).await;
    let lock = hold_order_lock(&pool, "order-1").await;
    let late = app
        .buyer()
        .await
        .cancel_dispute(cancel_request(&dispute.dispute_id))
        .await;
    assert_eq!(
        reason(late),
        (Code::DeadlineExceeded, "DEADLINE_EXCEEDED".into())
    );
    lock.rollback().await.unwrap();
    let after = app
        .agent()
        .await
        .get_dispute(pb::GetDisputeRequest {
            dispute_id: dispute.dispute_id,
        })
        .await
        .unwrap();
    assert_eq!(
        after.into_inner().dispute.unwrap().state,
        pb::DisputeState::AwaitingSeller as i32
    );
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE rpc = 'CancelDispute'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(keys, 0);
}

#[tokio::test]
async fn an_unreachable_database_gives_unavailable_and_not_serving() {
    use std::sync::Arc;
    let config = serve_config(&[]);
    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
        .unwrap();
    let server = start(
        config,
        nowhere,
        Arc::new(dispute_service::clock::SystemClock),
    )
    .await;
    let refused = server
        .agent()
        .await
        .get_order(pb::GetOrderRequest {
            order_id: "order-1".into(),
        })
        .await;
    assert_eq!(
        reason(refused),
        (Code::Unavailable, "DATABASE_UNAVAILABLE".into())
    );
    let mut health = HealthClient::new(server.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: "dispute.v1.DisputeService".into(),
        })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status(), ServingStatus::NotServing);
    // The process itself is alive: a liveness probe must not restart it for an outage.
    let alive = health
        .check(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .unwrap();
    assert_eq!(alive.into_inner().status(), ServingStatus::Serving);
    server.stop().await.unwrap();
}

#[sqlx::test]
async fn the_healthcheck_command_exits_zero_only_when_serving(pool: PgPool) {
    let app = spawn_app(pool).await;
    // The server runs on this test's thread: the command must not block it.
    let run = |addr: String, service: &'static str| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dispute-service"))
                .args(["healthcheck", "--addr", &addr, "--service", service])
                .args(["--timeout", "2s"])
                .output()
                .unwrap()
        })
    };
    // Health turns SERVING once the schema check has run.
    let service = "dispute.v1.DisputeService";
    let mut serving = run(app.addr.to_string(), service).await.unwrap();
    for _ in 0..50 {
        if serving.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        serving = run(app.addr.to_string(), service).await.unwrap();
    }
    assert!(serving.status.success(), "{serving:?}");
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "SERVING");
    let unknown = run(app.addr.to_string(), "no.such.Service").await.unwrap();
    assert!(!unknown.status.success());
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let down = run(closed, "").await.unwrap();
    assert!(!down.status.success());
}

/// Waits until `backends` backends of the test's database wait on a lock: on Citus, on
/// any node (the rows are locked where their shards are).
async fn until_waiting_on_locks(pool: &PgPool, backends: i64) {
    let activity = if on_citus(pool).await {
        "citus_stat_activity"
    } else {
        "pg_stat_activity"
    };
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {activity}
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= backends {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {backends} backends began waiting on a lock");
}

#[sqlx::test]
async fn sigterm_stops_within_one_grace_while_a_call_and_a_worker_pass_are_held_up(pool: PgPool) {
    use std::time::{Duration, Instant};
    let grace = Duration::from_secs(3);
    let binary = crate::process::Binary::serve(
        &pool,
        &[
            ("DISPUTE_SHUTDOWN_GRACE", "3s"),
            ("DISPUTE_WORKER_ENABLED", "true"),
            ("DISPUTE_WORKER_INTERVAL", "100ms"),
        ],
    );
    let mut service = client_at(binary.addr, Role::Service, "order-service").await;
    for order in ["order-1", "order-2"] {
        service
            .register_order(register_request(
                order,
                Utc::now() + chrono::Duration::days(30),
            ))
            .await
            .unwrap();
    }
    // The worker's purge of old idempotency keys waits on the key rows the test holds: a
    // KEY SHARE lock, taken before the keys become old, stops their DELETE but not the
    // UPDATE that ages them (so the worker cannot purge them in between).
    let mut keys = pool.begin().await.unwrap();
    for order in ["order-1", "order-2"] {
        sqlx::query("SELECT 1 FROM idempotency_keys WHERE order_id = $1 FOR KEY SHARE")
            .bind(order)
            .execute(&mut *keys)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '30 days'")
        .execute(&pool)
        .await
        .unwrap();
    until_waiting_on_locks(&pool, 1).await;
    // A call waits on the order's row lock.
    let order = hold_order_lock(&pool, "order-1").await;
    let mut buyer = client_at(binary.addr, Role::Buyer, "buyer-1").await;
    let held = tokio::spawn(async move {
        buyer
            .open_dispute(open_request("order-1", pb::Remedy::FullRefund))
            .await
    });
    until_waiting_on_locks(&pool, 2).await;

    let started = Instant::now();
    let exit = binary.terminate(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(exit.success(), "{exit:?}");
    // The drain and the worker share the budget: not one grace after the other.
    assert!(
        took < grace + Duration::from_millis(1500),
        "stopped {took:?} after SIGTERM with a {grace:?} grace"
    );
    assert!(
        held.await.unwrap().is_err(),
        "the held call was not answered OK"
    );
    order.rollback().await.unwrap();
    keys.rollback().await.unwrap();
}

#[sqlx::test]
async fn a_stream_ended_by_shutdown_ends_unavailable_not_complete(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.register("order-1").await;
    let mut stream = watch(&app, "").await;
    // The registration's event arrives: the stream is live.
    assert!(stream.message().await.unwrap().is_some());
    let TestApp { server, .. } = app;
    let stopping = tokio::spawn(server.stop());
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends with the server")
        {
            Ok(Some(_)) => continue,
            ended => break ended,
        }
    };
    assert_eq!(
        reason(ended),
        (Code::Unavailable, "SHUTTING_DOWN".into()),
        "a consumer must not read the end of a stream as its completion"
    );
    stopping.await.unwrap().expect("a clean stop");
}
