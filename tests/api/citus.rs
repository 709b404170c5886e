//! On a Citus cluster (README, "Running on Citus"): every command's transaction runs on its
//! order's shard alone. These tests need the cluster `scripts/citus start` makes; `.ci/run`
//! runs them against it (`--include-ignored`), and they are reported as ignored on plain
//! PostgreSQL, where there is nothing to distribute.

use std::future::Future;

use dispute_service::domain::Role;
use dispute_service::grpc::pb::{self, Remedy, ResolveOutcome};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::helpers::*;

/// The app, on connections that turn any statement Citus would run as more than one task
/// (on several shards) into an error: a command that needed one would fail. Its relay is
/// off: the relay's read of the outbox spans shards (as the stream's reads do), and its
/// passes would run between the commands this file counts.
async fn single_task_app(pool: &PgPool) -> TestApp {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("citus.multi_task_query_log_level", "error")]);
    let strict = PgPoolOptions::new().connect_with(options).await.unwrap();
    spawn_app_with(strict, &["--relay-enabled", "false"]).await
}

/// Counts of what Citus did in this database: statements run on more than one shard, and
/// transactions committed in two phases (`pg_dist_transaction`: one row per node that
/// prepared).
async fn citus_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT query_execution_multi_shard FROM citus_stat_counters(
                   (SELECT oid FROM pg_database WHERE datname = current_database()))),
                (SELECT count(*) FROM pg_dist_transaction)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs `command`, and asserts that no statement ran on several shards and that its
/// transaction committed without two-phase commit.
async fn on_one_shard<T, F: Future<Output = T>>(pool: &PgPool, name: &str, command: F) -> T {
    let before = citus_counts(pool).await;
    let done = command.await;
    let after = citus_counts(pool).await;
    assert_eq!(
        after.0, before.0,
        "{name}: a statement ran on several shards"
    );
    assert_eq!(
        after.1, before.1,
        "{name}: nodes prepared a two-phase commit"
    );
    done
}

