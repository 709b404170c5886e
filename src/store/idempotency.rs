//! Idempotency keys: one remembered response per (actor, RPC, request id).
//!
//! The key is inserted first, in the command's own transaction. A concurrent duplicate's
//! insert waits on the unique index until the first transaction ends: if it committed,
//! the duplicate replays its response; if it rolled back (the command was refused), the
//! duplicate runs as if it were first. So a duplicate never executes twice and a refused
//! request is never remembered.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::domain::{Actor, RequestId};

#[derive(Debug, Clone)]
pub struct IdempotencyKey<'a> {
    pub actor: &'a Actor,
    pub rpc: &'static str,
    pub request_id: &'a RequestId,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First time: run the command, then [`complete`] the key.
    Fresh,
    /// Done before with the same payload: here is the response it got.
    Replay(Vec<u8>),
    /// Done before with a different payload.
    Reused,
}

pub async fn claim(
    conn: &mut PgConnection,
    key: &IdempotencyKey<'_>,
    request_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Claim, StoreError> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT DO NOTHING
           RETURNING true AS "inserted!""#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        request_hash,
        now,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query!(
        r#"SELECT request_hash, response FROM idempotency_keys
           WHERE actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
    )
    .fetch_one(&mut *conn)
    .await?;
    match row.response {
        _ if row.request_hash != request_hash => Ok(Claim::Reused),
        Some(response) => Ok(Claim::Replay(response)),
        None => Err(StoreError::Corrupt(
            "committed idempotency key without a response".into(),
        )),
    }
}

pub async fn complete(
    conn: &mut PgConnection,
    key: &IdempotencyKey<'_>,
    response: &[u8],
) -> Result<(), StoreError> {
    sqlx::query!(
        r#"UPDATE idempotency_keys SET response = $5
           WHERE actor_role = $1 AND actor_id = $2 AND rpc = $3 AND request_id = $4"#,
        key.actor.role.as_str(),
        key.actor.id,
        key.rpc,
        key.request_id.as_str(),
        response,
    )
    .execute(conn)
    .await?;
    Ok(())
}
