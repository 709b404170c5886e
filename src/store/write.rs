//! The one writer: everything a command changes, written in one statement (one round
//! trip) — the order (new or changed), the dispute (new or changed), the settlement
//! ledger's row when the change settled the funds, the events (numbered on in their
//! dispute's history, and appended to the outbox), and the reply saved with the request's
//! claimed key. Every command goes through [`save`] (README, "Architecture").

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
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
    /// The reply to save with the key the command claimed (the worker claims none).
    pub reply: Option<(&'a IdempotencyKey, serde_json::Value)>,
}

/// What [`save`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// A new order's id was taken meanwhile (by a concurrent registration, whose
    /// transaction this statement waited for): nothing was written.
    OrderExists,
}

/// The statement's span, named after the main row it writes.
fn statement_of(changes: &Changes) -> tracing::Span {
    match (&changes.dispute, &changes.order) {
        (Some(Row::New(_)), _) => statement("INSERT", "disputes"),
        (Some(Row::Changed(_)), _) => statement("UPDATE", "disputes"),
        (_, Row::New(_)) => statement("INSERT", "orders"),
        (_, Row::Changed(_)) => statement("UPDATE", "orders"),
        _ if changes.events.is_empty() => statement("UPDATE", "idempotency_keys"),
        _ => statement("INSERT", "outbox"),
    }
}

