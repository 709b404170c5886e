//! The one writer: everything a command changes — the order (new or changed), the dispute
//! (new or changed), the settlement ledger's row when the change settled the funds, the
//! events (numbered on in their dispute's history and in their order's stream —
//! `order_sequence`, from `orders.event_sequence`, bumped by the order's own statement —
//! and appended to the outbox), and the
//! request's idempotency key with its reply. Every command goes through [`save`]
//! (README, "Architecture").
//!
//! One plain statement per table, each naming the order: on Citus every one of them is a
//! router query on the order's shard, so a command commits on one node without two-phase
//! commit (a data-modifying CTE would be planned in several steps there). A new dispute's
//! directory row, keyed by the dispute and so on Citus elsewhere, is written by the pipeline
//! ([`super::file_dispute`]; README, "Running on Citus").

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tracing::Instrument;
use uuid::Uuid;

use super::{IdempotencyKey, StoreError, codec, statement};
use crate::domain::{Actor, Dispute, DisputeId, Order, Settlement};

/// An event to record, in the order, dispute, actor and trace of its [`Write`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// A row a write inserts, updates, or only refers to.
#[derive(Debug)]
pub enum Row<T> {
    New(T),
    Changed(T),
    Kept(T),
}

impl<T: PartialEq> Row<T> {
    /// `after`, to be written unless it is `before` as it was.
    pub fn unless_same(before: &T, after: T) -> Self {
        if *before == after {
            Row::Kept(after)
        } else {
            Row::Changed(after)
        }
    }
}

impl<T> Row<T> {
    fn get(&self) -> &T {
        match self {
            Row::New(row) | Row::Changed(row) | Row::Kept(row) => row,
        }
    }

    fn is_new(&self) -> bool {
        matches!(self, Row::New(_))
    }

    fn is_changed(&self) -> bool {
        matches!(self, Row::Changed(_))
    }
}

/// The rows and events one command changes.
#[derive(Debug)]
pub struct Changes {
    /// The order every row and event belongs to.
    pub order: Row<Order>,
    pub dispute: Option<Row<Dispute>>,
    /// Append the order's settlement to the ledger: this change settled the funds.
    pub settled: bool,
    /// The dispute whose history the events join; `None`: the outbox only.
    pub history: Option<DisputeId>,
    pub events: Vec<NewEvent>,
}

impl Changes {
    /// Nothing changes: the order only names what the write belongs to (a reply to save).
    pub fn none(order: Order) -> Self {
        Self {
            order: Row::Kept(order),
            dispute: None,
            settled: false,
            history: None,
            events: Vec::new(),
        }
    }
}

/// One command's write: its changes, by whom, when, and its reply.
#[derive(Debug)]
pub struct Write<'a> {
    pub changes: &'a Changes,
    pub actor: &'a Actor,
    /// The trace of the request (or the worker's pass) that caused it.
    pub trace_id: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// The request's key and the reply to save with it (the worker has none).
    pub reply: Option<(&'a IdempotencyKey, serde_json::Value)>,
}

/// What [`save`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// A new order's id was taken meanwhile (by a concurrent registration, whose
    /// transaction this statement waited for): nothing was written.
    OrderExists,
    /// The request's key was answered meanwhile (by a duplicate that committed first):
    /// roll back and replay what it saved.
    KeyTaken,
}

