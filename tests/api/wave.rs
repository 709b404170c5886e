//! The protection-end release wave (README, "Deadlines"; RELIABILITY.md, "The release
//! wave"): a sale day's orders end their protection together, weeks later. Two waves of
//! `FAULTS_WAVE_ORDERS` orders each, their protection ending within one minute; the first
//! drained by one replica's worker, the second by two, each worker as a replica runs it
//! (a thread, a two-thread runtime and a pool of its own). Every
//! order must be released exactly once: its funds released to the seller, one settlement
//! in the ledger, one FUNDS_SETTLED event. Eight poisoned orders (every update of them
//! fails) end their protection just before the second wave, at the heads of their
//! partitions: they are set aside and hold up nothing. The figures (registration rate, time to drain,
//! rate per replica) and the scans' plans at that size go to the test output;
//! `scripts/faults` (step `wave`) runs it at 200,000 orders on both databases.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, stream};
use sqlx::PgPool;

use crate::{faults::knob, helpers::*, poisoned::poison};

/// Poisoned orders ahead of the second wave.
const POISONED: u64 = 8;

/// Registers `count` orders named `<prefix>-<n>` through RegisterOrder at concurrency 16,
/// their protection ending spread over the minute from `ends`; how long it took.
async fn register(
    app: &TestApp,
    prefix: &str,
    count: u64,
    ends: DateTime<Utc>,
) -> std::time::Duration {
    let service = app.service().await;
    let started = Instant::now();
    stream::iter(0..count)
        .map(|n| {
            let mut service = service.clone();
            let request = register_request(&format!("{prefix}-{n}"), within_the_minute(ends, n));
            async move { service.register_order(request).await.expect("registering") }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

/// The `n`th order's protection end: spread over the minute from `ends`.
fn within_the_minute(ends: DateTime<Utc>, n: u64) -> DateTime<Utc> {
    ends + Duration::milliseconds((n * 7_919 % 60_000) as i64)
}

/// Adds orders `from..to` of the wave as RegisterOrder writes them (the order row with no
/// dispute, funds held), in one statement: at 200,000 orders, registering every one
/// through the API would take the run's whole time; the rate is measured on those that are.
async fn seed(
    pool: &PgPool,
    prefix: &str,
    from: u64,
    to: u64,
    ends: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    if from >= to {
        return;
    }
    sqlx::query(
        "INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
                             protection_ends_at, registered_protection_ends_at, created_at, updated_at)
         SELECT $1 || '-' || n, 'buyer-1', 'seller-1', 'USD', 10000,
                $4 + make_interval(secs => (n * 7919 % 60000) / 1000.0),
                $4 + make_interval(secs => (n * 7919 % 60000) / 1000.0), $5, $5
         FROM generate_series($2::bigint, $3::bigint - 1) AS n",
    )
    .bind(prefix)
    .bind(from as i64)
    .bind(to as i64)
    .bind(ends)
    .bind(now)
    .execute(pool)
    .await
    .expect("seeding the wave");
}

/// How many of the wave's orders: still held, settled in the ledger, with a FUNDS_SETTLED
/// event, and with more than one.
async fn outcome(pool: &PgPool, prefix: &str) -> (i64, i64, i64, i64) {
    let like = format!("{prefix}-%");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE order_id LIKE $1 AND funds_state = 'HELD'",
    )
    .bind(&like)
    .fetch_one(pool)
    .await
    .unwrap();
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM settlements WHERE order_id LIKE $1 AND release_minor = amount_minor",
    )
    .bind(&like)
    .fetch_one(pool)
    .await
    .unwrap();
    let (settled, twice): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE n > 1) FROM
           (SELECT order_id, count(*) AS n FROM {STREAM_ROWS}
            WHERE event_type = 'FUNDS_SETTLED' AND order_id LIKE $1 GROUP BY order_id) AS per_order"
    )))
    .bind(&like)
    .fetch_one(pool)
    .await
    .unwrap();
    (held, ledger, settled, twice)
}

