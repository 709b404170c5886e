//! Disputes: reads, keyset pages, locked loads and writes.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{IdempotencyKey, NewEvent, Store, StoreError, codec, orders::OrderRow};
use crate::domain::{
    Actor, Change, Dispute, DisputeFilter, DisputeId, ItemReturn, ListOrder, Order, PartyId,
    Proposal, Replacement, Settlement,
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
    replacement_agreed_at: Option<DateTime<Utc>>,
    replacement_carrier: Option<String>,
    replacement_tracking: Option<String>,
    replacement_shipped_at: Option<DateTime<Utc>>,
    seller_first_response_at: Option<DateTime<Utc>>,
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
            replacement: row.replacement_agreed_at.map(|agreed_at| Replacement {
                agreed_at,
                carrier: row.replacement_carrier,
                tracking_number: row.replacement_tracking,
                shipped_at: row.replacement_shipped_at,
            }),
            seller_first_response_at: row.seller_first_response_at,
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

    /// One page of disputes matching `filter`, in its order. One statement per scope (an
    /// order, a buyer, a seller, none) and order, so each keeps its index plan whatever
    /// the plan cache does; the other filters are checked on the rows the index yields.
    pub async fn list_disputes(
        &self,
        filter: &DisputeFilter,
        limit: i64,
    ) -> Result<Vec<Dispute>, StoreError> {
        let states = state_names(filter);
        let after_id = filter.after.map(|p| p.dispute_id.0);
        let after_updated = filter.after.map(|p| p.updated_at);
        let (scope, by) = scope_of(filter);
        macro_rules! by_creation {
            ($scope:tt) => {
                sqlx::query_as!(
                    DisputeRow,
                    r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                      d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                      d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                      d.return_agreed_at, d.return_shipped_at, d.proposal_remedy,
                      d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message,
                      d.replacement_agreed_at, d.replacement_carrier, d.replacement_tracking,
                      d.replacement_shipped_at, d.seller_first_response_at,
                      o.protection_ends_at, d.created_at, d.updated_at
                       FROM disputes d JOIN orders o USING (order_id)
                       WHERE "# + $scope + r#"
                         AND ($2::text IS NULL OR d.buyer_id = $2)
                         AND ($3::text IS NULL OR d.seller_id = $3)
                         AND ($4::text[] IS NULL OR d.state = ANY($4))
                         AND ($5::uuid IS NULL OR d.dispute_id < $5)
                       ORDER BY d.dispute_id DESC
                       LIMIT $6"#,
                    scope,
                    filter.buyer_id,
                    filter.seller_id,
                    states.as_deref(),
                    after_id,
                    limit,
                )
                .fetch_all(self.pool())
                .await
            };
        }
        macro_rules! by_change {
            ($scope:tt) => {
                sqlx::query_as!(
                    DisputeRow,
                    r#"SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
                      d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                      d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                      d.return_agreed_at, d.return_shipped_at, d.proposal_remedy,
                      d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message,
                      d.replacement_agreed_at, d.replacement_carrier, d.replacement_tracking,
                      d.replacement_shipped_at, d.seller_first_response_at,
                      o.protection_ends_at, d.created_at, d.updated_at
                       FROM disputes d JOIN orders o USING (order_id)
                       WHERE "# + $scope + r#"
                         AND ($2::text IS NULL OR d.buyer_id = $2)
                         AND ($3::text IS NULL OR d.seller_id = $3)
                         AND ($4::text[] IS NULL OR d.state = ANY($4))
                         AND ($5::timestamptz IS NULL OR (d.updated_at, d.dispute_id) < ($5, $6))
                       ORDER BY d.updated_at DESC, d.dispute_id DESC
                       LIMIT $7"#,
                    scope,
                    filter.buyer_id,
                    filter.seller_id,
                    states.as_deref(),
                    after_updated,
                    after_id,
                    limit,
                )
                .fetch_all(self.pool())
                .await
            };
        }
        let rows = async {
            match (by, filter.order) {
                (Scope::Order, ListOrder::Created) => by_creation!("d.order_id = $1"),
                (Scope::Buyer, ListOrder::Created) => by_creation!("d.buyer_id = $1"),
                (Scope::Seller, ListOrder::Created) => by_creation!("d.seller_id = $1"),
                (Scope::All, ListOrder::Created) => by_creation!("$1::text IS NULL"),
                (Scope::Order, ListOrder::Updated) => by_change!("d.order_id = $1"),
                (Scope::Buyer, ListOrder::Updated) => by_change!("d.buyer_id = $1"),
                (Scope::Seller, ListOrder::Updated) => by_change!("d.seller_id = $1"),
                (Scope::All, ListOrder::Updated) => by_change!("$1::text IS NULL"),
            }
        }
        .instrument(statement("SELECT", "disputes"))
        .await?;
        rows.into_iter().map(Dispute::try_from).collect()
    }

    /// How many disputes match `filter` (its position aside) when it is scoped to an
    /// order, a buyer or a seller — counted from that index; `None` for an unscoped list,
    /// which would mean a scan.
    pub async fn count_disputes(&self, filter: &DisputeFilter) -> Result<Option<i64>, StoreError> {
        let states = state_names(filter);
        let (scope, by) = scope_of(filter);
        macro_rules! count {
            ($scope:tt) => {
                sqlx::query_scalar!(
                    r#"SELECT count(*) AS "n!" FROM disputes d
                       WHERE "#
                        + $scope
                        + r#"
                         AND ($2::text IS NULL OR d.buyer_id = $2)
                         AND ($3::text IS NULL OR d.seller_id = $3)
                         AND ($4::text[] IS NULL OR d.state = ANY($4))"#,
                    scope,
                    filter.buyer_id,
                    filter.seller_id,
                    states.as_deref(),
                )
                .fetch_one(self.pool())
                .await
            };
        }
        let n = async {
            match by {
                Scope::Order => count!("d.order_id = $1").map(Some),
                Scope::Buyer => count!("d.buyer_id = $1").map(Some),
                Scope::Seller => count!("d.seller_id = $1").map(Some),
                Scope::All => Ok(None),
            }
        }
        .instrument(statement("SELECT", "disputes"))
        .await?;
        Ok(n)
    }
}