#[sqlx::test]
#[ignore = "needs a Citus cluster (scripts/citus start); .ci/run runs it there"]
async fn every_command_runs_on_its_orders_shard_without_two_phase_commit(pool: PgPool) {
    // Citus's own recovery deletes pg_dist_transaction rows; the cluster of scripts/citus
    // leaves them for this count. And statement counters must be on.
    let interval: String = sqlx::query_scalar("SHOW citus.recover_2pc_interval")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(interval, "-1", "a cluster from scripts/citus start");
    sqlx::query("SELECT citus_stat_counters_reset()")
        .execute(&pool)
        .await
        .unwrap();
    let app = single_task_app(&pool).await;
    let (mut service, mut buyer, mut seller, mut agent) = (
        app.service().await,
        app.buyer().await,
        app.seller().await,
        app.agent().await,
    );
    let now = app.now();
    for order in ["order-1", "order-2", "order-3"] {
        let request = register_request(order, now + chrono::Duration::days(30));
        on_one_shard(
            &pool,
            "RegisterOrder",
            service.register_order(request.clone()),
        )
        .await
        .unwrap();
        on_one_shard(
            &pool,
            "RegisterOrder again",
            service.register_order(request),
        )
        .await
        .unwrap();
    }
    let extended = extend("order-1", now + chrono::Duration::days(40));
    on_one_shard(
        &pool,
        "ExtendProtection",
        seller.extend_protection(extended),
    )
    .await
    .unwrap();

    // Order 1: a return, shipped and received.
    let opened = open_request("order-1", Remedy::ReturnAndRefund);
    let d1 = on_one_shard(&pool, "OpenDispute", buyer.open_dispute(opened.clone()))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap()
        .dispute_id;
    on_one_shard(&pool, "OpenDispute replayed", buyer.open_dispute(opened))
        .await
        .unwrap();
    on_one_shard(
        &pool,
        "PostDisputeMessage",
        buyer.post_dispute_message(message(&d1, "hello")),
    )
    .await
    .unwrap();
    let note = pb::AddInternalNoteRequest {
        dispute_id: d1.clone(),
        text: "looks genuine".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    on_one_shard(&pool, "AddInternalNote", agent.add_internal_note(note))
        .await
        .unwrap();
    on_one_shard(
        &pool,
        "RespondToDispute",
        seller.respond_to_dispute(accept(&d1)),
    )
    .await
    .unwrap();
    on_one_shard(
        &pool,
        "SubmitReturnShipment",
        buyer.submit_return_shipment(ship(&d1)),
    )
    .await
    .unwrap();
    on_one_shard(
        &pool,
        "ConfirmReturnReceived",
        seller.confirm_return_received(confirm(&d1)),
    )
    .await
    .unwrap();

    // Order 2: a counter-proposal, accepted.
    let d2 = app.open("order-2", Remedy::FullRefund).await.dispute_id;
    let counter = propose(&d2, Remedy::PartialRefund, Some(4000));
    on_one_shard(
        &pool,
        "RespondToDispute (propose)",
        seller.respond_to_dispute(counter),
    )
    .await
    .unwrap();
    on_one_shard(
        &pool,
        "AcceptProposal",
        buyer.accept_proposal(accept_proposal(&d2)),
    )
    .await
    .unwrap();

    // Order 3: escalated and resolved by an agent; then a cancelled second dispute is
    // refused (the order is settled) on the same shard.
    let d3 = app.open("order-3", Remedy::FullRefund).await.dispute_id;
    seller
        .respond_to_dispute(propose(&d3, Remedy::PartialRefund, Some(1000)))
        .await
        .unwrap();
    on_one_shard(
        &pool,
        "EscalateDispute",
        buyer.escalate_dispute(escalate(&d3)),
    )
    .await
    .unwrap();
    let ruling = resolve_request(&d3, ResolveOutcome::ReleaseToSeller, None);
    on_one_shard(&pool, "ResolveFunds", agent.resolve_funds(ruling))
        .await
        .unwrap();
    let refused = on_one_shard(
        &pool,
        "CancelDispute (refused)",
        buyer.cancel_dispute(cancel_request(&d3)),
    )
    .await;
    assert_eq!(reason(refused).1, "DISPUTE_CLOSED");

    // A fourth order: opened and cancelled by the buyer.
    app.register("order-4").await;
    let d4 = app.open("order-4", Remedy::FullRefund).await.dispute_id;
    on_one_shard(
        &pool,
        "CancelDispute",
        buyer.cancel_dispute(cancel_request(&d4)),
    )
    .await
    .unwrap();

    // Someone else's dispute is as missing as one that never was. (An id the directory
    // does not hold is looked for among the disputes, on every shard: that lookup runs
    // before any transaction, on an app whose connections allow it.)
    let mut stranger = app.client(Role::Buyer, "buyer-9").await;
    let theirs = on_one_shard(
        &pool,
        "CancelDispute (stranger)",
        stranger.cancel_dispute(cancel_request(&d4)),
    )
    .await;
    let lenient = spawn_app(pool.clone()).await;
    let missing = lenient
        .client(Role::Buyer, "buyer-9")
        .await
        .cancel_dispute(cancel_request(&uuid::Uuid::now_v7().to_string()))
        .await;
    assert_eq!(reason(theirs), reason(missing));
}

/// A live shard move (`citus_move_shard_placement`, logical replication) of the shard group
/// holding an order the writers are writing, to the other worker, while eight writers and a
/// consumer run: the stream still delivers exactly the committed events, each order's in
/// order. The relay reads the outbox through the coordinator, which follows the move.
#[sqlx::test]
#[ignore = "needs a Citus cluster (scripts/citus start); .ci/run runs it there"]
async fn a_shard_moved_live_under_writers_and_a_consumer_loses_and_repeats_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let moving = async {
        // Once the writers have written: the shard of their first order, and its worker.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let (shard, from_host, from_port): (i64, String, i32) = sqlx::query_as(
            "SELECT shardid, nodename, nodeport FROM citus_shards
             WHERE shardid = get_shard_id_for_distribution_column('orders', 'w0-0')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let (to_host, to_port): (String, i32) = sqlx::query_as(
            "SELECT nodename, nodeport FROM pg_dist_node
             WHERE shouldhaveshards AND noderole = 'primary' AND nodeport <> $1 LIMIT 1",
        )
        .bind(from_port)
        .fetch_one(&pool)
        .await
        .unwrap();
        sqlx::query(
            "SELECT citus_move_shard_placement($1, $2, $3, $4, $5, shard_transfer_mode => 'force_logical')",
        )
        .bind(shard)
        .bind(&from_host)
        .bind(from_port)
        .bind(&to_host)
        .bind(to_port)
        .execute(&pool)
        .await
        .unwrap();
        let now_on: i32 =
            sqlx::query_scalar("SELECT nodeport FROM citus_shards WHERE shardid = $1")
                .bind(shard)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(now_on, to_port, "the shard moved");
        println!(
            "figure: citus: moved shard {shard} (orders and every table co-located with it) from :{from_port} to :{to_port} under load"
        );
    };
    let (expected, received) =
        crate::racing::write_and_consume(&app, 8, std::time::Duration::from_secs(6), None, moving)
            .await;
    crate::racing::assert_exactly_the_committed_events(&expected, &received);
}
