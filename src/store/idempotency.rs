//! Idempotency keys: one remembered reply per (order, actor, RPC, request id), stored
//! with the order they act on (on Citus, on the order's shard). The reply is a
//! domain snapshot (JSON) the edge encodes the same way every time, so a retry gets the
//! first answer byte for byte.
//!
//! The key is inserted in the command's own transaction, after the command has locked its
//! order. A concurrent duplicate waits on the lock (or on the key's unique index) until
//! the first transaction ends: if it committed, the duplicate replays its response; if it
//! rolled back (the command was refused), the duplicate runs as if it were first. So a
//! duplicate never executes twice and a refused request is never remembered.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::domain::{Actor, PartyId, RequestId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub actor: Actor,
    pub rpc: &'static str,
    pub request_id: RequestId,
    /// Digest of the whole request: the same key with another payload is refused.
    pub request_hash: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Done before with the same payload: here is the reply it got.
    Saved(serde_json::Value),
    /// Done before with a different payload.
    Reused,
}

/// Claims `key` on `order_id` for this transaction, once the command holds its locks
/// ([`super::lock_order`], [`super::lock_dispute`]). `false`: another transaction holds it
/// and has committed (one still in flight makes this wait for its end).
pub(super) async fn claim(
    conn: &mut PgConnection,
    order_id: &PartyId,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (order_id, actor_role, actor_id, rpc, request_id, request_hash, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT DO NOTHING
           RETURNING true AS "claimed!""#,
        order_id.as_str(),
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        key.request_hash.as_slice(),
        now,
    )
    .fetch_optional(&mut *conn)
    .instrument(statement("INSERT", "idempotency_keys"))
    .await?;
    Ok(claimed.is_some())
}

/// What became of a key the command could not [`claim`]: another transaction holds it,
/// committed. Read in a statement of its own, so its snapshot sees the key the claim
/// collided with.
pub async fn claimed_before(
    conn: &mut PgConnection,
    order_id: &PartyId,
    key: &IdempotencyKey,
) -> Result<KeyState, StoreError> {
    let row = sqlx::query!(
        r#"SELECT request_hash, reply FROM idempotency_keys
           WHERE order_id = $5 AND actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        order_id.as_str(),
    )
    .fetch_optional(&mut *conn)
    .instrument(statement("SELECT", "idempotency_keys"))
    .await?;
    match row {
        // Purged by retention between the claim and this read: a retry starts afresh.
        None => Err(StoreError::Contended(
            "the request's idempotency key expired while it was being replayed",
        )),
        Some(row) if row.request_hash != key.request_hash => Ok(KeyState::Reused),
        Some(row) => match row.reply {
            Some(reply) => Ok(KeyState::Saved(reply)),
            // Committed keys always have a reply; one without was written by a version
            // before replies were saved as snapshots (README, "Decisions").
            None => Err(StoreError::Corrupt(
                "committed idempotency key without a reply".into(),
            )),
        },
    }
}

/// Completing a claimed key touches exactly one row: the key this transaction inserted,
/// still without a reply. Anything else means the claim was not ours.
pub(super) fn exactly_one_key(rows: u64) -> Result<(), StoreError> {
    match rows {
        1 => Ok(()),
        n => Err(StoreError::Corrupt(format!(
            "completing an idempotency key touched {n} rows, not 1"
        ))),
    }
}
