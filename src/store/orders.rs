//! Orders, their funds and the settlement ledger.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use uuid::Uuid;

use super::{IdempotencyKey, NewEvent, Store, StoreError, active_dispute_id};
use crate::domain::{Actor, Currency, DisputeId, Money, Order, PartyId, Settlement};

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
/// claims the request's key once the lock is held: one round trip. Every command that
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
    key: &IdempotencyKey,
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
                     SELECT $2, $3, $4, $5, $6, $7 WHERE (SELECT count(*) FROM locked) >= 0
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
                key.actor.role.as_str(),
                key.actor.id,
                key.rpc,
                key.request_id.as_str(),
                key.request_hash,
                now,
            )
        };
    }
    // Both statements are compiled (and their query data kept) in every build.
    let row = async {
        if cfg!(feature = "test-without-row-locks") {
            lock_order!("").fetch_one(&mut *conn).await
        } else {
            lock_order!("FOR UPDATE").fetch_one(&mut *conn).await
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

/// Reads the order, with the protection end it was registered with, and locks it until
/// the transaction ends (no key to claim: a retry of [`insert_order`] that lost a race).
pub async fn relock_order(
    conn: &mut PgConnection,
    order_id: &PartyId,
) -> Result<Option<(Order, DateTime<Utc>)>, StoreError> {
    let row = sqlx::query!(
        r#"SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at,
                  refunded_minor, settled_at, disputes_closed, dispute_count,
                  registered_protection_ends_at
           FROM orders WHERE order_id = $1 FOR UPDATE"#,
        order_id.as_str()
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "orders"))
    .await?;
    row.map(|row| {
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
        Ok((order, row.registered_protection_ends_at))
    })
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

/// Inserts a new order, its ORDER_REGISTERED event and the reply saved with the claimed
/// key, in one statement; `false` (and nothing written) if an order with its id exists
/// already (registered by a concurrent call, whose transaction this one waited for).
pub async fn insert_order(
    conn: &mut PgConnection,
    order: &Order,
    event: NewEvent<'_>,
    key: &IdempotencyKey,
    reply: &serde_json::Value,
) -> Result<bool, StoreError> {
    let row = sqlx::query!(
        r#"WITH new_order AS (
             INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
                                 protection_ends_at, registered_protection_ends_at, created_at,
                                 updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7)
             ON CONFLICT (order_id) DO NOTHING
             RETURNING order_id
           ), event AS (
             INSERT INTO outbox (event_id, event_type, order_id, actor_role, actor_id, occurred_at,
                                 payload, trace_id)
             SELECT $8, $9, order_id, $10, $11, $7, $12, $13 FROM new_order
           ), completed AS (
             UPDATE idempotency_keys SET reply = $18
             WHERE actor_role = $14 AND actor_id = $15 AND rpc = $16 AND request_id = $17
               AND reply IS NULL AND EXISTS (SELECT 1 FROM new_order)
             RETURNING 1
           )
           SELECT (SELECT count(*) FROM new_order) AS "inserted!",
                  (SELECT count(*) FROM completed) AS "completed!""#,
        order.order_id.as_str(),
        order.buyer_id.as_str(),
        order.seller_id.as_str(),
        order.amount.currency.as_str(),
        order.amount.minor,
        order.protection_ends_at,
        event.occurred_at,
        Uuid::now_v7(),
        event.event_type,
        event.actor.role.as_str(),
        event.actor.id,
        event.payload,
        event.trace_id,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        reply,
    )
    .fetch_one(conn)
    .instrument(statement("INSERT", "orders"))
    .await?;
    if row.inserted == 0 {
        return Ok(false);
    }
    super::idempotency::exactly_one_key(row.completed.try_into().unwrap_or(u64::MAX))?;
    Ok(true)
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

/// Writes an extended protection end, its PROTECTION_EXTENDED event (in the active
/// dispute's history too, when the event names one) and the reply saved with the claimed
/// key, in one statement.
pub async fn update_protection(
    conn: &mut PgConnection,
    order: &Order,
    event: NewEvent<'_>,
    key: &IdempotencyKey,
    reply: &serde_json::Value,
) -> Result<(), StoreError> {
    let completed = sqlx::query_scalar!(
        r#"WITH extended AS (
             UPDATE orders SET protection_ends_at = $2, updated_at = $3 WHERE order_id = $1
           ), history AS (
             INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload, trace_id)
             SELECT $4::uuid, COALESCE(MAX(seq), 0) + 1, $5, $6, $7, $3, $8, $9
             FROM dispute_events WHERE dispute_id = $4::uuid
             HAVING $4::uuid IS NOT NULL
             RETURNING seq
           ), event AS (
             INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role,
                                 actor_id, occurred_at, payload, trace_id)
             VALUES ($10, $5, $1, $4, (SELECT seq FROM history), $6, $7, $3, $8, $9)
           ), completed AS (
             UPDATE idempotency_keys SET reply = $15
             WHERE actor_role = $11 AND actor_id = $12 AND rpc = $13 AND request_id = $14
               AND reply IS NULL
             RETURNING 1
           )
           SELECT count(*) AS "completed!" FROM completed"#,
        order.order_id.as_str(),
        order.protection_ends_at,
        event.occurred_at,
        event.dispute_id.map(|id| id.0),
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
    .instrument(statement("UPDATE", "orders"))
    .await?;
    super::idempotency::exactly_one_key(completed.try_into().unwrap_or(u64::MAX))
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
