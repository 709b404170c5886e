//! Disputes: reads, keyset pages, locked loads and writes.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    IdempotencyKey, KeyState, Store, StoreError, Wait, codec, idempotency, orders::OrderRow,
};
use crate::domain::{
    Dispute, DisputeFilter, DisputeId, ItemReturn, ListOrder, Order, PartyId, Proposal, Replacement,
};

/// One row of `dispute_rows` (the dispute beside its order's facts; migration 9), as
/// every statement here projects it: [`dispute_query!`] holds the one column list.
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
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    protection_ends_at: DateTime<Utc>,
    currency_code: String,
    amount_minor: i64,
    refunded_minor: Option<i64>,
    settled_at: Option<DateTime<Utc>>,
    disputes_closed: bool,
    dispute_count: i32,
    /// The request's idempotency key, when a command's lock statement reads it (always
    /// NULL in a read).
    key_hash: Option<Vec<u8>>,
    key_reply: Option<serde_json::Value>,
}

/// A statement over `dispute_rows` aliased `d`, projecting the one column list into a
/// [`DisputeRow`], then `$after` (its FROM, WHERE, ORDER BY, locking). `keyed`: the key
/// columns read the idempotency key of the order `$1` named by `$3`–`$6` (actor role and
/// id, RPC, request id); otherwise they are NULL.
macro_rules! dispute_query {
    (keyed [$($after:tt)+] $(, $arg:expr)* $(,)?) => {
        dispute_query!(@ [r#", (SELECT k.request_hash FROM idempotency_keys k
                             WHERE k.order_id = $1 AND k.actor_role = $3 AND k.actor_id = $4
                               AND k.rpc = $5 AND k.request_id = $6) AS "key_hash?",
                            (SELECT k.reply FROM idempotency_keys k
                             WHERE k.order_id = $1 AND k.actor_role = $3 AND k.actor_id = $4
                               AND k.rpc = $5 AND k.request_id = $6) AS "key_reply?" "#]
            [$($after)+] $(, $arg)*)
    };
    ([$($after:tt)+] $(, $arg:expr)* $(,)?) => {
        dispute_query!(@ [r#", NULL::bytea AS "key_hash?", NULL::jsonb AS "key_reply?" "#]
            [$($after)+] $(, $arg)*)
    };
    (@ [$($keys:tt)+] [$($after:tt)+] $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            DisputeRow,
            r#"SELECT d.dispute_id AS "dispute_id!", d.order_id AS "order_id!", d.buyer_id AS "buyer_id!",
              d.seller_id AS "seller_id!", d.reason AS "reason!", d.remedy AS "remedy!",
              d.refund_currency, d.refund_minor, d.description AS "description!",
              d.evidence_urls AS "evidence_urls!", d.state AS "state!", d.outcome,
              d.return_status, d.return_carrier, d.return_tracking, d.return_agreed_at,
              d.return_shipped_at, d.proposal_remedy, d.proposal_refund_currency,
              d.proposal_refund_minor, d.proposal_message, d.replacement_agreed_at,
              d.replacement_carrier, d.replacement_tracking, d.replacement_shipped_at,
              d.seller_first_response_at, d.created_at AS "created_at!",
              d.updated_at AS "updated_at!", d.protection_ends_at AS "protection_ends_at!",
              d.currency_code AS "currency_code!", d.amount_minor AS "amount_minor!",
              d.refunded_minor, d.settled_at, d.disputes_closed AS "disputes_closed!",
              d.dispute_count AS "dispute_count!" "# + $($keys)+ + $($after)+
            $(, $arg)*
        )
    };
}

impl DisputeRow {
    /// The dispute and its order.
    fn split(self) -> Result<(Order, Dispute), StoreError> {
        let row = self;
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
        let dispute = Dispute {
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
        };
        Ok((order, dispute))
    }

    fn dispute(self) -> Result<Dispute, StoreError> {
        self.split().map(|(_, dispute)| dispute)
    }
}

