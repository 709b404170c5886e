//! The store's dispute record: one statement over the seller's daily counts (at most one
//! row per day of the window, kept by triggers, migration 6) and two index ranges (the
//! seller's open disputes; the window's first responses).

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
        let row = sqlx::query!(
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
}
