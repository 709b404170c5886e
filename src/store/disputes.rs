//! Disputes: reads, keyset pages, locked loads and writes.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{IdempotencyKey, NewEvent, Store, StoreError, codec, lock_order};
use crate::domain::{
    Change, Dispute, DisputeFilter, DisputeId, ItemReturn, Order, PartyId, Proposal,
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
    return_agreed_at: Option<DateTime<Utc>>,
    return_shipped_at: Option<DateTime<Utc>>,
    proposal_remedy: Option<String>,
    proposal_refund_currency: Option<String>,
    proposal_refund_minor: Option<i64>,
    proposal_message: Option<String>,
    protection_ends_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DisputeRow> for Dispute {
    type Error = StoreError;

    fn try_from(row: DisputeRow) -> Result<Self, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("dispute {}: {what}", row.dispute_id));
        let remedy = codec::parse_remedy(
            &row.remedy,
            row.refund_currency.as_deref(),
            row.refund_minor,
        )?;
        let proposal = match (&row.proposal_remedy, &row.proposal_message) {
            (None, _) => None,
            (Some(kind), message) => Some(Proposal {
                remedy: codec::parse_remedy(
                    kind,
                    row.proposal_refund_currency.as_deref(),
                    row.proposal_refund_minor,
                )?,
                message: message.clone().unwrap_or_default(),
            }),
        };
        let item_return = row
            .return_status
            .as_deref()
            .map(|status| -> Result<ItemReturn, StoreError> {
                Ok(ItemReturn {
                    status: codec::parse_return_status(status)?,
                    carrier: row.return_carrier.clone(),
                    tracking_number: row.return_tracking.clone(),
                    agreed_at: row.return_agreed_at,
                    shipped_at: row.return_shipped_at,
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
            proposal,
            protection_ends_at: row.protection_ends_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl Store {
    pub async fn get_dispute(&self, dispute_id: DisputeId) -> Result<Option<Dispute>, StoreError> {
        fetch_dispute(self.pool(), dispute_id).await
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
                      d.return_agreed_at, d.return_shipped_at, d.proposal_remedy,
                      d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message,
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
        .instrument(statement("SELECT", "disputes"))
        .await?
        .into_iter()
        .map(Dispute::try_from)
        .collect()
    }
}

/// Loads a dispute and its order, the order locked until the transaction ends. Every
/// command locks the order first, so commands on one order run one at a time.
pub async fn lock_dispute(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
) -> Result<Option<(Order, Dispute)>, StoreError> {
    let Some(order_id) = order_of(&mut *conn, dispute_id).await? else {
        return Ok(None);
    };
    let Some(order) = lock_order(&mut *conn, &order_id).await? else {
        return Err(StoreError::Corrupt(format!(
            "dispute {dispute_id} without its order"
        )));
    };
    // The order lock serialises every writer of its disputes: no second lock needed.
    let dispute = fetch_dispute(&mut *conn, dispute_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("dispute {dispute_id} vanished")))?;
    Ok(Some((order, dispute)))
}

/// The order a dispute belongs to.
pub async fn order_of(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
) -> Result<Option<PartyId>, StoreError> {
    let id = sqlx::query_scalar!(
        "SELECT order_id FROM disputes WHERE dispute_id = $1",
        dispute_id.0
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "disputes"))
    .await?;
    id.map(|id| PartyId::parse(&id).map_err(StoreError::Corrupt))
        .transpose()
}

/// Reads one dispute with its order's protection end.
pub async fn fetch_dispute(
    executor: impl sqlx::PgExecutor<'_>,
    dispute_id: DisputeId,
) -> Result<Option<Dispute>, StoreError> {
    sqlx::query_as!(
        DisputeRow,
        r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                  d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                  d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                  d.return_agreed_at, d.return_shipped_at, d.proposal_remedy,
                  d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message,
                  o.protection_ends_at, d.created_at, d.updated_at
           FROM disputes d JOIN orders o USING (order_id)
           WHERE d.dispute_id = $1"#,
        dispute_id.0
    )
    .fetch_optional(executor)
    .instrument(statement("SELECT", "disputes"))
    .await?
    .map(Dispute::try_from)
    .transpose()
}

/// The order's active dispute, if it has one (at most one: a unique index says so).
pub async fn active_dispute_id(
    conn: &mut PgConnection,
    order_id: &PartyId,
) -> Result<Option<DisputeId>, StoreError> {
    let id = sqlx::query_scalar!(
        "SELECT dispute_id FROM disputes WHERE order_id = $1 AND state NOT IN ('CANCELLED', 'RESOLVED')",
        order_id.as_str()
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "disputes")).await?;
    Ok(id.map(DisputeId))
}

/// Writes everything OpenDispute changes in one statement (one round trip): the new
/// dispute, its order's count, its first history entry and outbox event, and the reply
/// saved with the request's claimed key, which must be exactly one row still without one.
pub async fn insert_opened(
    conn: &mut PgConnection,
    change: &Change,
    event: NewEvent<'_>,
    key: &IdempotencyKey,
    reply: &serde_json::Value,
) -> Result<(), StoreError> {
    let dispute = &change.dispute;
    let order = &change.order;
    let (remedy, refund_currency, refund_minor) = codec::remedy_columns(dispute.remedy);
    let completed = sqlx::query_scalar!(
        r#"WITH new_dispute AS (
             INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy,
                                   refund_currency, refund_minor, description, evidence_urls, state,
                                   outcome, return_status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
           ), counted AS (
             UPDATE orders SET dispute_count = $15, updated_at = $14 WHERE order_id = $2
           ), history AS (
             INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload, trace_id)
             VALUES ($1, 1, $16, $17, $18, $14, $19, $20)
             RETURNING seq
           ), event AS (
             INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role,
                                 actor_id, occurred_at, payload, trace_id)
             SELECT $21, $16, $2, $1, seq, $17, $18, $14, $19, $20 FROM history
           ), completed AS (
             UPDATE idempotency_keys SET reply = $26
             WHERE actor_role = $22 AND actor_id = $23 AND rpc = $24 AND request_id = $25
               AND reply IS NULL
             RETURNING 1
           )
           SELECT count(*) AS "completed!" FROM completed"#,
        dispute.dispute_id.0,
        dispute.order_id.as_str(),
        dispute.buyer_id.as_str(),
        dispute.seller_id.as_str(),
        codec::reason_str(dispute.reason),
        remedy,
        refund_currency,
        refund_minor,
        dispute.description,
        &dispute.evidence_urls,
        codec::state_str(dispute.state),
        dispute.outcome.map(codec::outcome_str),
        dispute
            .item_return
            .as_ref()
            .map(|r| codec::return_status_str(r.status)),
        dispute.created_at,
        order.dispute_count,
        event.event_type,
        event.actor.role.as_str(),
        event.actor.id,
        event.payload,
        event.trace_id,
        Uuid::now_v7(),
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        reply,
    )
    .fetch_one(conn)
    .instrument(statement("INSERT", "disputes"))
    .await?;
    super::idempotency::exactly_one_key(completed.try_into().unwrap_or(u64::MAX))
}

