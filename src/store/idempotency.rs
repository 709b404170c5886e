//! Idempotency keys: one remembered reply per (actor, RPC, request id). The reply is a
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
use crate::domain::{Actor, RequestId};

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
    /// First time: run the command, then [`complete`] the key.
    Fresh,
    /// Done before with the same payload: here is the reply it got.
    Saved(serde_json::Value),
    /// Done before with a different payload.
    Reused,
}

pub async fn claim(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    now: DateTime<Utc>,
) -> Result<KeyState, StoreError> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT DO NOTHING
           RETURNING true AS "inserted!""#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        key.request_hash,
        now,
    )
    .fetch_optional(&mut *conn)
    .instrument(statement("INSERT", "idempotency_keys")).await?;
    if inserted.is_some() {
        return Ok(KeyState::Fresh);
    }
    let row = sqlx::query!(
        r#"SELECT request_hash, reply FROM idempotency_keys
           WHERE actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
    )
    .fetch_one(&mut *conn)
    .instrument(statement("SELECT", "idempotency_keys"))
    .await?;
    match row.reply {
        _ if row.request_hash != key.request_hash => Ok(KeyState::Reused),
        Some(reply) => Ok(KeyState::Saved(reply)),
        // Committed keys always have a reply; one without was written by a version
        // before replies were saved as snapshots (README, "Decisions").
        None => Err(StoreError::Corrupt(
            "committed idempotency key without a reply".into(),
        )),
    }
}

/// Saves the reply of the key this transaction claimed: exactly one row, still without
/// a reply, or the claim was not ours.
pub async fn complete(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    reply: &serde_json::Value,
) -> Result<(), StoreError> {
    let done = sqlx::query!(
        r#"UPDATE idempotency_keys SET reply = $5
           WHERE actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4
             AND reply IS NULL"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        reply,
    )
    .execute(conn)
    .instrument(statement("UPDATE", "idempotency_keys"))
    .await?;
    exactly_one_key(done.rows_affected())
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
