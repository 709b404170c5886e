//! Disputes: reads, keyset pages, locked loads and writes.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Store, StoreError, codec, lock_order};
use crate::domain::{
    Currency, Dispute, DisputeId, DisputeState, ItemReturn, Money, Order, PartyId, Remedy,
};

struct DisputeRow {
    dispute_id: Uuid,
    order_id: String,
    buyer_id: String,
    seller_id: String,
    reason: String,
    remedy: String,
    refund_currency: Option<String>,
    refund_minor: Option<i64>,
    description: String,
    evidence_urls: Vec<String>,
    state: String,
    outcome: Option<String>,
    return_status: Option<String>,
    return_carrier: Option<String>,
    return_tracking: Option<String>,
    protection_ends_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DisputeRow> for Dispute {
    type Error = StoreError;

    fn try_from(row: DisputeRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("dispute {}: {what}", row.dispute_id));
        let remedy = match (row.remedy.as_str(), &row.refund_currency, row.refund_minor) {
            ("FULL_REFUND", None, None) => Remedy::FullRefund,
            ("RETURN_AND_REFUND", None, None) => Remedy::ReturnAndRefund,
            ("PARTIAL_REFUND", Some(currency), Some(minor)) => Remedy::PartialRefund(Money::new(
                Currency::parse(currency).map_err(corrupt)?,
                minor,
            )),
            (other, _, _) => return Err(corrupt(format!("remedy {other}"))),
        };
        let item_return = row
            .return_status
            .as_deref()
            .map(|status| -> Result<ItemReturn, StoreError> {
                Ok(ItemReturn {
                    status: codec::parse_return_status(status)?,
                    carrier: row.return_carrier.clone(),
                    tracking_number: row.return_tracking.clone(),
                })
            })
            .transpose()?;
        Ok(Dispute {
            dispute_id: DisputeId(row.dispute_id),
            order_id: PartyId::parse(&row.order_id).map_err(corrupt)?,
            buyer_id: PartyId::parse(&row.buyer_id).map_err(corrupt)?,
            seller_id: PartyId::parse(&row.seller_id).map_err(corrupt)?,
            reason: codec::parse_reason(&row.reason)?,
            remedy,
            description: row.description,
            evidence_urls: row.evidence_urls,
            state: codec::parse_state(&row.state)?,
            outcome: row
                .outcome
                .as_deref()
                .map(codec::parse_outcome)
                .transpose()?,
            item_return,
            protection_ends_at: row.protection_ends_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Filters of a dispute listing; `None` matches everything. `after` is the last dispute
/// of the previous page (pages run newest first).
#[derive(Debug, Clone, Default)]
pub struct DisputeFilter {
    pub order_id: Option<String>,
    pub buyer_id: Option<String>,
    pub seller_id: Option<String>,
    pub state: Option<DisputeState>,
    pub after: Option<DisputeId>,
}

impl Store {
    pub async fn get_dispute(&self, dispute_id: DisputeId) -> Result<Option<Dispute>, StoreError> {
        sqlx::query_as!(
            DisputeRow,
            r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                      d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                      d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                      o.protection_ends_at, d.created_at, d.updated_at
               FROM disputes d JOIN orders o USING (order_id)
               WHERE d.dispute_id = $1"#,
            dispute_id.0
        )
        .fetch_optional(self.pool())
        .await?
        .map(Dispute::try_from)
        .transpose()
    }

    /// One page of disputes matching `filter`, newest first.
    pub async fn list_disputes(
        &self,
        filter: &DisputeFilter,
        limit: i64,
    ) -> Result<Vec<Dispute>, StoreError> {
        sqlx::query_as!(
            DisputeRow,
            r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                      d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                      d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                      o.protection_ends_at, d.created_at, d.updated_at
               FROM disputes d JOIN orders o USING (order_id)
               WHERE ($1::text IS NULL OR d.order_id = $1)
                 AND ($2::text IS NULL OR d.buyer_id = $2)
                 AND ($3::text IS NULL OR d.seller_id = $3)
                 AND ($4::text IS NULL OR d.state = $4)
                 AND ($5::uuid IS NULL OR d.dispute_id < $5)
               ORDER BY d.dispute_id DESC
               LIMIT $6"#,
            filter.order_id,
            filter.buyer_id,
            filter.seller_id,
            filter.state.map(codec::state_str),
            filter.after.map(|id| id.0),
            limit,
        )
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(Dispute::try_from)
        .collect()
    }
}

/// Loads a dispute and its order, both locked until the transaction ends. The order is
/// locked first, as every command does, so two commands never wait on each other in a
/// cycle.
pub async fn lock_dispute(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
) -> Result<Option<(Order, Dispute)>, StoreError> {
    let order_id = sqlx::query_scalar!(
        "SELECT order_id FROM disputes WHERE dispute_id = $1",
        dispute_id.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order_id) = order_id else {
        return Ok(None);
    };
    let order_id = PartyId::parse(&order_id).map_err(StoreError::Corrupt)?;
    let Some(order) = lock_order(&mut *conn, &order_id).await? else {
        return Err(StoreError::Corrupt(format!(
            "dispute {dispute_id} without its order"
        )));
    };
    let dispute = sqlx::query_as!(
        DisputeRow,
        r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                  d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                  d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                  o.protection_ends_at, d.created_at, d.updated_at
           FROM disputes d JOIN orders o USING (order_id)
           WHERE d.dispute_id = $1
           FOR UPDATE OF d"#,
        dispute_id.0
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((order, dispute.try_into()?)))
}

pub async fn has_active_dispute(
    conn: &mut PgConnection,
    order_id: &PartyId,
) -> Result<bool, StoreError> {
    let active = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM disputes
                          WHERE order_id = $1 AND state NOT IN ('CANCELLED', 'RESOLVED')) AS "active!""#,
        order_id.as_str()
    )
    .fetch_one(conn)
    .await?;
    Ok(active)
}

pub async fn insert_dispute(conn: &mut PgConnection, dispute: &Dispute) -> Result<(), StoreError> {
    let refund = match dispute.remedy {
        Remedy::PartialRefund(money) => Some(money),
        Remedy::FullRefund | Remedy::ReturnAndRefund => None,
    };
    let remedy = match dispute.remedy {
        Remedy::FullRefund => "FULL_REFUND",
        Remedy::PartialRefund(_) => "PARTIAL_REFUND",
        Remedy::ReturnAndRefund => "RETURN_AND_REFUND",
    };
    sqlx::query!(
        r#"INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy,
                                 refund_currency, refund_minor, description, evidence_urls, state,
                                 outcome, return_status, return_carrier, return_tracking,
                                 created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"#,
        dispute.dispute_id.0,
        dispute.order_id.as_str(),
        dispute.buyer_id.as_str(),
        dispute.seller_id.as_str(),
        codec::reason_str(dispute.reason),
        remedy,
        refund.map(|m| m.currency.as_str().to_owned()),
        refund.map(|m| m.minor),
        dispute.description,
        &dispute.evidence_urls,
        codec::state_str(dispute.state),
        dispute.outcome.map(codec::outcome_str),
        dispute
            .item_return
            .as_ref()
            .map(|r| codec::return_status_str(r.status)),
        dispute.item_return.as_ref().and_then(|r| r.carrier.clone()),
        dispute
            .item_return
            .as_ref()
            .and_then(|r| r.tracking_number.clone()),
        dispute.created_at,
        dispute.updated_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the dispute's mutable facts: state, outcome, return, time of change.
pub async fn update_dispute(conn: &mut PgConnection, dispute: &Dispute) -> Result<(), StoreError> {
    sqlx::query!(
        r#"UPDATE disputes
           SET state = $2, outcome = $3, return_status = $4, return_carrier = $5,
               return_tracking = $6, updated_at = $7
           WHERE dispute_id = $1"#,
        dispute.dispute_id.0,
        codec::state_str(dispute.state),
        dispute.outcome.map(codec::outcome_str),
        dispute
            .item_return
            .as_ref()
            .map(|r| codec::return_status_str(r.status)),
        dispute.item_return.as_ref().and_then(|r| r.carrier.clone()),
        dispute
            .item_return
            .as_ref()
            .and_then(|r| r.tracking_number.clone()),
        dispute.updated_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}
