//! Orders, their funds and the settlement ledger.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Store, StoreError};
use crate::domain::{Actor, Currency, DisputeId, Money, Order, PartyId, Settlement};

struct OrderRow {
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

/// Reads the order and locks it until the transaction ends. Every command that changes
/// an order or its disputes locks the order first, so commands on one order run one at
/// a time and in the same lock order.
pub async fn lock_order(
    conn: &mut PgConnection,
    order_id: &PartyId,
) -> Result<Option<Order>, StoreError> {
    sqlx::query_as!(
        OrderRow,
        r#"SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                  refunded_minor, settled_at, disputes_closed, dispute_count
           FROM orders WHERE order_id = $1 FOR UPDATE"#,
        order_id.as_str()
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "orders"))
    .await?
    .map(Order::try_from)
    .transpose()
}

/// Locks the order unless another transaction holds it (then `None`: someone else is
/// working on it).
pub async fn try_lock_order(
    conn: &mut PgConnection,
    order_id: &PartyId,
) -> Result<Option<Order>, StoreError> {
    sqlx::query_as!(
        OrderRow,
        r#"SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                  refunded_minor, settled_at, disputes_closed, dispute_count
           FROM orders WHERE order_id = $1 FOR UPDATE SKIP LOCKED"#,
        order_id.as_str()
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "orders"))
    .await?
    .map(Order::try_from)
    .transpose()
}

/// Inserts a new order; `false` if one with its id exists already (registered by a
/// concurrent call, whose transaction this one waited for).
pub async fn insert_order(
    conn: &mut PgConnection,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query!(
        r#"INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
                               protection_ends_at, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
           ON CONFLICT (order_id) DO NOTHING"#,
        order.order_id.as_str(),
        order.buyer_id.as_str(),
        order.seller_id.as_str(),
        order.amount.currency.as_str(),
        order.amount.minor,
        order.protection_ends_at,
        now,
    )
    .execute(conn)
    .instrument(statement("INSERT", "orders"))
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Writes the order's mutable facts: funds, closure, dispute count, protection end.
pub async fn update_order(
    conn: &mut PgConnection,
    order: &Order,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let settlement = order.settlement.as_ref();
    sqlx::query!(
        r#"UPDATE orders
           SET funds_state = $2, refunded_minor = $3, released_minor = $4, settled_at = $5,
               disputes_closed = $6, dispute_count = $7, protection_ends_at = $8, updated_at = $9
           WHERE order_id = $1"#,
        order.order_id.as_str(),
        order.funds_state().as_str(),
        settlement.map(Settlement::refund_minor),
        settlement.map(Settlement::release_minor),
        settlement.map(|s| s.settled_at),
        order.disputes_closed,
        order.dispute_count,
        order.protection_ends_at,
        now,
    )
    .execute(conn)
    .instrument(statement("UPDATE", "orders"))
    .await?;
    Ok(())
}

/// Appends the order's settlement to the immutable ledger (one row per order).
pub async fn insert_settlement(
    conn: &mut PgConnection,
    order: &Order,
    settlement: &Settlement,
    dispute_id: Option<DisputeId>,
    actor: &Actor,
) -> Result<(), StoreError> {
    sqlx::query!(
        r#"INSERT INTO settlements (order_id, dispute_id, currency_code, amount_minor, refund_minor,
                                    release_minor, actor_role, actor_id, settled_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        order.order_id.as_str(),
        dispute_id.map(|id| id.0),
        order.amount.currency.as_str(),
        order.amount.minor,
        settlement.refund_minor(),
        settlement.release_minor(),
        actor.role.as_str(),
        actor.id,
        settlement.settled_at,
    )
    .execute(conn)
    .instrument(statement("INSERT", "settlements"))
    .await?;
    Ok(())
}
