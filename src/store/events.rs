//! Events: each is written once, in the transaction of the change it describes, to the
//! dispute's immutable history (when it concerns a dispute) and to the outbox the event
//! stream reads. Readers of the outbox only see rows below the oldest transaction still
//! in flight, so nothing committed late is ever skipped.
//!
//! That horizon is read in a statement of its own, on the server the service talks to. On
//! Citus that is the coordinator: an outbox row's `tx_id` is the coordinator's transaction
//! id (its default is evaluated there), and a command's transaction commits on its one
//! worker before the coordinator's transaction ends, so every row below the coordinator's
//! horizon is committed where it lives (README, "Running on Citus"). Read inside the
//! outbox query, the horizon would be each worker's own, in other numbers.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::{Actor, DisputeId, HistoryEvent, Position, Role, StreamEvent};

/// The transaction holding back the event stream's horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonBlocker {
    pub age_seconds: f64,
    pub pid: i32,
    pub database: Option<String>,
    pub application: Option<String>,
    pub state: Option<String>,
}

fn actor(role: &str, id: String) -> Result<Actor, StoreError> {
    let role =
        Role::parse(role).ok_or_else(|| StoreError::Corrupt(format!("unknown role {role}")))?;
    Ok(Actor::new(role, id))
}

impl Store {
    /// A page of one dispute's history after sequence number `after`, without the
    /// entries of the `hidden` kinds.
    pub async fn history(
        &self,
        dispute_id: DisputeId,
        after: i32,
        limit: i64,
        hidden: &[&str],
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let hidden: Vec<String> = hidden.iter().map(|kind| (*kind).to_owned()).collect();
        let rows = sqlx::query!(
            r#"SELECT seq, kind, actor_role, actor_id, occurred_at, payload, trace_id
               FROM dispute_events
               WHERE order_id = (SELECT order_id FROM dispute_directory WHERE dispute_id = $1)
                 AND dispute_id = $1 AND seq > $2 AND kind <> ALL($4)
               ORDER BY seq LIMIT $3"#,
            dispute_id.0,
            after,
            limit,
            &hidden,
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "dispute_events"))
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(HistoryEvent {
                    dispute_id,
                    seq: row.seq,
                    kind: row.kind,
                    actor: actor(&row.actor_role, row.actor_id)?,
                    occurred_at: row.occurred_at,
                    payload: row.payload,
                    trace_id: row.trace_id,
                })
            })
            .collect()
    }

    /// Up to `limit` stream events after `after` (from the oldest kept when `None`), in
    /// position order, none from a transaction that may still be in flight; `None` when
    /// retention has deleted events after `after` (the cursor expired). One statement: the
    /// retention mark and the events are read together.
    pub async fn stream_events(
        &self,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Option<Vec<StreamEvent>>, StoreError> {
        let from = after.unwrap_or(Position::START);
        let horizon = self.horizon().await?;
        let rows = sqlx::query!(
            r#"SELECT ($4 AND (r.purged_to_tx_id, r.purged_to_id) > ($1::text::xid8, $2)) AS "expired!",
                      e.tx_id AS "tx_id?", e.id AS "id?", e.event_id AS "event_id?",
                      e.event_type AS "event_type?", e.order_id AS "order_id?", e.dispute_id,
                      e.dispute_seq, e.actor_role AS "actor_role?", e.actor_id AS "actor_id?",
                      e.occurred_at AS "occurred_at?", e.payload AS "payload?", e.trace_id
               FROM outbox_retention r
               LEFT JOIN LATERAL (
                 SELECT tx_id::text::bigint AS tx_id, id, event_id, event_type, order_id, dispute_id,
                        dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id
                 FROM outbox
                 WHERE (tx_id, id) > ($1::text::xid8, $2) AND tx_id < $5::text::xid8
                 ORDER BY tx_id, id
                 LIMIT $3
               ) e ON true
               ORDER BY e.tx_id, e.id"#,
            from.tx_id.to_string(),
            from.id,
            limit,
            after.is_some(),
            horizon,
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "outbox"))
        .await?;
        if rows.first().is_some_and(|row| row.expired) {
            return Ok(None);
        }
        let missing = |what: &str| StoreError::Corrupt(format!("outbox row without {what}"));
        rows.into_iter()
            .filter(|row| row.event_id.is_some())
            .map(|row| {
                Ok(StreamEvent {
                    position: Position {
                        tx_id: row.tx_id.ok_or_else(|| missing("tx_id"))?,
                        id: row.id.ok_or_else(|| missing("id"))?,
                    },
                    event_id: row.event_id.ok_or_else(|| missing("event_id"))?,
                    event_type: row.event_type.ok_or_else(|| missing("event_type"))?,
                    order_id: row.order_id.ok_or_else(|| missing("order_id"))?,
                    dispute_id: row.dispute_id.map(DisputeId),
                    dispute_seq: row.dispute_seq,
                    actor: actor(
                        &row.actor_role.ok_or_else(|| missing("actor_role"))?,
                        row.actor_id.ok_or_else(|| missing("actor_id"))?,
                    )?,
                    occurred_at: row.occurred_at.ok_or_else(|| missing("occurred_at"))?,
                    payload: row.payload.ok_or_else(|| missing("payload"))?,
                    trace_id: row.trace_id,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The position of the newest event below the in-flight horizon (`None` when there is
    /// none): where a reader that only wants new events starts.
    pub async fn stream_tail(&self) -> Result<Option<Position>, StoreError> {
        let horizon = self.horizon().await?;
        let row = sqlx::query!(
            r#"SELECT tx_id::text::bigint AS "tx_id!", id FROM outbox
               WHERE tx_id < $1::text::xid8
               ORDER BY tx_id DESC, id DESC
               LIMIT 1"#,
            horizon,
        )
        .fetch_optional(self.pool())
        .instrument(statement("SELECT", "outbox"))
        .await?;
        Ok(row.map(|row| Position {
            tx_id: row.tx_id,
            id: row.id,
        }))
    }

    /// The oldest transaction id still in flight on this server (as text, an xid8):
    /// outbox rows below it are committed or will never be.
    async fn horizon(&self) -> Result<String, StoreError> {
        let horizon = sqlx::query_scalar!(
            r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS "horizon!""#
        )
        .fetch_one(self.pool())
        .instrument(statement("SELECT", "pg_current_snapshot"))
        .await?;
        Ok(horizon)
    }

    /// The oldest transaction in flight anywhere on the cluster that holds an xid — what
    /// holds back the stream's horizon (`pg_snapshot_xmin` is cluster-wide): its age in
    /// seconds, and where it runs as far as this role may see (`pg_read_all_stats` shows
    /// other roles' sessions). `None` when no transaction holds one.
    pub async fn horizon_blocker(&self) -> Result<Option<HorizonBlocker>, StoreError> {
        let row = sqlx::query!(
            r#"SELECT extract(epoch FROM now() - xact_start)::float8 AS "age_seconds!",
                      pid AS "pid!", datname, application_name, state
               FROM pg_stat_activity
               WHERE backend_xid IS NOT NULL AND xact_start IS NOT NULL
                 AND pid <> pg_backend_pid()
               ORDER BY xact_start
               LIMIT 1"#
        )
        .fetch_optional(self.pool())
        .instrument(statement("SELECT", "pg_stat_activity"))
        .await?;
        Ok(row.map(|row| HorizonBlocker {
            age_seconds: row.age_seconds.max(0.0),
            pid: row.pid,
            database: row.datname,
            application: row.application_name,
            state: row.state,
        }))
    }

    /// When the oldest event after `after` occurred, committed or not yet deliverable
    /// (`None` when there is none): how far behind a stream at `after` is.
    pub async fn oldest_event_after(
        &self,
        after: Position,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query_scalar!(
            r#"SELECT occurred_at FROM outbox
               WHERE (tx_id, id) > ($1::text::xid8, $2)
               ORDER BY tx_id, id
               LIMIT 1"#,
            after.tx_id.to_string(),
            after.id,
        )
        .fetch_optional(self.pool())
        .instrument(statement("SELECT", "outbox"))
        .await?;
        Ok(row)
    }

    /// Deletes up to `limit` outbox rows that occurred before `before` (and are below the
    /// in-flight horizon), and moves the retention mark past them. Returns how many. Three
    /// statements in one transaction: the position of the last row to go, the delete up to
    /// it, the mark (on Citus the delete runs on every shard; the mark is the
    /// coordinator's).
    pub async fn purge_outbox(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let horizon = self.horizon().await?;
        let mut tx = self.begin().await?;
        let last = sqlx::query!(
            r#"SELECT tx_id::text AS "tx_id!", id FROM (
                 SELECT tx_id, id FROM outbox
                 WHERE occurred_at < $1 AND tx_id < $3::text::xid8
                 ORDER BY tx_id, id LIMIT $2
               ) doomed
               ORDER BY tx_id DESC, id DESC LIMIT 1"#,
            before,
            limit,
            horizon,
        )
        .fetch_optional(&mut *tx)
        .instrument(statement("SELECT", "outbox"))
        .await?;
        let Some(last) = last else {
            return Ok(0);
        };
        let deleted = sqlx::query!(
            "DELETE FROM outbox WHERE (tx_id, id) <= ($1::text::xid8, $2) AND occurred_at < $3",
            last.tx_id,
            last.id,
            before,
        )
        .execute(&mut *tx)
        .instrument(statement("DELETE", "outbox"))
        .await?;
        sqlx::query!(
            r#"UPDATE outbox_retention SET purged_to_tx_id = $1::text::xid8, purged_to_id = $2
               WHERE ($1::text::xid8, $2) > (purged_to_tx_id, purged_to_id)"#,
            last.tx_id,
            last.id,
        )
        .execute(&mut *tx)
        .instrument(statement("UPDATE", "outbox_retention"))
        .await?;
        super::commit(tx).await?;
        Ok(deleted.rows_affected())
    }
}

impl Store {
    /// Bumps `committed` whenever an outbox write commits (`LISTEN dispute_outbox`), so
    /// event streams wake at once; reconnects after errors. Streams also poll, so a lost
    /// notification only delays them. Runs until `stop`.
    pub async fn listen_for_commits(
        self,
        committed: tokio::sync::watch::Sender<u64>,
        mut stop: crate::shutdown::Stop,
    ) {
        loop {
            let listen = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
                listener.listen("dispute_outbox").await?;
                loop {
                    listener.recv().await?;
                    committed.send_modify(|n| *n = n.wrapping_add(1));
                }
            };
            tokio::select! {
                result = listen => {
                    let error: sqlx::Error = match result { Err(error) => error, Ok(()) => continue };
                    tracing::warn!(%error, "outbox listener failed; reconnecting");
                    tokio::time::sleep(LISTEN_RETRY).await;
                }
                _ = crate::shutdown::stopped(&mut stop) => return,
            }
        }
    }
}

/// How long the commit listener waits before reconnecting.
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
