//! The store's dispute record: one statement over the seller's daily counts (at most one
//! row per day of the window, kept by triggers, migration 6) and two index ranges (the
//! seller's open disputes; the window's first responses). On Citus, where a counter row
//! per seller would be written from every order's shard, the counts come from the orders
//! and disputes themselves, on every shard (README, "The store's record").

use chrono::{DateTime, Duration, Utc};
use tracing::Instrument;

use super::{Store, StoreError, statement};
use crate::domain::{ByOutcome, ByReason, PartyId, SellerStats};

impl Store {
    /// `seller_id`'s record from `window_start` (a UTC midnight) to `now`.
    pub async fn seller_stats(
        &self,
        seller_id: &PartyId,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SellerStats, StoreError> {
        let row = if self.distributed().await? {
            self.counted_from_the_tables(seller_id, window_start)
                .await?
        } else {
            self.counted_by_day(seller_id, window_start).await?
        };
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

    /// The counts from the daily rows (plain PostgreSQL).
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

    /// The counts from the orders and disputes themselves (Citus): index ranges of the
    /// store's rows in the window, on every shard, added up by the coordinator.
    async fn counted_from_the_tables(
        &self,
        seller_id: &PartyId,
        window_start: DateTime<Utc>,
    ) -> Result<Counts, StoreError> {
        let row = sqlx::query_as!(
            Counts,
            r#"WITH opened AS (
                 SELECT count(*) FILTER (WHERE reason = 'ITEM_NOT_RECEIVED') AS inr,
                        count(*) FILTER (WHERE reason = 'NOT_AS_DESCRIBED') AS nad,
                        count(*) FILTER (WHERE reason = 'QUALITY_ISSUE') AS qi
                 FROM disputes WHERE seller_id = $1 AND created_at >= $2
               ), ended AS (
                 SELECT count(*) FILTER (WHERE outcome = 'CANCELLED_BY_BUYER') AS cancelled,
                        count(*) FILTER (WHERE outcome = 'RESOLVED_BUYER_FAVOUR') AS buyer,
                        count(*) FILTER (WHERE outcome = 'RESOLVED_PARTIAL') AS partial,
                        count(*) FILTER (WHERE outcome = 'RESOLVED_SELLER_FAVOUR') AS seller
                 FROM disputes WHERE seller_id = $1 AND outcome IS NOT NULL AND updated_at >= $2
               ), times AS MATERIALIZED (
                 SELECT seller_first_response_at - created_at AS took
                 FROM disputes
                 WHERE seller_id = $1 AND seller_first_response_at >= $2
               ), responses AS (
                 SELECT count(*) AS n,
                        (extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY took))
                         * 1000000)::bigint AS median_us
                 FROM times
               )
               SELECT (SELECT count(*) FROM orders WHERE seller_id = $1 AND created_at >= $2) AS "orders!",
                      o.inr AS "inr!", o.nad AS "nad!", o.qi AS "qi!",
                      e.cancelled AS "cancelled!", e.buyer AS "buyer!", e.partial AS "partial!",
                      e.seller AS "seller!", r.n AS "responses!", r.median_us,
                      (SELECT count(*) FROM disputes
                       WHERE seller_id = $1 AND state NOT IN ('CANCELLED', 'RESOLVED')) AS "open_now!"
               FROM opened o, ended e, responses r"#,
            seller_id.as_str(),
            window_start,
        )
        .fetch_one(self.pool())
        .instrument(statement("SELECT", "disputes"))
        .await?;
        Ok(row)
    }
}

/// The record's counts, as both statements project them.
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