impl Store {
    /// The dispute, in one statement. On Citus on the order the directory names (the
    /// directory's shard, then the order's), so the read goes to the order's shard alone; a
    /// dispute not in the directory (yet) is looked for and filed by [`Store::order_of`],
    /// then read again. On one node by the disputes' key (dispute_id, order_id) alone: a
    /// probe of the directory would only add work.
    pub async fn get_dispute(&self, dispute_id: DisputeId) -> Result<Option<Dispute>, StoreError> {
        let distributed = self.distributed().await?;
        let read = || async {
            if distributed {
                dispute_query!(
                    [r#"FROM dispute_rows d
                       WHERE d.dispute_id = $1
                         AND d.order_id = (SELECT order_id FROM dispute_directory WHERE dispute_id = $1)"#],
                    dispute_id.0
                )
                .fetch_optional(self.pool())
                .instrument(statement("SELECT", "disputes"))
                .await
            } else {
                dispute_query!(
                    ["FROM dispute_rows d WHERE d.dispute_id = $1"],
                    dispute_id.0
                )
                .fetch_optional(self.pool())
                .instrument(statement("SELECT", "disputes"))
                .await
            }
        };
        let row = match read().await? {
            Some(row) => Some(row),
            None if self.order_of(dispute_id).await?.is_some() => read().await?,
            None => None,
        };
        row.map(DisputeRow::dispute).transpose()
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
                dispute_query!(
                    [r#"FROM dispute_rows d
                       WHERE "#
                        + $scope
                        + r#"
                         AND ($2::text IS NULL OR d.buyer_id = $2)
                         AND ($3::text IS NULL OR d.seller_id = $3)
                         AND ($4::text[] IS NULL OR d.state = ANY($4))
                         AND ($5::uuid IS NULL OR d.dispute_id < $5)
                       ORDER BY d.dispute_id DESC
                       LIMIT $6"#],
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
                dispute_query!(
                    [r#"FROM dispute_rows d
                       WHERE "# + $scope + r#"
                         AND ($2::text IS NULL OR d.buyer_id = $2)
                         AND ($3::text IS NULL OR d.seller_id = $3)
                         AND ($4::text[] IS NULL OR d.state = ANY($4))
                         AND ($5::timestamptz IS NULL OR (d.updated_at, d.dispute_id) < ($5, $6))
                       ORDER BY d.updated_at DESC, d.dispute_id DESC
                       LIMIT $7"#],
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
        rows.into_iter().map(DisputeRow::dispute).collect()
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

/// A dispute locked by a command, with its order.
pub struct LockedDispute {
    pub order: Order,
    pub dispute: Dispute,
    /// The request's idempotency key as the statement's snapshot saw it: `None`, not
    /// answered before (as of that snapshot; see [`Store::saved_key`]).
    pub key: Option<KeyState>,
}

/// Locks a dispute and its order (`order_id`, found in the directory before the
/// transaction began) until the transaction ends, reads both and what `key` (when there is
/// one) was answered before. `None`: no such dispute on that order, or (`Wait::Skip`)
/// another transaction holds it.
pub async fn lock_dispute(
    conn: &mut PgConnection,
    order_id: &PartyId,
    dispute_id: DisputeId,
    key: Option<&IdempotencyKey>,
    wait: Wait,
) -> Result<Option<LockedDispute>, StoreError> {
    /// The statement, with its locking clause given.
    macro_rules! lock_dispute {
        ($locking:tt) => {
            dispute_query!(
                keyed
                    ["FROM dispute_rows d WHERE d.order_id = $1 AND d.dispute_id = $2 " + $locking],
                order_id.as_str(),
                dispute_id.0,
                key.map(|k| k.actor.role.as_str()),
                key.map(|k| k.actor.id.as_str()),
                key.map(|k| k.rpc),
                key.map(|k| k.request_id.as_str()),
            )
            .fetch_optional(&mut *conn)
            .await
        };
    }
    // Every statement is compiled (and its query data kept) in every build.
    let row = async {
        match wait {
            Wait::Skip => lock_dispute!("FOR UPDATE SKIP LOCKED"),
            Wait::Block if cfg!(feature = "test-without-row-locks") => lock_dispute!(""),
            Wait::Block => lock_dispute!("FOR UPDATE"),
        }
    }
    .instrument(statement("SELECT", "disputes"))
    .await?;
    let Some(mut row) = row else { return Ok(None) };
    let saved = match key {
        Some(key) => idempotency::found(key, row.key_hash.take(), row.key_reply.take())?,
        None => None,
    };
    let (order, dispute) = row.split()?;
    Ok(Some(LockedDispute {
        order,
        dispute,
        key: saved,
    }))
}

impl Store {
    /// The order `dispute_id` belongs to, read before a command's transaction so every
    /// statement in it names the order (on Citus, its shard). From the directory, written
    /// when the dispute opened; a dispute not (yet) in it — its command committed and the
    /// directory write had not run, or failed — is looked up among the disputes (on Citus,
    /// on every shard) and filed. `None`: no such dispute.
    pub async fn order_of(&self, dispute_id: DisputeId) -> Result<Option<PartyId>, StoreError> {
        let filed = sqlx::query_scalar!(
            "SELECT order_id FROM dispute_directory WHERE dispute_id = $1",
            dispute_id.0
        )
        .fetch_optional(self.pool())
        .instrument(statement("SELECT", "dispute_directory"))
        .await?;
        let order_id = match filed {
            Some(order_id) => order_id,
            None => {
                let found = sqlx::query_scalar!(
                    "SELECT order_id FROM disputes WHERE dispute_id = $1",
                    dispute_id.0
                )
                .fetch_optional(self.pool())
                .instrument(statement("SELECT", "disputes"))
                .await?;
                let Some(order_id) = found else {
                    return Ok(None);
                };
                let order_id = PartyId::parse(&order_id).map_err(StoreError::Corrupt)?;
                self.file_dispute(dispute_id, &order_id).await?;
                return Ok(Some(order_id));
            }
        };
        PartyId::parse(&order_id)
            .map(Some)
            .map_err(StoreError::Corrupt)
    }

    /// Files a dispute in the directory on its own, outside any command: on Citus after
    /// the command that opened it committed, and for a dispute found missing from it.
    pub async fn file_dispute(
        &self,
        dispute_id: DisputeId,
        order_id: &PartyId,
    ) -> Result<(), StoreError> {
        file_dispute(self.pool(), dispute_id, order_id).await
    }
}

/// Files a dispute in the directory. On one node a new dispute is filed in the transaction
/// that opens it; on Citus the directory is keyed by dispute, so its row lives on another
/// shard than the dispute's, and writing it in the command's transaction would commit in
/// two phases: it is filed once the command committed ([`Store::file_dispute`]; README,
/// "Running on Citus"). Filing twice is filing once.
pub async fn file_dispute<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    dispute_id: DisputeId,
    order_id: &PartyId,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO dispute_directory (dispute_id, order_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        dispute_id.0,
        order_id.as_str(),
    )
    .execute(executor)
    .instrument(statement("INSERT", "dispute_directory"))
    .await?;
    Ok(())
}

/// The order's active dispute, if it has one (at most one: a unique index says so).
pub(super) async fn active_dispute_id(
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