/// Writes `write`, one statement per row kind it changes, in the caller's transaction.
pub async fn save(conn: &mut PgConnection, write: &Write<'_>) -> Result<Saved, StoreError> {
    let changes = write.changes;
    let order = changes.order.get();
    let order_id = order.order_id.as_str();
    let settlement = order.settlement.as_ref();
    // How many events the order's stream holds before this write's: the order's own
    // statement adds this write's, under the order's row lock, so every order's events are
    // numbered 1, 2, 3… in commit order (README, "Consuming the event stream").
    let written = changes.events.len() as i64;
    let mut sequenced = 0;
    if changes.order.is_new() {
        // `ON CONFLICT` without a target: every unique key of `orders` starts with its
        // `order_id` (the id, and the keys the composite foreign keys onto the order's
        // facts refer to; `schema::every_unique_key_of_orders_starts_with_the_orders_id`
        // keeps it so), so any conflict is the id taken. With `(order_id)` as the only
        // arbiter, two registrations of one id that passed the arbiter's check together
        // could meet on another of those keys instead, which refuses rather than skips:
        // one of them failed with INVARIANT_VIOLATED.
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
                                   protection_ends_at, registered_protection_ends_at, created_at,
                                   updated_at, event_sequence)
               VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7, $8)
               ON CONFLICT DO NOTHING
               RETURNING true AS "inserted!""#,
            order_id,
            order.buyer_id.as_str(),
            order.seller_id.as_str(),
            order.amount.currency.as_str(),
            order.amount.minor,
            order.protection_ends_at,
            write.now,
            written,
        )
        .fetch_optional(&mut *conn)
        .instrument(statement("INSERT", "orders"))
        .await?;
        if inserted.is_none() {
            return Ok(Saved::OrderExists);
        }
    }
    if changes.order.is_changed() {
        sequenced = sqlx::query_scalar!(
            r#"UPDATE orders
               SET funds_state = $2, refunded_minor = $3, released_minor = $4, settled_at = $5,
                   disputes_closed = $6, dispute_count = $7, protection_ends_at = $8, updated_at = $9,
                   event_sequence = event_sequence + $10
               WHERE order_id = $1
               RETURNING event_sequence - $10 AS "sequenced!""#,
            order_id,
            order.funds_state().as_str(),
            settlement.map(Settlement::refund_minor),
            settlement.map(Settlement::release_minor),
            settlement.map(|s| s.settled_at),
            order.disputes_closed,
            order.dispute_count,
            order.protection_ends_at,
            write.now,
            written,
        )
        .fetch_one(&mut *conn)
        .instrument(statement("UPDATE", "orders"))
        .await?;
    } else if !changes.order.is_new() && written > 0 {
        sequenced = sqlx::query_scalar!(
            r#"UPDATE orders SET event_sequence = event_sequence + $2 WHERE order_id = $1
               RETURNING event_sequence - $2 AS "sequenced!""#,
            order_id,
            written,
        )
        .fetch_one(&mut *conn)
        .instrument(statement("UPDATE", "orders"))
        .await?;
    }
    if let Some(dispute) = &changes.dispute {
        save_dispute(conn, dispute).await?;
    }
    if changes.settled {
        sqlx::query!(
            r#"INSERT INTO settlements (order_id, dispute_id, currency_code, amount_minor, refund_minor,
                                        release_minor, actor_role, actor_id, settled_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
            order_id,
            changes.dispute.as_ref().map(|d| d.get().dispute_id.0),
            order.amount.currency.as_str(),
            order.amount.minor,
            settlement.map(Settlement::refund_minor),
            settlement.map(Settlement::release_minor),
            write.actor.role.as_str(),
            write.actor.id,
            settlement.map(|s| s.settled_at),
        )
        .execute(&mut *conn)
        .instrument(statement("INSERT", "settlements"))
        .await?;
    }
    if !changes.events.is_empty() {
        save_events(conn, write, sequenced).await?;
    }
    // The key last, with its reply: a duplicate that ran meanwhile meets the committed key
    // here (or waits for the first to end) and is replayed instead.
    if let Some((key, reply)) = &write.reply {
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys (order_id, actor_role, actor_id, rpc, request_id, request_hash,
                                             created_at, reply)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT DO NOTHING
               RETURNING true AS "inserted!""#,
            order_id,
            key.actor.role.as_str(),
            key.actor.id.as_str(),
            key.rpc,
            key.request_id.as_str(),
            key.request_hash.as_slice(),
            write.now,
            reply,
        )
        .fetch_optional(&mut *conn)
        .instrument(statement("INSERT", "idempotency_keys"))
        .await?;
        if inserted.is_none() {
            return Ok(Saved::KeyTaken);
        }
    }
    Ok(Saved::Written)
}