/// What a listing is confined to, by the index that serves it.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Order,
    Buyer,
    Seller,
    All,
}

/// The narrowest scope of `filter` and its value.
fn scope_of(filter: &DisputeFilter) -> (Option<&str>, Scope) {
    match (&filter.order_id, &filter.buyer_id, &filter.seller_id) {
        (Some(id), _, _) => (Some(id), Scope::Order),
        (None, Some(id), _) => (Some(id), Scope::Buyer),
        (None, None, Some(id)) => (Some(id), Scope::Seller),
        (None, None, None) => (None, Scope::All),
    }
}

fn state_names(filter: &DisputeFilter) -> Option<Vec<String>> {
    filter.states.as_ref().map(|states| {
        states
            .iter()
            .map(|&state| codec::state_str(state).to_owned())
            .collect()
    })
}

/// A dispute and its order as one row, both locked.
struct LockedRow {
    claimed: bool,
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
    dispute_id: Uuid,
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
    replacement_agreed_at: Option<DateTime<Utc>>,
    replacement_carrier: Option<String>,
    replacement_tracking: Option<String>,
    replacement_shipped_at: Option<DateTime<Utc>>,
    seller_first_response_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A dispute locked by a command, with its order.
pub struct LockedDispute {
    pub order: Order,
    pub dispute: Dispute,
    /// Whether the statement claimed the request's idempotency key; when not, the key was
    /// claimed by a committed transaction ([`super::claimed_before`] tells what it saved).
    pub claimed: bool,
}

impl TryFrom<LockedRow> for LockedDispute {
    type Error = StoreError;

