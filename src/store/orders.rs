//! Orders: reads and the lock every command on an order takes first.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{IdempotencyKey, Store, StoreError, Wait, disputes::active_dispute_id};
use crate::domain::{Currency, DisputeId, Money, Order, PartyId, Settlement};

pub(super) struct OrderRow {
    pub(super) order_id: String,
    pub(super) buyer_id: String,
    pub(super) seller_id: String,
    pub(super) currency_code: String,
    pub(super) amount_minor: i64,
    pub(super) protection_ends_at: DateTime<Utc>,
    pub(super) refunded_minor: Option<i64>,
    pub(super) settled_at: Option<DateTime<Utc>>,
    pub(super) disputes_closed: bool,
    pub(super) dispute_count: i32,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("order {}: {what}", row.order_id));
        let amount = Money::new(
            Currency::parse(&row.currency_code).map_err(corrupt)?,
            row.amount_minor,
        );
        let settlement = match (row.refunded_minor, row.settled_at) {
            (None, None) => None,
            (Some(refund), Some(at)) => Some(
                Settlement::new(amount, refund, at)
                    .ok_or_else(|| corrupt("bad settlement".into()))?,
            ),
            _ => return Err(corrupt("half a settlement".into())),
        };
        Ok(Order {
            order_id: PartyId::parse(&row.order_id).map_err(corrupt)?,
            buyer_id: PartyId::parse(&row.buyer_id).map_err(corrupt)?,
            seller_id: PartyId::parse(&row.seller_id).map_err(corrupt)?,
            amount,
            protection_ends_at: row.protection_ends_at,
            settlement,
            disputes_closed: row.disputes_closed,
            dispute_count: row.dispute_count,
        })
    }
}

impl Store {
    pub async fn get_order(&self, order_id: &PartyId) -> Result<Option<Order>, StoreError> {
        sqlx::query_as!(
            OrderRow,
            r#"SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                      refunded_minor, settled_at, disputes_closed, dispute_count
               FROM orders WHERE order_id = $1"#,
            order_id.as_str()
        )
        .fetch_optional(self.pool())
        .instrument(statement("SELECT", "orders")).await?
        .map(Order::try_from)
        .transpose()
    }
}

/// The lock statement's row: the order's columns are null when there is no such order.
struct LockedOrderRow {
    claimed: bool,
    order_id: Option<String>,
    buyer_id: Option<String>,
    seller_id: Option<String>,
    currency_code: Option<String>,
    amount_minor: Option<i64>,
    protection_ends_at: Option<DateTime<Utc>>,
    refunded_minor: Option<i64>,
    settled_at: Option<DateTime<Utc>>,
    disputes_closed: Option<bool>,
    dispute_count: Option<i32>,
    registered_protection_ends_at: Option<DateTime<Utc>>,
    as_seen: Option<bool>,
    active_dispute: Option<uuid::Uuid>,
}

/// An order locked by a command, with what the command's lock statement learned beside it.
pub struct LockedOrder {
    /// `None`: no such order (nothing locked).
    pub order: Option<Order>,
    /// The protection end the order was registered with (ExtendProtection moves the
    /// order's, never this).
    pub registered_protection_ends_at: Option<DateTime<Utc>>,
    /// The order's active dispute, if any, read after the lock was granted.
    pub active_dispute: Option<DisputeId>,
    /// Whether the statement claimed the request's idempotency key; when not, the key was
    /// claimed by a committed transaction ([`super::claimed_before`] tells what it saved).
    pub claimed: bool,
}

