//! The store's dispute record: one statement over the seller's daily counts (a few slots per
//! day of the window) and two index ranges (the seller's open disputes; the window's first
//! responses). On one PostgreSQL triggers keep the counts at commit (migrations 6 and 12);
//! on Citus, where such a trigger would write a seller's row from every order's shard, the
//! relay adds each event it appends to its stream partition's slot, in the append's
//! transaction ([`fold`]; README, "The store's record").

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tracing::Instrument;

use super::{Store, StoreError, codec, statement};
use crate::domain::{ByOutcome, ByReason, Outcome, PartyId, Reason, SellerStats, StreamEvent};

impl Store {
    /// `seller_id`'s record from `window_start` (a UTC midnight) to `now`.
    pub async fn seller_stats(
        &self,
        seller_id: &PartyId,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SellerStats, StoreError> {
        let row = self.counted_by_day(seller_id, window_start).await?;
        Ok(SellerStats {
            seller_id: seller_id.clone(),
            window_start,
            window_end: now,
            orders_registered: row.orders,
            opened: ByReason {
                item_not_received: row.inr,
                not_as_described: row.nad,
                quality_issue: row.qi,
            },
            ended: ByOutcome {
                cancelled_by_buyer: row.cancelled,
                resolved_buyer_favour: row.buyer,
                resolved_partial: row.partial,
                resolved_seller_favour: row.seller,
            },
            open_now: row.open_now,
            first_responses: row.responses,
            median_first_response: row.median_us.map(Duration::microseconds),
        })
    }

    /// The counts from the daily rows.
    async fn counted_by_day(
        &self,
        seller_id: &PartyId,
        window_start: DateTime<Utc>,
    ) -> Result<Counts, StoreError> {
        let row = sqlx::query_as!(
            Counts,
            r#"WITH days AS (
                 SELECT COALESCE(sum(orders_registered), 0)::bigint AS orders,
                        COALESCE(sum(opened_item_not_received), 0)::bigint AS inr,
                        COALESCE(sum(opened_not_as_described), 0)::bigint AS nad,
                        COALESCE(sum(opened_quality_issue), 0)::bigint AS qi,
                        COALESCE(sum(ended_cancelled_by_buyer), 0)::bigint AS cancelled,
                        COALESCE(sum(ended_resolved_buyer_favour), 0)::bigint AS buyer,
                        COALESCE(sum(ended_resolved_partial), 0)::bigint AS partial,
                        COALESCE(sum(ended_resolved_seller_favour), 0)::bigint AS seller
                 FROM seller_daily_stats
                 WHERE seller_id = $1 AND day >= ($2::timestamptz AT TIME ZONE 'UTC')::date
               ), responses AS (
                 SELECT count(*) AS n,
                        (extract(epoch FROM percentile_disc(0.5) WITHIN GROUP
                           (ORDER BY seller_first_response_at - created_at)) * 1000000)::bigint AS median_us
                 FROM disputes
                 WHERE seller_id = $1 AND seller_first_response_at >= $2
               )
               SELECT d.orders AS "orders!", d.inr AS "inr!", d.nad AS "nad!", d.qi AS "qi!",
                      d.cancelled AS "cancelled!", d.buyer AS "buyer!", d.partial AS "partial!",
                      d.seller AS "seller!", r.n AS "responses!", r.median_us,
                      (SELECT count(*) FROM disputes
                       WHERE seller_id = $1 AND state NOT IN ('CANCELLED', 'RESOLVED')) AS "open_now!"
               FROM days d, responses r"#,
            seller_id.as_str(),
            window_start,
        )
        .fetch_one(self.pool())
        .instrument(statement("SELECT", "seller_daily_stats"))
        .await?;
        Ok(row)
    }
}

/// The record's counts, as the statement projects them.
struct Counts {
    orders: i64,
    inr: i64,
    nad: i64,
    qi: i64,
    cancelled: i64,
    buyer: i64,
    partial: i64,
    seller: i64,
    responses: i64,
    median_us: Option<i64>,
    open_now: i64,
}

/// What one event adds to its store's record on its day, in `seller_daily_stats`'s
/// columns.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    orders_registered: i64,
    opened: [i64; 3],
    ended: [i64; 4],
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.orders_registered += other.orders_registered;
        for (mine, theirs) in self.opened.iter_mut().zip(other.opened) {
            *mine += theirs;
        }
        for (mine, theirs) in self.ended.iter_mut().zip(other.ended) {
            *mine += theirs;
        }
    }
}

