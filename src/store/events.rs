//! The per-dispute history: appended in the command's transaction, never changed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::domain::{Actor, DisputeId};

/// Appends one event to the dispute's history with the next sequence number. The caller
/// holds the dispute's order lock, so sequence numbers never race.
pub async fn append_event(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
    kind: &str,
    actor: &Actor,
    occurred_at: DateTime<Utc>,
    payload: serde_json::Value,
) -> Result<i32, StoreError> {
    let seq = sqlx::query_scalar!(
        r#"INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload)
           SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6
           FROM dispute_events WHERE dispute_id = $1
           RETURNING seq"#,
        dispute_id.0,
        kind,
        actor.role.as_str(),
        actor.id,
        occurred_at,
        payload,
    )
    .fetch_one(conn)
    .await?;
    Ok(seq)
}
