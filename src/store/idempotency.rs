//! Idempotency keys: one remembered reply per (order, actor, RPC, request id), stored
//! with the order they act on (on Citus, on the order's shard). The reply is a
//! domain snapshot (JSON) the edge encodes the same way every time, so a retry gets the
//! first answer byte for byte.
//!
//! A key is written once, with its reply, by the last statement of the command that
//! answered it ([`super::save`]), so only a committed command leaves a key and a refused
//! request is never remembered. A command reads its key in its lock statement: a key
//! found there is replayed. A duplicate running at the same time waits on the order's
//! lock, and the snapshot its lock statement read may predate the first's commit; what it
//! then decides does not count: its key insert meets the committed key (or waits for the
//! first to end), and it rolls back and replays; a refusal looks for the key once more
//! ([`Store::saved_key`]) before it is returned. So a duplicate never executes twice.

use tracing::Instrument;

use super::statement;

use super::{Store, StoreError};
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

/// What a lock statement found of a request's key: `None` when it found no key, else
/// the reply saved for the same payload, or [`KeyState::Reused`] for another one.
pub(super) fn found(
    key: &IdempotencyKey,
    request_hash: Option<Vec<u8>>,
    reply: Option<serde_json::Value>,
) -> Result<Option<KeyState>, StoreError> {
    match (request_hash, reply) {
        (None, _) => Ok(None),
        (Some(hash), _) if hash != key.request_hash => Ok(Some(KeyState::Reused)),
        (Some(_), Some(reply)) => Ok(Some(KeyState::Saved(reply))),
        // Every key is written with its reply; one without was written by a version
        // before replies were saved as snapshots (README, "Decisions").
        (Some(_), None) => Err(StoreError::Corrupt(
            "committed idempotency key without a reply".into(),
        )),
    }
}

impl Store {
    /// The key as committed now, read in a statement of its own (so after a wait its
    /// snapshot sees what the command waited for): after a refusal, and after a key insert
    /// that met a committed key.
    pub async fn saved_key(
        &self,
        order_id: &PartyId,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyState>, StoreError> {
        saved_key(self.pool(), order_id, key).await
    }
}

async fn saved_key(
    conn: impl sqlx::PgExecutor<'_>,
    order_id: &PartyId,
    key: &IdempotencyKey,
) -> Result<Option<KeyState>, StoreError> {
    let row = sqlx::query!(
        r#"SELECT request_hash, reply FROM idempotency_keys
           WHERE order_id = $5 AND actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        order_id.as_str(),
    )
    .fetch_optional(conn)
    .instrument(statement("SELECT", "idempotency_keys"))
    .await?;
    match row {
        None => Ok(None),
        Some(row) => found(key, Some(row.request_hash), row.reply),
    }
}
