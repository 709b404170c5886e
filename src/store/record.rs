//! The store's dispute record: one statement over index ranges of the seller's orders and
//! disputes in the window (registered, opened, ended, first responses) and of its open
//! disputes (README, "The store's record").

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
        // Each part is a range of one index; on Citus each runs on every shard and the
        // coordinator adds them up (the record is one of the reads that fan out).
        let row = sqlx::query!(
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