/// Writes `write` in one statement.
pub async fn save(conn: &mut PgConnection, write: &Write<'_>) -> Result<Saved, StoreError> {
    let changes = write.changes;
    let order = changes.order.get();
    let new_order = changes.order.is_new();
    let settlement = order.settlement.as_ref();
    let dispute = changes.dispute.as_ref().map(Row::get);
    let new_dispute = changes.dispute.as_ref().is_some_and(Row::is_new);
    let changed_dispute = changes.dispute.as_ref().is_some_and(Row::is_changed);
    let item_return = dispute.and_then(|d| d.item_return.as_ref());
    let proposal = dispute.and_then(|d| d.proposal.as_ref());
    let replacement = dispute.and_then(|d| d.replacement.as_ref());
    let remedy = dispute.map(|d| codec::remedy_columns(d.remedy));
    let proposal_remedy = proposal.map(|p| codec::remedy_columns(p.remedy));
    let events = &changes.events;
    let key = write.reply.as_ref().map(|(key, _)| *key);
    let row = sqlx::query!(
        r#"WITH new_order AS (
             INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor,
                                 protection_ends_at, registered_protection_ends_at, created_at,
                                 updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $6, $7, $7 WHERE $8
             ON CONFLICT (order_id) DO NOTHING
             RETURNING order_id
           ), changed_order AS (
             UPDATE orders
             SET funds_state = $10, refunded_minor = $11, released_minor = $12, settled_at = $13,
                 disputes_closed = $14, dispute_count = $15, protection_ends_at = $6, updated_at = $7
             WHERE order_id = $1 AND $9
           ), new_dispute AS (
             INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy,
                                   refund_currency, refund_minor, description, evidence_urls, state,
                                   outcome, return_status, return_carrier, return_tracking,
                                   return_agreed_at, return_shipped_at, proposal_remedy,
                                   proposal_refund_currency, proposal_refund_minor, proposal_message,
                                   replacement_agreed_at, replacement_carrier, replacement_tracking,
                                   replacement_shipped_at, seller_first_response_at, created_at,
                                   updated_at)
             SELECT $16, $1, $2, $3, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31,
                    $32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42
             WHERE $17
           ), changed_dispute AS (
             UPDATE disputes
             SET state = $25, outcome = $26, return_status = $27, return_carrier = $28,
                 return_tracking = $29, return_agreed_at = $30, return_shipped_at = $31,
                 proposal_remedy = $32, proposal_refund_currency = $33, proposal_refund_minor = $34,
                 proposal_message = $35, replacement_agreed_at = $36, replacement_carrier = $37,
                 replacement_tracking = $38, replacement_shipped_at = $39,
                 seller_first_response_at = $40, updated_at = $42
             WHERE dispute_id = $16 AND $18
           ), ledger AS (
             INSERT INTO settlements (order_id, dispute_id, currency_code, amount_minor, refund_minor,
                                      release_minor, actor_role, actor_id, settled_at)
             SELECT $1, $16, $4, $5, $11, $12, $43, $44, $13 WHERE $45
           ), events AS (
             SELECT e.event_id, e.kind, e.occurred_at, e.payload, e.n, last.seq + e.n AS seq
             FROM (SELECT COALESCE(max(seq), 0) AS seq FROM dispute_events WHERE dispute_id = $46) last,
                  unnest($47::uuid[], $48::text[], $49::timestamptz[], $50::jsonb[])
                    WITH ORDINALITY AS e (event_id, kind, occurred_at, payload, n)
             WHERE NOT $8 OR EXISTS (SELECT 1 FROM new_order)
           ), history AS (
             INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at,
                                         payload, trace_id)
             SELECT $46, seq, kind, $43, $44, occurred_at, payload, $51
             FROM events WHERE $46::uuid IS NOT NULL
           ), outboxed AS (
             INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role,
                                 actor_id, occurred_at, payload, trace_id)
             SELECT event_id, kind, $1, $46, CASE WHEN $46::uuid IS NOT NULL THEN seq END, $43, $44,
                    occurred_at, payload, $51
             FROM events ORDER BY n
           ), completed AS (
             UPDATE idempotency_keys SET reply = $56
             WHERE actor_role = $52 AND actor_id = $53 AND rpc = $54 AND request_id = $55
               AND reply IS NULL AND (NOT $8 OR EXISTS (SELECT 1 FROM new_order))
             RETURNING 1
           )
           SELECT NOT $8 OR EXISTS (SELECT 1 FROM new_order) AS "written!",
                  (SELECT count(*) FROM completed) AS "completed!""#,
        order.order_id.as_str(),
        order.buyer_id.as_str(),
        order.seller_id.as_str(),
        order.amount.currency.as_str(),
        order.amount.minor,
        order.protection_ends_at,
        write.now,
        new_order,
        changes.order.is_changed(),
        order.funds_state().as_str(),
        settlement.map(Settlement::refund_minor),
        settlement.map(Settlement::release_minor),
        settlement.map(|s| s.settled_at),
        order.disputes_closed,
        order.dispute_count,
        dispute.map(|d| d.dispute_id.0),
        new_dispute,
        changed_dispute,
        dispute.map(|d| codec::reason_str(d.reason)),
        remedy.as_ref().map(|(kind, _, _)| *kind),
        remedy.as_ref().and_then(|(_, currency, _)| currency.as_deref()),
        remedy.as_ref().and_then(|(_, _, minor)| *minor),
        dispute.map(|d| d.description.as_str()),
        dispute.map(|d| d.evidence_urls.as_slice()),
        dispute.map(|d| codec::state_str(d.state)),
        dispute.and_then(|d| d.outcome.map(codec::outcome_str)),
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
        dispute.and_then(|d| d.seller_first_response_at),
        dispute.map(|d| d.created_at),
        dispute.map(|d| d.updated_at),
        write.actor.role.as_str(),
        write.actor.id,
        changes.settled,
        changes.history.map(|id| id.0),
        &events.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>(),
        &events.iter().map(|e| e.event_type.to_owned()).collect::<Vec<_>>(),
        &events.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
        &events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        write.trace_id,
        key.map(|k| k.actor.role.as_str()),
        key.map(|k| k.actor.id.as_str()),
        key.map(|k| k.rpc),
        key.map(|k| k.request_id.as_str()),
        write.reply.as_ref().map(|(_, reply)| reply),
    )
    .fetch_one(conn)
    .instrument(statement_of(changes))
    .await?;
    if !row.written {
        return Ok(Saved::OrderExists);
    }
    if key.is_some() {
        super::idempotency::exactly_one_key(row.completed.try_into().unwrap_or(u64::MAX))?;
    }
    Ok(Saved::Written)
}