/// What `event` counts for in its seller's record, and on which UTC day: an order's
/// registration; a dispute's opening, by its reason; the change that ended a dispute (its
/// payload says `ended`), by its outcome. Nothing for any other event, nor for a dispute's
/// event without `ended` (written before migration 13, which counted it from the tables).
/// A payload that does not say what its kind must (which this service never writes)
/// counts nothing and is logged: the stream must not stop for the record.
pub(super) fn counted(event: &StreamEvent) -> Option<(&str, NaiveDate, Tally)> {
    let field = |name: &str| event.payload.get(name).and_then(serde_json::Value::as_str);
    let mut tally = Tally::default();
    let ended = event.payload.get("ended");
    let counted = match event.event_type.as_str() {
        "ORDER_REGISTERED" => {
            tally.orders_registered = 1;
            Some(())
        }
        _ if event.dispute_id.is_some() && ended.is_none() => return None,
        "DISPUTE_OPENED" => field("reason")
            .and_then(|reason| codec::parse_reason(reason).ok())
            .map(|reason| {
                let column = match reason {
                    Reason::ItemNotReceived => 0,
                    Reason::NotAsDescribed => 1,
                    Reason::QualityIssue => 2,
                };
                tally.opened[column] = 1;
            }),
        _ if ended == Some(&serde_json::Value::Bool(true)) => field("outcome")
            .and_then(|outcome| codec::parse_outcome(outcome).ok())
            .map(|outcome| {
                let column = match outcome {
                    Outcome::CancelledByBuyer => 0,
                    Outcome::ResolvedBuyerFavour => 1,
                    Outcome::ResolvedPartial => 2,
                    Outcome::ResolvedSellerFavour => 3,
                };
                tally.ended[column] = 1;
            }),
        _ => return None,
    };
    match (counted, field("seller_id")) {
        (Some(()), Some(seller_id)) => Some((seller_id, event.occurred_at.date_naive(), tally)),
        _ => {
            tracing::error!(
                event.id = %event.event_id,
                event.kind = %event.event_type,
                "an event's payload does not say what it counts for in the store's record; not counted"
            );
            None
        }
    }
}