/// Locks the order until the transaction ends, reads it and its active dispute, and
/// claims `key` (when there is one) once the lock is held: one round trip; with
/// `Wait::Skip`, an order another transaction holds reads as no order. Every command that
/// changes an order or its disputes locks the order first, so commands on one order run
/// one at a time and in the same lock order.
///
/// The active dispute comes from the statement's snapshot, taken before any wait for the
/// lock. Every write to an order's disputes also writes the order row, so when the row
/// locked is the row the snapshot saw, nothing has changed its disputes since; when it is
/// not (this command waited for another), the active dispute is read again afterwards.
pub async fn lock_order(
    conn: &mut PgConnection,
    order_id: &PartyId,
    key: Option<&IdempotencyKey>,
    wait: Wait,
    now: DateTime<Utc>,
) -> Result<LockedOrder, StoreError> {
    /// The statement, with its locking clause given (a test build takes none).
    macro_rules! lock_order {
        ($locking:tt) => {
            sqlx::query_as!(
                LockedOrderRow,
                r#"WITH locked AS (
                     SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                            refunded_minor, settled_at, disputes_closed, dispute_count,
                            registered_protection_ends_at, xmin AS version
                     FROM orders WHERE order_id = $1 "#
                    + $locking
                    + r#"
                   ), claim AS (
                     INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at)
                     SELECT $2, $3, $4, $5, $6, $7 WHERE (SELECT count(*) FROM locked) >= 0 AND $2::text IS NOT NULL
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                   )
                   SELECT (SELECT count(*) FROM claim) = 1 AS "claimed!",
                          l.order_id AS "order_id?", l.buyer_id AS "buyer_id?", l.seller_id AS "seller_id?",
                          l.currency_code AS "currency_code?", l.amount_minor AS "amount_minor?",
                          l.protection_ends_at AS "protection_ends_at?", l.refunded_minor, l.settled_at,
                          l.disputes_closed AS "disputes_closed?", l.dispute_count AS "dispute_count?",
                          l.registered_protection_ends_at AS "registered_protection_ends_at?",
                          (SELECT o.xmin = l.version FROM orders o WHERE o.order_id = $1) AS "as_seen?",
                          (SELECT d.dispute_id FROM disputes d
                           WHERE d.order_id = $1 AND d.state NOT IN ('CANCELLED', 'RESOLVED')) AS "active_dispute?"
                   FROM (VALUES (1)) AS one (n) LEFT JOIN locked l ON true"#,
                order_id.as_str(),
                key.map(|k| k.actor.role.as_str()),
                key.map(|k| k.actor.id.as_str()),
                key.map(|k| k.rpc),
                key.map(|k| k.request_id.as_str()),
                key.map(|k| k.request_hash.as_slice()),
                now,
            )
        };
    }
    // Every statement is compiled (and its query data kept) in every build.
    let row = async {
        match wait {
            Wait::Skip => {
                lock_order!("FOR UPDATE SKIP LOCKED")
                    .fetch_one(&mut *conn)
                    .await
            }
            Wait::Block if cfg!(feature = "test-without-row-locks") => {
                lock_order!("").fetch_one(&mut *conn).await
            }
            Wait::Block => lock_order!("FOR UPDATE").fetch_one(&mut *conn).await,
        }
    }
    .instrument(statement("SELECT", "orders"))
    .await?;
    let order = match (
        row.order_id,
        row.buyer_id,
        row.seller_id,
        row.currency_code,
        row.amount_minor,
        row.protection_ends_at,
        row.disputes_closed,
        row.dispute_count,
    ) {
        (
            Some(order_id),
            Some(buyer_id),
            Some(seller_id),
            Some(currency_code),
            Some(amount_minor),
            Some(protection_ends_at),
            Some(disputes_closed),
            Some(dispute_count),
        ) => Some(Order::try_from(OrderRow {
            order_id,
            buyer_id,
            seller_id,
            currency_code,
            amount_minor,
            protection_ends_at,
            refunded_minor: row.refunded_minor,
            settled_at: row.settled_at,
            disputes_closed,
            dispute_count,
        })?),
        _ => None,
    };
    let active_dispute = match (&order, row.as_seen) {
        (Some(order), seen) if seen != Some(true) => {
            active_dispute_id(conn, &order.order_id).await?
        }
        _ => row.active_dispute.map(DisputeId),
    };
    Ok(LockedOrder {
        order,
        registered_protection_ends_at: row.registered_protection_ends_at,
        active_dispute,
        claimed: row.claimed,
    })
}