/// Writes the dispute's mutable facts: state, outcome, return, proposal, time of change.
pub async fn update_dispute(conn: &mut PgConnection, dispute: &Dispute) -> Result<(), StoreError> {
    let item_return = dispute.item_return.as_ref();
    let proposal = dispute.proposal.as_ref();
    let (proposal_remedy, proposal_currency, proposal_minor) = match proposal {
        Some(p) => {
            let (kind, currency, minor) = codec::remedy_columns(p.remedy);
            (Some(kind), currency, minor)
        }
        None => (None, None, None),
    };
    sqlx::query!(
        r#"UPDATE disputes
           SET state = $2, outcome = $3, return_status = $4, return_carrier = $5,
               return_tracking = $6, return_agreed_at = $7, return_shipped_at = $8,
               proposal_remedy = $9, proposal_refund_currency = $10, proposal_refund_minor = $11,
               proposal_message = $12, updated_at = $13
           WHERE dispute_id = $1"#,
        dispute.dispute_id.0,
        codec::state_str(dispute.state),
        dispute.outcome.map(codec::outcome_str),
        item_return.map(|r| codec::return_status_str(r.status)),
        item_return.and_then(|r| r.carrier.clone()),
        item_return.and_then(|r| r.tracking_number.clone()),
        item_return.and_then(|r| r.agreed_at),
        item_return.and_then(|r| r.shipped_at),
        proposal_remedy,
        proposal_currency,
        proposal_minor,
        proposal.map(|p| p.message.clone()),
        dispute.updated_at,
    )
    .execute(conn)
    .instrument(statement("UPDATE", "disputes"))
    .await?;
    Ok(())
}