#[sqlx::test]
async fn a_release_wave_is_drained_exactly_once_by_one_replica_and_by_two(pool: PgPool) {
    let orders = knob("WAVE_ORDERS", 600);
    let through_api = knob("WAVE_REGISTERED", orders).min(orders);
    // The clock moves weeks ahead: the stream keeps its events, so each order's can be
    // counted.
    // FAULTS_WAVE_CONCURRENCY: each replica's DISPUTE_WORKER_CONCURRENCY (its default
    // unless given).
    let concurrency = std::env::var("FAULTS_WAVE_CONCURRENCY").ok();
    let mut flags = vec!["--outbox-retention", "3650days"];
    if let Some(concurrency) = &concurrency {
        flags.extend(["--worker-concurrency", concurrency.as_str()]);
    }
    let app = spawn_app_with(pool.clone(), &flags).await;
    let start = app.now();
    let database = if on_citus(&pool).await {
        "Citus"
    } else {
        "one PostgreSQL"
    };
    let waves = [("wave-1", 1usize), ("wave-2", 2usize)];
    let ends = |wave: usize| start + Duration::days(30 + wave as i64);

    let mut took = std::time::Duration::ZERO;
    for (wave, (prefix, _)) in waves.iter().enumerate() {
        took += register(&app, prefix, through_api, ends(wave)).await;
        seed(&pool, prefix, through_api, orders, ends(wave), app.now()).await;
    }
    let registration_rate = (2 * through_api) as f64 / took.as_secs_f64();
    println!(
        "figure: {database}: {} orders registered through RegisterOrder at concurrency 16 in {:.1} s: {registration_rate:.0} orders/s",
        2 * through_api,
        took.as_secs_f64()
    );
    register(&app, "poisoned", POISONED, ends(1) - Duration::seconds(61)).await;
    poison(&pool, "orders", "poisoned-").await;
    for (wave, (prefix, replicas)) in waves.into_iter().enumerate() {
        // Each wave starts on a vacuumed database, as autovacuum leaves it some time after
        // the previous wave's updates: the second is not measured against the cleanup of
        // the first.
        sqlx::query("VACUUM (ANALYZE) orders, settlements, outbox, event_log")
            .execute(&pool)
            .await
            .unwrap();
        // Every order of this wave is due; none of the next.
        let due = ends(wave) + Duration::seconds(61);
        app.clock.advance(due - app.now());
        if wave == 0 {
            let plan = app.worker().explain_scans(0).await.unwrap().join("\n");
            println!(
                "The scans of one partition, {orders} orders due and {orders} more held:\n{plan}"
            );
            assert!(
                plan.contains("orders_held_by_partition") && !plan.contains("Seq Scan on orders"),
                "the protection-end scan is a range of its index:\n{plan}"
            );
        }
        let started = Instant::now();
        let passes: Vec<_> =
            futures::future::join_all((0..replicas).map(|_| app.replica_pass(16))).await;
        let elapsed = started.elapsed().as_secs_f64();
        let released: Vec<usize> = passes
            .iter()
            .map(|(pass, _)| pass.orders_released)
            .collect();
        let set_aside: usize = passes.iter().map(|(pass, _)| pass.set_aside).sum();
        assert_eq!(
            set_aside,
            if wave == 0 { 0 } else { POISONED as usize },
            "{prefix}: the poisoned orders, and only they, are set aside"
        );
        // The relay moves the events into the log meanwhile; STREAM_ROWS reads both.
        let (held, ledger, settled, twice) = outcome(&pool, prefix).await;
        let orders = orders as i64;
        assert_eq!(held, 0, "{prefix}: every order released");
        assert_eq!(
            ledger, orders,
            "{prefix}: one settlement per order, to the seller"
        );
        assert_eq!(settled, orders, "{prefix}: a FUNDS_SETTLED event per order");
        assert_eq!(twice, 0, "{prefix}: no order settled twice");
        assert_eq!(
            released.iter().sum::<usize>() as i64,
            orders,
            "{prefix}: the workers released each order once between them"
        );
        let per_replica: Vec<String> = released
            .iter()
            .map(|n| format!("{n} ({:.0}/s)", *n as f64 / elapsed))
            .collect();
        println!(
            "figure: {database}, {replicas} replica(s) of {} tasks: {orders} orders whose protection ended within one minute{} drained in {elapsed:.1} s: {:.0} orders/s ({:.2}x the registration rate); per replica {}",
            app.config.worker.worker_concurrency,
            if set_aside > 0 {
                format!(", {set_aside} poisoned ones set aside,")
            } else {
                String::new()
            },
            orders as f64 / elapsed,
            orders as f64 / elapsed / registration_rate,
            per_replica.join(", ")
        );
    }
}