/// The dispute's row: inserted or updated.
async fn save_dispute(conn: &mut PgConnection, row: &Row<Dispute>) -> Result<(), StoreError> {
    let dispute = row.get();
    let item_return = dispute.item_return.as_ref();
    let proposal = dispute.proposal.as_ref();
    let replacement = dispute.replacement.as_ref();
    let (remedy, refund_currency, refund_minor) = codec::remedy_columns(dispute.remedy);
    let proposal_remedy = proposal.map(|p| codec::remedy_columns(p.remedy));
    let (order_id, dispute_id) = (dispute.order_id.as_str(), dispute.dispute_id.0);
    match row {
        Row::Kept(_) => return Ok(()),
        Row::New(_) => {
            sqlx::query!(
                r#"INSERT INTO disputes (order_id, dispute_id, buyer_id, seller_id, reason, remedy,
                                       refund_currency, refund_minor, description, evidence_urls, state,
                                       outcome, return_status, return_carrier, return_tracking,
                                       return_agreed_at, return_shipped_at, proposal_remedy,
                                       proposal_refund_currency, proposal_refund_minor, proposal_message,
                                       replacement_agreed_at, replacement_carrier, replacement_tracking,
                                       replacement_shipped_at, seller_first_response_at, created_at,
                                       updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                           $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"#,
                order_id,
                dispute_id,
                dispute.buyer_id.as_str(),
                dispute.seller_id.as_str(),
                codec::reason_str(dispute.reason),
                remedy,
                refund_currency.as_deref(),
                refund_minor,
                dispute.description.as_str(),
                dispute.evidence_urls.as_slice(),
                codec::state_str(dispute.state),
                dispute.outcome.map(codec::outcome_str),
                item_return.map(|r| codec::return_status_str(r.status)),
                item_return.and_then(|r| r.carrier.as_deref()),
                item_return.and_then(|r| r.tracking_number.as_deref()),
                item_return.and_then(|r| r.agreed_at),
                item_return.and_then(|r| r.shipped_at),
                proposal_remedy.as_ref().map(|(kind, _, _)| *kind),
                proposal_remedy.as_ref().and_then(|(_, currency, _)| currency.as_deref()),
                proposal_remedy.as_ref().and_then(|(_, _, minor)| *minor),
                proposal.map(|p| p.message.as_str()),
                replacement.map(|r| r.agreed_at),
                replacement.and_then(|r| r.carrier.as_deref()),
                replacement.and_then(|r| r.tracking_number.as_deref()),
                replacement.and_then(|r| r.shipped_at),
                dispute.seller_first_response_at,
                dispute.created_at,
                dispute.updated_at,
            )
            .execute(&mut *conn)
            .instrument(statement("INSERT", "disputes"))
            .await?;
        }
        Row::Changed(_) => {
            sqlx::query!(
                r#"UPDATE disputes
                   SET state = $3, outcome = $4, return_status = $5, return_carrier = $6,
                       return_tracking = $7, return_agreed_at = $8, return_shipped_at = $9,
                       proposal_remedy = $10, proposal_refund_currency = $11, proposal_refund_minor = $12,
                       proposal_message = $13, replacement_agreed_at = $14, replacement_carrier = $15,
                       replacement_tracking = $16, replacement_shipped_at = $17,
                       seller_first_response_at = $18, updated_at = $19
                   WHERE order_id = $1 AND dispute_id = $2"#,
                order_id,
                dispute_id,
                codec::state_str(dispute.state),
                dispute.outcome.map(codec::outcome_str),
                item_return.map(|r| codec::return_status_str(r.status)),
                item_return.and_then(|r| r.carrier.as_deref()),
                item_return.and_then(|r| r.tracking_number.as_deref()),
                item_return.and_then(|r| r.agreed_at),
                item_return.and_then(|r| r.shipped_at),
                proposal_remedy.as_ref().map(|(kind, _, _)| *kind),
                proposal_remedy.as_ref().and_then(|(_, currency, _)| currency.as_deref()),
                proposal_remedy.as_ref().and_then(|(_, _, minor)| *minor),
                proposal.map(|p| p.message.as_str()),
                replacement.map(|r| r.agreed_at),
                replacement.and_then(|r| r.carrier.as_deref()),
                replacement.and_then(|r| r.tracking_number.as_deref()),
                replacement.and_then(|r| r.shipped_at),
                dispute.seller_first_response_at,
                dispute.updated_at,
            )
            .execute(&mut *conn)
            .instrument(statement("UPDATE", "disputes"))
            .await?;
        }
    }
    Ok(())
}

/// The change's events: numbered on in their dispute's history (when they join one), and
/// appended to the outbox numbered on in their order's stream from `sequenced`. One
/// multi-row statement per table; only the row count varies.
async fn save_events(
    conn: &mut PgConnection,
    write: &Write<'_>,
    sequenced: i64,
) -> Result<(), StoreError> {
    let changes = write.changes;
    let order_id = changes.order.get().order_id.as_str();
    let role = write.actor.role.as_str();
    // The history goes on from its last entry; a dispute this change opened has none.
    let opened = changes
        .dispute
        .as_ref()
        .filter(|d| d.is_new())
        .map(|d| d.get().dispute_id);
    let last_seq = match changes.history {
        Some(history) if opened != Some(history) => {
            sqlx::query_scalar!(
                r#"SELECT COALESCE(max(seq), 0) AS "seq!" FROM dispute_events
               WHERE order_id = $1 AND dispute_id = $2"#,
                order_id,
                history.0,
            )
            .fetch_one(&mut *conn)
            .instrument(statement("SELECT", "dispute_events"))
            .await?
        }
        _ => 0,
    };
    let numbered = || changes.events.iter().zip(last_seq + 1..);
    if let Some(history) = changes.history {
        let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO dispute_events (order_id, dispute_id, seq, kind, actor_role, actor_id, \
             occurred_at, payload, trace_id) ",
        );
        insert.push_values(numbered(), |mut row, (event, seq)| {
            row.push_bind(order_id)
                .push_bind(history.0)
                .push_bind(seq)
                .push_bind(event.event_type)
                .push_bind(role)
                .push_bind(write.actor.id.as_str())
                .push_bind(event.occurred_at)
                .push_bind(&event.payload)
                .push_bind(write.trace_id);
        });
        insert
            .build()
            .execute(&mut *conn)
            .instrument(statement("INSERT", "dispute_events"))
            .await?;
    }
    let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO outbox (event_id, event_type, order_id, order_sequence, dispute_id, dispute_seq, \
         actor_role, actor_id, occurred_at, payload, trace_id) ",
    );
    insert.push_values(
        numbered().zip(sequenced + 1..),
        |mut row, ((event, seq), order_sequence)| {
            row.push_bind(Uuid::now_v7())
                .push_bind(event.event_type)
                .push_bind(order_id)
                .push_bind(order_sequence)
                .push_bind(changes.history.map(|id| id.0))
                .push_bind(changes.history.map(|_| seq))
                .push_bind(role)
                .push_bind(write.actor.id.as_str())
                .push_bind(event.occurred_at)
                .push_bind(&event.payload)
                .push_bind(write.trace_id);
        },
    );
    insert
        .build()
        .execute(&mut *conn)
        .instrument(statement("INSERT", "outbox"))
        .await?;
    Ok(())
}
