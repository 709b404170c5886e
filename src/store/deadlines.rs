//! The deadline worker's scans. They only find candidates; each candidate is then locked
//! (`SKIP LOCKED`, so replicas share the work) and re-decided by the domain in its own
//! transaction, so a stale or duplicate candidate does nothing.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::{Cutoffs, DisputeId, PartyId};

impl Store {
    /// Open disputes whose deadline has passed, oldest change first.
    pub async fn due_disputes(
        &self,
        cutoffs: &Cutoffs,
        limit: i64,
    ) -> Result<Vec<DisputeId>, StoreError> {
        let ids = sqlx::query_scalar!(
            r#"SELECT dispute_id FROM disputes
               WHERE (state = 'AWAITING_SELLER' AND created_at <= $1)
                  OR (state = 'NEGOTIATING' AND created_at <= $2)
                  OR (state = 'AWAITING_RETURN_SHIPMENT' AND return_agreed_at <= $3)
                  OR (state = 'RETURN_IN_TRANSIT' AND return_shipped_at <= $4)
                  OR (state = 'AWAITING_REPLACEMENT_SHIPMENT' AND replacement_agreed_at <= $6)
                  OR (state = 'REPLACEMENT_IN_TRANSIT' AND replacement_shipped_at <= $7)
               ORDER BY updated_at
               LIMIT $5"#,
            cutoffs.awaiting_seller_opened_before,
            cutoffs.negotiating_opened_before,
            cutoffs.return_agreed_before,
            cutoffs.return_shipped_before,
            limit,
            cutoffs.replacement_agreed_before,
            cutoffs.replacement_shipped_before,
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "disputes"))
        .await?;
        Ok(ids.into_iter().map(DisputeId).collect())
    }

    /// Orders whose protection has ended with their funds held and no active dispute.
    pub async fn expired_orders(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<PartyId>, StoreError> {
        let ids = sqlx::query_scalar!(
            r#"SELECT order_id FROM orders o
               WHERE funds_state = 'HELD' AND protection_ends_at <= $1
                 AND NOT EXISTS (SELECT 1 FROM disputes d
                                 WHERE d.order_id = o.order_id AND d.state NOT IN ('CANCELLED', 'RESOLVED'))
               ORDER BY protection_ends_at
               LIMIT $2"#,
            now,
            limit,
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "orders")).await?;
        ids.iter()
            .map(|id| PartyId::parse(id).map_err(StoreError::Corrupt))
            .collect()
    }

    /// Forgets idempotency keys created before `before`; returns how many.
    pub async fn purge_idempotency_keys(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query!(
            r#"DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"#,
            before,
            limit,
        )
        .execute(self.pool())
        .instrument(statement("DELETE", "idempotency_keys"))
        .await?;
        Ok(done.rows_affected())
    }
}