/// Adds `events`, just appended to stream `partition`, to that partition's slot of their
/// stores' daily counts, in the append's transaction: on Citus the slot's rows are on the
/// partition's shard, so an event is counted exactly when it is appended, once. One
/// statement; nothing when none of them counts.
pub(super) async fn fold<'a>(
    conn: &mut PgConnection,
    partition: i16,
    events: impl IntoIterator<Item = &'a StreamEvent>,
) -> Result<(), StoreError> {
    let mut tallies: BTreeMap<(&str, NaiveDate), Tally> = BTreeMap::new();
    for (seller_id, day, tally) in events.into_iter().filter_map(counted) {
        *tallies.entry((seller_id, day)).or_default() += tally;
    }
    if tallies.is_empty() {
        return Ok(());
    }
    let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO seller_daily_stats AS s (slot, seller_id, day, orders_registered, \
         opened_item_not_received, opened_not_as_described, opened_quality_issue, \
         ended_cancelled_by_buyer, ended_resolved_buyer_favour, ended_resolved_partial, \
         ended_resolved_seller_favour) ",
    );
    insert.push_values(&tallies, |mut row, ((seller_id, day), tally)| {
        row.push_bind(partition)
            .push_bind(*seller_id)
            .push_bind(*day)
            .push_bind(tally.orders_registered);
        for count in tally.opened.iter().chain(&tally.ended) {
            row.push_bind(*count);
        }
    });
    insert.push(
        " ON CONFLICT (seller_id, day, slot) DO UPDATE SET \
         orders_registered = s.orders_registered + EXCLUDED.orders_registered, \
         opened_item_not_received = s.opened_item_not_received + EXCLUDED.opened_item_not_received, \
         opened_not_as_described = s.opened_not_as_described + EXCLUDED.opened_not_as_described, \
         opened_quality_issue = s.opened_quality_issue + EXCLUDED.opened_quality_issue, \
         ended_cancelled_by_buyer = s.ended_cancelled_by_buyer + EXCLUDED.ended_cancelled_by_buyer, \
         ended_resolved_buyer_favour = s.ended_resolved_buyer_favour + EXCLUDED.ended_resolved_buyer_favour, \
         ended_resolved_partial = s.ended_resolved_partial + EXCLUDED.ended_resolved_partial, \
         ended_resolved_seller_favour = s.ended_resolved_seller_favour + EXCLUDED.ended_resolved_seller_favour",
    );
    insert
        .build()
        .execute(conn)
        .instrument(statement("INSERT", "seller_daily_stats"))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::domain::{Actor, DisputeId, LogPosition, Role};

    fn event(event_type: &str, payload: serde_json::Value) -> StreamEvent {
        let of_dispute = !matches!(event_type, "ORDER_REGISTERED" | "PROTECTION_EXTENDED");
        StreamEvent {
            at: LogPosition {
                partition: 3,
                position: 1,
            },
            order_sequence: 1,
            event_id: uuid::Uuid::nil(),
            event_type: event_type.to_owned(),
            order_id: "o-1".to_owned(),
            dispute_id: of_dispute.then(|| DisputeId(uuid::Uuid::nil())),
            dispute_seq: of_dispute.then_some(1),
            actor: Actor {
                role: Role::Buyer,
                id: "b-1".to_owned(),
            },
            // Just before midnight UTC: the day is the UTC one.
            occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 59).unwrap(),
            payload,
            trace_id: None,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    #[test]
    fn a_registration_counts_one_order_for_its_seller_on_its_day() {
        let registered = event("ORDER_REGISTERED", json!({ "seller_id": "s-1" }));
        let tally = Tally {
            orders_registered: 1,
            ..Tally::default()
        };
        assert_eq!(counted(&registered), Some(("s-1", day(), tally)));
    }

    #[test]
    fn an_opening_counts_its_reason() {
        for (reason, column) in [
            ("ITEM_NOT_RECEIVED", 0),
            ("NOT_AS_DESCRIBED", 1),
            ("QUALITY_ISSUE", 2),
        ] {
            let opened = event(
                "DISPUTE_OPENED",
                json!({ "seller_id": "s-1", "reason": reason, "state": "AWAITING_SELLER",
                        "outcome": null, "ended": false }),
            );
            let mut tally = Tally::default();
            tally.opened[column] = 1;
            assert_eq!(counted(&opened), Some(("s-1", day(), tally)), "{reason}");
        }
    }

    #[test]
    fn the_change_that_ended_a_dispute_counts_its_outcome_and_no_other_change_counts() {
        for (outcome, column) in [
            ("CANCELLED_BY_BUYER", 0),
            ("RESOLVED_BUYER_FAVOUR", 1),
            ("RESOLVED_PARTIAL", 2),
            ("RESOLVED_SELLER_FAVOUR", 3),
        ] {
            let payload = |ended: bool| {
                json!({ "seller_id": "s-1", "reason": "QUALITY_ISSUE", "state": "RESOLVED",
                        "outcome": outcome, "ended": ended })
            };
            let mut tally = Tally::default();
            tally.ended[column] = 1;
            assert_eq!(
                counted(&event("FUNDS_RESOLVED", payload(true))),
                Some(("s-1", day(), tally)),
                "{outcome}"
            );
            // A note on the ended dispute: its outcome was counted when it ended.
            assert_eq!(counted(&event("INTERNAL_NOTE_ADDED", payload(false))), None);
        }
        for other in [
            "FUNDS_SETTLED",
            "PROTECTION_EXTENDED",
            "MESSAGE_POSTED",
            "REMEDY_PROPOSED",
        ] {
            let payload = json!({ "seller_id": "s-1", "reason": "QUALITY_ISSUE", "outcome": null });
            assert_eq!(counted(&event(other, payload)), None, "{other}");
        }
    }

    #[test]
    fn a_payload_that_does_not_say_what_it_counts_counts_nothing() {
        for (event_type, payload) in [
            ("ORDER_REGISTERED", json!({})),
            (
                "DISPUTE_OPENED",
                json!({ "seller_id": "s-1", "ended": false }),
            ),
            (
                "DISPUTE_OPENED",
                json!({ "seller_id": "s-1", "reason": "BORED", "ended": false }),
            ),
            (
                "DISPUTE_CANCELLED",
                json!({ "seller_id": "s-1", "ended": true }),
            ),
            (
                "DISPUTE_CANCELLED",
                json!({ "ended": true, "outcome": "CANCELLED_BY_BUYER" }),
            ),
        ] {
            assert_eq!(
                counted(&event(event_type, payload.clone())),
                None,
                "{payload}"
            );
        }
    }

    #[test]
    fn a_dispute_event_written_before_the_record_was_folded_counts_nothing() {
        // Migration 13 counted it from the tables.
        for (event_type, payload) in [
            (
                "DISPUTE_OPENED",
                json!({ "seller_id": "s-1", "state": "AWAITING_SELLER" }),
            ),
            (
                "DISPUTE_CANCELLED",
                json!({ "seller_id": "s-1", "state": "CANCELLED",
                                          "outcome": "CANCELLED_BY_BUYER" }),
            ),
        ] {
            assert_eq!(counted(&event(event_type, payload)), None, "{event_type}");
        }
    }

    #[test]
    fn tallies_add_column_by_column() {
        let mut sum = Tally {
            orders_registered: 2,
            opened: [1, 0, 3],
            ended: [0, 1, 0, 2],
        };
        sum += Tally {
            orders_registered: 1,
            opened: [0, 5, 1],
            ended: [4, 0, 1, 0],
        };
        assert_eq!(
            sum,
            Tally {
                orders_registered: 3,
                opened: [1, 5, 4],
                ended: [4, 1, 1, 2],
            }
        );
    }
}
