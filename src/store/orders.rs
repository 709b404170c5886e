//! Orders: reads and the lock every command on an order takes first.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    IdempotencyKey, KeyState, Store, StoreError, Wait, disputes::active_dispute_id, idempotency,
};
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

/// The lock statement's row.
struct LockedOrderRow {
    order_id: String,
    buyer_id: String,
    seller_id: String,
    currency_code: String,
    amount_minor: i64,
    protection_ends_at: DateTime<Utc>,
    refunded_minor: Option<i64>,
    settled_at: Option<DateTime<Utc>>,
    disputes_closed: bool,
    dispute_count: i32,
    registered_protection_ends_at: DateTime<Utc>,
    /// Whether the row locked is the row the statement's snapshot saw.
    as_seen: bool,
    active_dispute: Option<uuid::Uuid>,
    key_hash: Option<Vec<u8>>,
    key_reply: Option<serde_json::Value>,
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
    /// The request's idempotency key as the statement's snapshot saw it: `None`, not
    /// answered before (as of that snapshot; see [`Store::saved_key`]).
    pub key: Option<KeyState>,
}

/// Locks the order until the transaction ends, reads it, its active dispute and what `key`
/// (when there is one) was answered before; with `Wait::Skip`, an order
/// another transaction holds reads as no order. Every command that changes an order or its
/// disputes locks the order first, so commands on one order run one at a time and in the
/// same lock order. Each statement names the order, so on Citus each runs on the order's
/// shard alone (README, "Running on Citus").
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
) -> Result<LockedOrder, StoreError> {
    /// The statement, with its locking clause given (a test build takes none).
    macro_rules! lock_order {
        ($locking:tt) => {
            sqlx::query_as!(
                LockedOrderRow,
                r#"SELECT l.order_id, l.buyer_id, l.seller_id, l.currency_code, l.amount_minor,
                          l.protection_ends_at, l.refunded_minor, l.settled_at, l.disputes_closed,
                          l.dispute_count, l.registered_protection_ends_at,
                          (SELECT o.xmin FROM orders o WHERE o.order_id = $1) = l.xmin AS "as_seen!",
                          (SELECT d.dispute_id FROM disputes d
                           WHERE d.order_id = $1 AND d.state NOT IN ('CANCELLED', 'RESOLVED')) AS "active_dispute?",
                          (SELECT k.request_hash FROM idempotency_keys k
                           WHERE k.order_id = $1 AND k.actor_role = $2 AND k.actor_id = $3 AND k.rpc = $4
                             AND k.request_id = $5) AS "key_hash?",
                          (SELECT k.reply FROM idempotency_keys k
                           WHERE k.order_id = $1 AND k.actor_role = $2 AND k.actor_id = $3 AND k.rpc = $4
                             AND k.request_id = $5) AS "key_reply?"
                   FROM orders l WHERE l.order_id = $1 "#
                    + $locking,
                order_id.as_str(),
                key.map(|k| k.actor.role.as_str()),
                key.map(|k| k.actor.id.as_str()),
                key.map(|k| k.rpc),
                key.map(|k| k.request_id.as_str()),
            )
        };
    }
    // Every statement is compiled (and its query data kept) in every build.
    let row = async {
        match wait {
            Wait::Skip => {
                lock_order!("FOR UPDATE SKIP LOCKED")
                    .fetch_optional(&mut *conn)
                    .await
            }
            Wait::Block if cfg!(feature = "test-without-row-locks") => {
                lock_order!("").fetch_optional(&mut *conn).await
            }
            Wait::Block => lock_order!("FOR UPDATE").fetch_optional(&mut *conn).await,
        }
    }
    .instrument(statement("SELECT", "orders"))
    .await?;
    // No order, no key: a key is only ever written with its order's row.
    let Some(row) = row else {
        return Ok(LockedOrder {
            order: None,
            registered_protection_ends_at: None,
            active_dispute: None,
            key: None,
        });
    };
    let saved = match key {
        Some(key) => idempotency::found(key, row.key_hash, row.key_reply)?,
        None => None,
    };
    let order = Order::try_from(OrderRow {
        order_id: row.order_id,
        buyer_id: row.buyer_id,
        seller_id: row.seller_id,
        currency_code: row.currency_code,
        amount_minor: row.amount_minor,
        protection_ends_at: row.protection_ends_at,
        refunded_minor: row.refunded_minor,
        settled_at: row.settled_at,
        disputes_closed: row.disputes_closed,
        dispute_count: row.dispute_count,
    })?;
    let active_dispute = if row.as_seen {
        row.active_dispute.map(DisputeId)
    } else {
        active_dispute_id(conn, &order.order_id).await?
    };
    Ok(LockedOrder {
        order: Some(order),
        registered_protection_ends_at: Some(row.registered_protection_ends_at),
        active_dispute,
        key: saved,
    })
}