    fn try_from(row: LockedRow) -> Result<Self, StoreError> {
        let order = Order::try_from(OrderRow {
            order_id: row.order_id.clone(),
            buyer_id: row.buyer_id.clone(),
            seller_id: row.seller_id.clone(),
            currency_code: row.currency_code,
            amount_minor: row.amount_minor,
            protection_ends_at: row.protection_ends_at,
            refunded_minor: row.refunded_minor,
            settled_at: row.settled_at,
            disputes_closed: row.disputes_closed,
            dispute_count: row.dispute_count,
        })?;
        let dispute = Dispute::try_from(DisputeRow {
            dispute_id: row.dispute_id,
            order_id: row.order_id,
            buyer_id: row.buyer_id,
            seller_id: row.seller_id,
            reason: row.reason,
            remedy: row.remedy,
            refund_currency: row.refund_currency,
            refund_minor: row.refund_minor,
            description: row.description,
            evidence_urls: row.evidence_urls,
            state: row.state,
            outcome: row.outcome,
            return_status: row.return_status,
            return_carrier: row.return_carrier,
            return_tracking: row.return_tracking,
            return_agreed_at: row.return_agreed_at,
            return_shipped_at: row.return_shipped_at,
            proposal_remedy: row.proposal_remedy,
            proposal_refund_currency: row.proposal_refund_currency,
            proposal_refund_minor: row.proposal_refund_minor,
            proposal_message: row.proposal_message,
            replacement_agreed_at: row.replacement_agreed_at,
            replacement_carrier: row.replacement_carrier,
            replacement_tracking: row.replacement_tracking,
            replacement_shipped_at: row.replacement_shipped_at,
            seller_first_response_at: row.seller_first_response_at,
            protection_ends_at: row.protection_ends_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })?;
        Ok(LockedDispute {
            order,
            dispute,
            claimed: row.claimed,
        })
    }
}

/// Locks a dispute and its order until the transaction ends, reads both, and claims the
/// request's key once the locks are held: one round trip. The order is locked first, as
/// by every other command (the locking clause names it first); a row changed while this
/// statement waited for it is read in its new version (PostgreSQL re-reads every locked
/// row), so no stale snapshot reaches the domain.
pub async fn lock_dispute(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<Option<LockedDispute>, StoreError> {
    /// The statement, with its locking clause given (a test build takes none).
    macro_rules! lock_dispute {
        ($locking:tt) => {
    sqlx::query_as!(
                LockedRow,
                r#"WITH locked AS (
                     SELECT o.order_id, o.buyer_id, o.seller_id, o.currency_code, o.amount_minor,
                            o.protection_ends_at, o.refunded_minor, o.settled_at, o.disputes_closed,
                            o.dispute_count, d.dispute_id, d.reason, d.remedy, d.refund_currency,
                            d.refund_minor, d.description, d.evidence_urls, d.state, d.outcome,
                            d.return_status, d.return_carrier, d.return_tracking, d.return_agreed_at,
                            d.return_shipped_at, d.proposal_remedy, d.proposal_refund_currency,
                            d.proposal_refund_minor, d.proposal_message,
                      d.replacement_agreed_at, d.replacement_carrier, d.replacement_tracking,
                      d.replacement_shipped_at, d.seller_first_response_at, d.created_at, d.updated_at
                     FROM orders o JOIN disputes d ON d.order_id = o.order_id
                     WHERE d.dispute_id = $1 "#
                    + $locking
                    + r#"
                   ), claim AS (
                     INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at)
                     SELECT $2, $3, $4, $5, $6, $7 FROM locked
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                   )
                   SELECT (SELECT count(*) FROM claim) = 1 AS "claimed!",
                          order_id AS "order_id!", buyer_id AS "buyer_id!", seller_id AS "seller_id!",
                          currency_code AS "currency_code!", amount_minor AS "amount_minor!",
                          protection_ends_at AS "protection_ends_at!", refunded_minor, settled_at,
                          disputes_closed AS "disputes_closed!", dispute_count AS "dispute_count!",
                          dispute_id AS "dispute_id!", reason AS "reason!", remedy AS "remedy!",
                          refund_currency, refund_minor, description AS "description!",
                          evidence_urls AS "evidence_urls!", state AS "state!", outcome, return_status,
                          return_carrier, return_tracking, return_agreed_at, return_shipped_at,
                          proposal_remedy, proposal_refund_currency, proposal_refund_minor,
                          proposal_message, replacement_agreed_at, replacement_carrier,
                          replacement_tracking, replacement_shipped_at, seller_first_response_at,
                          created_at AS "created_at!", updated_at AS "updated_at!"
                   FROM locked"#,
                dispute_id.0,
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
    async {
        if cfg!(feature = "test-without-row-locks") {
            lock_dispute!("").fetch_optional(&mut *conn).await
        } else {
            lock_dispute!("FOR UPDATE OF o, d")
                .fetch_optional(&mut *conn)
                .await
        }
    }
    .instrument(statement("SELECT", "disputes"))
    .await?
    .map(LockedDispute::try_from)
    .transpose()
}

/// Locks a dispute and its order unless another transaction holds either (then `None`:
/// someone else is working on it; the deadline worker's replicas share work this way).
pub async fn try_lock_dispute(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
) -> Result<Option<(Order, Dispute)>, StoreError> {
    sqlx::query_as!(
        LockedRow,
        r#"SELECT false AS "claimed!", o.order_id, o.buyer_id, o.seller_id, o.currency_code,
                  o.amount_minor, o.protection_ends_at, o.refunded_minor, o.settled_at,
                  o.disputes_closed, o.dispute_count, d.dispute_id, d.reason, d.remedy,
                  d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state,
                  d.outcome, d.return_status, d.return_carrier, d.return_tracking,
                  d.return_agreed_at, d.return_shipped_at, d.proposal_remedy,
                  d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message,
                      d.replacement_agreed_at, d.replacement_carrier, d.replacement_tracking,
                      d.replacement_shipped_at, d.seller_first_response_at,
                  d.created_at, d.updated_at
           FROM orders o JOIN disputes d ON d.order_id = o.order_id
           WHERE d.dispute_id = $1
           FOR UPDATE OF o, d SKIP LOCKED"#,
        dispute_id.0,
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "disputes"))
    .await?
    .map(|row| LockedDispute::try_from(row).map(|locked| (locked.order, locked.dispute)))
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
                      d.replacement_agreed_at, d.replacement_carrier, d.replacement_tracking,
                      d.replacement_shipped_at, d.seller_first_response_at,
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

/// Writes a change to an existing dispute in one statement: the dispute's mutable facts,
/// its order's, the ledger entry when the change settled the funds, the `events` (all of
/// this dispute, by `actor`, numbered on from its history), and the reply saved with the
/// claimed key when there is one (the deadline worker has none).
pub async fn write_change(
    conn: &mut PgConnection,
    change: &Change,
    actor: &Actor,
    events: &[NewEvent<'_>],
    key: Option<(&IdempotencyKey, &serde_json::Value)>,
) -> Result<(), StoreError> {
    let Change {
        order,
        dispute,
        settlement: settled,
        ..
    } = change;
    let item_return = dispute.item_return.as_ref();
    let proposal = dispute.proposal.as_ref();
    let replacement = dispute.replacement.as_ref();
    let (proposal_remedy, proposal_currency, proposal_minor) = match proposal {
        Some(p) => {
            let (kind, currency, minor) = codec::remedy_columns(p.remedy);
            (Some(kind), currency, minor)
        }
        None => (None, None, None),
    };
    let settlement = order.settlement.as_ref();
    let trace_id = events.iter().find_map(|e| e.trace_id);
    let completed = sqlx::query_scalar!(
        r#"WITH changed AS (
             UPDATE disputes
             SET state = $2, outcome = $3, return_status = $4, return_carrier = $5,
                 return_tracking = $6, return_agreed_at = $7, return_shipped_at = $8,
                 proposal_remedy = $9, proposal_refund_currency = $10, proposal_refund_minor = $11,
                 proposal_message = $12, updated_at = $13, replacement_agreed_at = $37,
                 replacement_carrier = $38, replacement_tracking = $39, replacement_shipped_at = $40,
                 seller_first_response_at = $41
             WHERE dispute_id = $1
           ), ord AS (
             UPDATE orders
             SET funds_state = $15, refunded_minor = $16, released_minor = $17, settled_at = $18,
                 disputes_closed = $19, dispute_count = $20, protection_ends_at = $21, updated_at = $13
             WHERE order_id = $14
           ), ledger AS (
             INSERT INTO settlements (order_id, dispute_id, currency_code, amount_minor, refund_minor,
                                      release_minor, actor_role, actor_id, settled_at)
             SELECT $14, $1, $22, $23, $16, $17, $24, $25, $18 WHERE $26::bool
           ), events AS (
             SELECT e.event_id, e.kind, e.occurred_at, e.payload, e.n, last.seq + e.n AS seq
             FROM (SELECT COALESCE(max(seq), 0) AS seq FROM dispute_events WHERE dispute_id = $1) last,
                  unnest($27::uuid[], $28::text[], $29::timestamptz[], $30::jsonb[])
                    WITH ORDINALITY AS e (event_id, kind, occurred_at, payload, n)
           ), history AS (
             INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at,
                                         payload, trace_id)
             SELECT $1, seq, kind, $24, $25, occurred_at, payload, $31 FROM events
           ), outboxed AS (
             INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role,
                                 actor_id, occurred_at, payload, trace_id)
             SELECT event_id, kind, $14, $1, seq, $24, $25, occurred_at, payload, $31
             FROM events ORDER BY n
           ), completed AS (
             UPDATE idempotency_keys SET reply = $36
             WHERE actor_role = $32 AND actor_id = $33 AND rpc = $34 AND request_id = $35
               AND reply IS NULL
             RETURNING 1
           )
           SELECT count(*) AS "completed!" FROM completed"#,
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
        order.order_id.as_str(),
        order.funds_state().as_str(),
        settlement.map(Settlement::refund_minor),
        settlement.map(Settlement::release_minor),
        settlement.map(|s| s.settled_at),
        order.disputes_closed,
        order.dispute_count,
        order.protection_ends_at,
        order.amount.currency.as_str(),
        order.amount.minor,
        actor.role.as_str(),
        actor.id,
        settled.is_some(),
        &events.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>(),
        &events.iter().map(|e| e.event_type.to_owned()).collect::<Vec<_>>(),
        &events.iter().map(|e| e.occurred_at).collect::<Vec<_>>(),
        &events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        trace_id,
        key.map(|(k, _)| k.actor.role.as_str()),
        key.map(|(k, _)| k.actor.id.as_str()),
        key.map(|(k, _)| k.rpc),
        key.map(|(k, _)| k.request_id.as_str()),
        key.map(|(_, reply)| reply),
        replacement.map(|r| r.agreed_at),
        replacement.and_then(|r| r.carrier.clone()),
        replacement.and_then(|r| r.tracking_number.clone()),
        replacement.and_then(|r| r.shipped_at),
        dispute.seller_first_response_at,
    )
    .fetch_one(conn)
    .instrument(statement("UPDATE", "disputes"))
    .await?;
    match key {
        Some(_) => super::idempotency::exactly_one_key(completed.try_into().unwrap_or(u64::MAX)),
        None => Ok(()),
    }
}
