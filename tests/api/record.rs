//! The store's dispute record (README, "The store's record"): GetSellerDisputeStats against
//! a brute-force recount of a scripted history, and who may read it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use dispute_service::{
    domain::Role,
    grpc::pb::{self, Remedy, ResolveOutcome},
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

/// What the script saw happen to one dispute, from the answers it got.
#[derive(Debug, Clone)]
struct Seen {
    seller: &'static str,
    reason: i32,
    opened: DateTime<Utc>,
    first_response: Option<DateTime<Utc>>,
    ended: Option<(DateTime<Utc>, i32)>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Expected {
    pub(crate) orders: i64,
    pub(crate) by_reason: [i64; 3],
    pub(crate) outcomes: [i64; 4],
    pub(crate) open: i64,
    pub(crate) responses: i64,
    pub(crate) median: Option<Duration>,
}

/// The record by its definition: registrations, openings, endings and first responses
/// at or after the start of the window's first UTC day; open disputes now; the lower
/// median of the response times.
fn recount(
    seller: &str,
    days: i64,
    now: DateTime<Utc>,
    orders: &[(&str, DateTime<Utc>)],
    disputes: &[Seen],
) -> Expected {
    let start = (now.date_naive() - Duration::days(days - 1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    let mine = || disputes.iter().filter(|d| d.seller == seller);
    let reason = |r: pb::DisputeReason| {
        mine()
            .filter(|d| d.opened >= start && d.reason == r as i32)
            .count() as i64
    };
    let outcome = |o: pb::DisputeOutcome| {
        mine()
            .filter(|d| {
                d.ended
                    .is_some_and(|(at, got)| at >= start && got == o as i32)
            })
            .count() as i64
    };
    let mut times: Vec<Duration> = mine()
        .filter_map(|d| {
            d.first_response
                .filter(|at| *at >= start)
                .map(|at| at - d.opened)
        })
        .collect();
    times.sort();
    Expected {
        orders: orders
            .iter()
            .filter(|(s, at)| *s == seller && *at >= start)
            .count() as i64,
        by_reason: [
            reason(pb::DisputeReason::ItemNotReceived),
            reason(pb::DisputeReason::NotAsDescribed),
            reason(pb::DisputeReason::QualityIssue),
        ],
        outcomes: [
            outcome(pb::DisputeOutcome::CancelledByBuyer),
            outcome(pb::DisputeOutcome::ResolvedBuyerFavour),
            outcome(pb::DisputeOutcome::ResolvedPartial),
            outcome(pb::DisputeOutcome::ResolvedSellerFavour),
        ],
        open: mine().filter(|d| d.ended.is_none()).count() as i64,
        responses: times.len() as i64,
        median: (!times.is_empty()).then(|| times[times.len().div_ceil(2) - 1]),
    }
}

/// The record recounted from the orders and disputes rows themselves, by the same
/// definition: what any counters the store keeps must add up to.
pub(crate) async fn recount_from_the_tables(
    pool: &PgPool,
    seller: &str,
    days: i64,
    now: DateTime<Utc>,
) -> Expected {
    let start = (now.date_naive() - Duration::days(days - 1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    let count = |sql: &'static str| {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(seller)
            .bind(start)
            .fetch_one(pool)
    };
    let by_reason =
        "SELECT count(*) FROM disputes WHERE seller_id = $1 AND created_at >= $2 AND reason = ";
    let by_outcome = "SELECT count(*) FROM disputes WHERE seller_id = $1 AND outcome IS NOT NULL AND updated_at >= $2 AND outcome = ";
    let mut reasons = [0; 3];
    for (n, reason) in ["ITEM_NOT_RECEIVED", "NOT_AS_DESCRIBED", "QUALITY_ISSUE"]
        .iter()
        .enumerate()
    {
        reasons[n] = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{by_reason}'{reason}'")))
            .bind(seller)
            .bind(start)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    let mut outcomes = [0; 4];
    for (n, outcome) in [
        "CANCELLED_BY_BUYER",
        "RESOLVED_BUYER_FAVOUR",
        "RESOLVED_PARTIAL",
        "RESOLVED_SELLER_FAVOUR",
    ]
    .iter()
    .enumerate()
    {
        outcomes[n] = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{by_outcome}'{outcome}'")))
            .bind(seller)
            .bind(start)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    let mut times: Vec<Duration> = sqlx::query_scalar::<_, i64>(
        "SELECT (extract(epoch FROM seller_first_response_at - created_at) * 1000000)::bigint
         FROM disputes WHERE seller_id = $1 AND seller_first_response_at >= $2",
    )
    .bind(seller)
    .bind(start)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(Duration::microseconds)
    .collect();
    times.sort();
    Expected {
        orders: count("SELECT count(*) FROM orders WHERE seller_id = $1 AND created_at >= $2")
            .await
            .unwrap(),
        by_reason: reasons,
        outcomes,
        open: count(
            "SELECT count(*) FROM disputes WHERE seller_id = $1 AND state NOT IN ('CANCELLED', 'RESOLVED')
               AND $2 IS NOT NULL",
        )
        .await
        .unwrap(),
        responses: times.len() as i64,
        median: (!times.is_empty()).then(|| times[times.len().div_ceil(2) - 1]),
    }
}

/// The record as GetSellerDisputeStats answers it.
pub(crate) fn answered(stats: &pb::GetSellerDisputeStatsResponse) -> Expected {
    let r = stats.disputes_by_reason.unwrap();
    let o = stats.outcomes.unwrap();
    Expected {
        orders: stats.orders_registered,
        by_reason: [r.item_not_received, r.not_as_described, r.quality_issue],
        outcomes: [
            o.cancelled_by_buyer,
            o.resolved_buyer_favour,
            o.resolved_partial,
            o.resolved_seller_favour,
        ],
        open: stats.open_disputes,
        responses: stats.first_responses,
        median: stats
            .median_first_response
            .map(|d| Duration::seconds(d.seconds) + Duration::nanoseconds(d.nanos.into())),
    }
}

fn window(days: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: days * 86_400,
        nanos: 0,
    })
}

#[sqlx::test]
async fn the_record_matches_a_recount_of_a_scripted_history(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let sellers = ["seller-1", "seller-2"];
    let mut clients = HashMap::new();
    for seller in sellers {
        clients.insert(seller, app.client(Role::Seller, seller).await);
    }
    let (mut service, mut buyer, mut agent) =
        (app.service().await, app.buyer().await, app.agent().await);
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15);
    let mut orders: Vec<(&str, DateTime<Utc>)> = Vec::new();
    let mut disputes: HashMap<String, Seen> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let reasons = [
        pb::DisputeReason::ItemNotReceived,
        pb::DisputeReason::NotAsDescribed,
        pb::DisputeReason::QualityIssue,
    ];
    for n in 0..300 {
        app.clock
            .advance(Duration::minutes(dice.roll(16 * 60) as i64));
        let now = app.now();
        let seller = sellers[usize::from(dice.roll(5) == 0)];
        let order_id = format!("rec-{n}");
        let mut request = register_request(&order_id, now + Duration::days(30));
        request.seller_id = seller.into();
        service.register_order(request).await.unwrap();
        orders.push((seller, now));
        if dice.roll(100) < 40 {
            let reason = reasons[dice.roll(3) as usize];
            let mut open = open_request(&order_id, Remedy::FullRefund);
            open.reason = reason as i32;
            let dispute = buyer
                .open_dispute(open)
                .await
                .unwrap()
                .into_inner()
                .dispute
                .unwrap();
            disputes.insert(
                dispute.dispute_id.clone(),
                Seen {
                    seller,
                    reason: reason as i32,
                    opened: now,
                    first_response: None,
                    ended: None,
                },
            );
            ids.push(dispute.dispute_id);
        }
        // Something happens to an open dispute, a little later.
        let open: Vec<&String> = ids
            .iter()
            .filter(|id| disputes[*id].ended.is_none())
            .collect();
        if open.is_empty() || dice.roll(100) >= 60 {
            continue;
        }
        let id = open[dice.roll(open.len() as u64) as usize].clone();
        app.clock
            .advance(Duration::minutes(1 + dice.roll(48 * 60) as i64));
        let at = app.now();
        let seen = disputes.get_mut(&id).unwrap();
        let seller_client = clients.get_mut(seen.seller).unwrap();
        let (by_seller, result) = match dice.roll(7) {
            0 => (
                true,
                seller_client
                    .post_dispute_message(message(&id, "looking into it"))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            1 => (
                true,
                seller_client
                    .respond_to_dispute(accept(&id))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            2 => (
                true,
                seller_client
                    .respond_to_dispute(propose(&id, Remedy::PartialRefund, Some(5_000)))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            3 => (
                false,
                buyer
                    .cancel_dispute(cancel_request(&id))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            4 => (
                false,
                agent
                    .resolve_funds(resolve_request(
                        &id,
                        ResolveOutcome::RefundPartial,
                        Some(3_000),
                    ))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            5 => (
                false,
                agent
                    .resolve_funds(resolve_request(&id, ResolveOutcome::ReleaseToSeller, None))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
            _ => (
                false,
                buyer
                    .post_dispute_message(message(&id, "any news?"))
                    .await
                    .map(|r| r.into_inner().dispute),
            ),
        };
        match result {
            Ok(dispute) => {
                let dispute = dispute.unwrap();
                if by_seller && seen.first_response.is_none() {
                    seen.first_response = Some(at);
                }
                if dispute.outcome != pb::DisputeOutcome::Unspecified as i32 {
                    seen.ended = Some((at, dispute.outcome));
                }
            }
            // Accepting or proposing once negotiating is refused: nothing happened.
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    let disputes: Vec<Seen> = disputes.into_values().collect();
    relayed(&pool).await;
    let now = app.now();
    assert!(
        now - orders[0].1 > Duration::days(90),
        "the history is longer than the default window, so the window cuts it"
    );
    let responded = disputes
        .iter()
        .filter(|d| d.first_response.is_some())
        .count();
    let ended = disputes.iter().filter(|d| d.ended.is_some()).count();
    assert!(
        disputes.len() > 80 && responded > 20 && ended > 20,
        "the script reaches every count: {} disputes, {responded} answered, {ended} ended",
        disputes.len()
    );
    for seller in sellers {
        for (days, window) in [
            (90, None),
            (90, window(90)),
            (7, window(7)),
            (1, window(1)),
            (366, window(366)),
        ] {
            let expected = recount(seller, days, now, &orders, &disputes);
            let stats = agent
                .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
                    seller_id: seller.into(),
                    window,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answered(&stats), expected, "{seller}, {days} days");
            assert_eq!(
                recount_from_the_tables(&pool, seller, days, now).await,
                expected,
                "{seller}, {days} days: the rows themselves"
            );
            let rate = if expected.orders == 0 {
                0.0
            } else {
                expected.by_reason.iter().sum::<i64>() as f64 / expected.orders as f64
            };
            assert_eq!(stats.dispute_rate, rate);
            assert_eq!(
                stats.disputes_opened,
                expected.by_reason.iter().sum::<i64>()
            );
        }
    }
    // A seller reads its own record, the same as an agent does.
    let own = clients
        .get_mut("seller-1")
        .unwrap()
        .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
            seller_id: "seller-1".into(),
            window: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answered(&own),
        recount("seller-1", 90, now, &orders, &disputes)
    );
}

#[sqlx::test]
async fn a_seller_reads_only_its_own_record_and_windows_are_whole_days(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut seller = app.seller().await;
    assert_eq!(
        reason(
            seller
                .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
                    seller_id: "seller-2".into(),
                    window: None,
                })
                .await
        ),
        (Code::PermissionDenied, "NOT_YOUR_STORE".into())
    );
    for mut client in [app.buyer().await, app.service().await] {
        assert_eq!(
            reason(
                client
                    .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
                        seller_id: "seller-1".into(),
                        window: None,
                    })
                    .await
            ),
            (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
        );
    }
    for bad in [
        Some(prost_types::Duration {
            seconds: 86_400,
            nanos: 1,
        }),
        Some(prost_types::Duration {
            seconds: 3_600,
            nanos: 0,
        }),
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        }),
        Some(prost_types::Duration {
            seconds: -86_400,
            nanos: 0,
        }),
        window(367),
    ] {
        let mut fields = violated_fields(
            seller
                .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
                    seller_id: "bad id!".into(),
                    window: bad,
                })
                .await,
        );
        fields.sort();
        assert_eq!(fields, ["seller_id", "window"]);
    }
    // A store with no orders has an empty record, not an error.
    let empty = seller
        .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
            seller_id: "seller-1".into(),
            window: window(30),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            empty.orders_registered,
            empty.dispute_rate,
            empty.median_first_response
        ),
        (0, 0.0, None)
    );
    let start = empty.window_start.unwrap();
    let start = from_timestamp(&start);
    assert_eq!(
        start,
        (app.now().date_naive() - Duration::days(29))
            .and_time(NaiveTime::MIN)
            .and_utc()
    );
}

/// Many writers for one store at once: every registration, opening and ending is counted
/// exactly once (on one node each in its order's slot, upserted under the slot's row lock;
/// on Citus by the relay as it appends the event).
#[sqlx::test]
async fn concurrent_writes_for_one_store_are_each_counted_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (service, buyer) = (app.service().await, app.buyer().await);
    let writes = (0..40).map(|n| {
        let (mut service, mut buyer) = (service.clone(), buyer.clone());
        let end = app.now() + Duration::days(30);
        async move {
            let order_id = format!("busy-{n}");
            service
                .register_order(register_request(&order_id, end))
                .await
                .unwrap();
            let dispute = buyer
                .open_dispute(open_request(&order_id, Remedy::FullRefund))
                .await
                .unwrap()
                .into_inner()
                .dispute
                .unwrap();
            if n % 2 == 0 {
                buyer
                    .cancel_dispute(cancel_request(&dispute.dispute_id))
                    .await
                    .unwrap();
            }
        }
    });
    futures::future::join_all(writes).await;
    relayed(&pool).await;
    let stats = app
        .agent()
        .await
        .get_seller_dispute_stats(pb::GetSellerDisputeStatsRequest {
            seller_id: "seller-1".into(),
            window: window(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stats.orders_registered,
            stats.disputes_opened,
            stats.outcomes.unwrap().cancelled_by_buyer,
            stats.open_disputes
        ),
        (40, 40, 20, 20)
    );
}
