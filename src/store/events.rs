//! Events: each is written once, in the transaction of the change it describes, to the
//! dispute's immutable history (when it concerns a dispute) and to the outbox, numbered in
//! its order's stream. The relay (`src/relay.rs`) moves committed outbox rows into the
//! stream's log, a partition at a time; WatchEvents reads the log (README, "Consuming the
//! event stream"). Nothing here reads a transaction id or a snapshot: what the relay moves
//! is what it sees committed, and the log's keys refuse a second copy of an event or of a
//! position, so two relays racing for a partition cannot duplicate or reorder it.
//!
//! On Citus the outbox lives with its order, the log with its partition (its own
//! co-location group), the partitions' leases and marks on the coordinator: every write
//! below runs on one shard, or on the coordinator; the relay's outbox read and the
//! stream's read across partitions fan out (README, "Running on Citus").

use tracing::Instrument;

use chrono::{DateTime, Utc};

use super::{Store, StoreError, constraints::sqlstate, statement};
use std::collections::{BTreeMap, HashMap};

use crate::domain::{
    Actor, Cursor, DisputeId, HistoryEvent, LogPosition, Role, STREAM_PARTITIONS, StreamEvent,
};

/// A committed outbox row waiting for the relay: its event, without a log position yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrelayed {
    /// The outbox row's id: increasing in the order an order's events were written.
    pub id: i64,
    pub event: StreamEvent,
}

/// What appending a batch did.
#[derive(Debug, Default, PartialEq)]
pub struct Appended {
    /// Each partition the batch touched (appended to, or found its rows in) and its last
    /// position afterwards, as this relay wrote or read it.
    pub tails: Vec<(usize, i64)>,
    /// Events newly appended.
    pub appended: usize,
    /// Outbox rows now in the log (appended now, or by an earlier relay that stopped before
    /// deleting them): the relay deletes them from the outbox.
    pub done: Vec<(String, i64)>,
    /// Events held back because an earlier event of their order was not in the batch.
    pub held_back: usize,
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

    /// Up to `limit` events of the log after `after`, by position (partitions interleaved;
    /// in each partition a run of consecutive positions); `None` when retention has deleted
    /// events after `after` (the cursor expired). Positions have no gaps in a partition, so
    /// a partition's next `limit` events are exactly the `limit` positions after its
    /// cursor: the read is bounded by index ranges, however far behind the cursor is.
    pub async fn stream_events(
        &self,
        after: &Cursor,
        limit: i64,
    ) -> Result<Option<Vec<StreamEvent>>, StoreError> {
        let (partitions, positions) = by_partition(after);
        let mut query = per_partition(partitions.iter().zip(&positions), |branch, (p, after)| {
            branch
                .push(
                    "SELECT stream_partition, position, event_id, order_id, order_sequence, \
                     event_type, dispute_id, dispute_seq, actor_role, actor_id, occurred_at, \
                     payload, trace_id FROM event_log WHERE stream_partition = ",
                )
                .push_bind(*p)
                .push(" AND position > ")
                .push_bind(*after)
                .push(" AND position <= ")
                .push_bind(*after + limit);
        });
        query
            .push(" ORDER BY position, stream_partition LIMIT ")
            .push_bind(limit);
        let rows: Vec<LogRow> = query
            .build_query_as()
            .fetch_all(self.pool())
            .instrument(statement("SELECT", "event_log"))
            .await?;
        // Retention raises a partition's mark before it deletes up to it: a mark still at or
        // below the cursor after the read means nothing after the cursor was gone.
        if after.behind(&self.stream_marks().await?) {
            return Ok(None);
        }
        rows.into_iter()
            .map(|row| {
                Ok(StreamEvent {
                    at: LogPosition {
                        partition: partition_index(row.stream_partition)?,
                        position: row.position,
                    },
                    order_sequence: row.order_sequence,
                    event_id: row.event_id,
                    event_type: row.event_type,
                    order_id: row.order_id,
                    dispute_id: row.dispute_id.map(DisputeId),
                    dispute_seq: row.dispute_seq,
                    actor: actor(&row.actor_role, row.actor_id)?,
                    occurred_at: row.occurred_at,
                    payload: row.payload,
                    trace_id: row.trace_id,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// How far retention has deleted, per partition: the oldest cursor still served.
    pub async fn stream_marks(&self) -> Result<Cursor, StoreError> {
        Ok(self.stream_partitions().await?.0)
    }

    /// Where the log ended when the relay last noted it, per partition, and never before
    /// retention's mark: never past the log's end, so a reader that starts there and only
    /// wants new events misses none (and is not refused as behind the mark).
    pub async fn stream_tail(&self) -> Result<Cursor, StoreError> {
        Ok(self.stream_partitions().await?.1)
    }

    /// Every partition's retention mark and noted tail (at least the mark).
    async fn stream_partitions(&self) -> Result<(Cursor, Cursor), StoreError> {
        let rows = sqlx::query!(
            r#"SELECT stream_partition, purged_through,
                      GREATEST(appended_through, purged_through) AS "tail!"
               FROM stream_relays ORDER BY stream_partition"#
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "stream_relays"))
        .await?;
        let marks = cursor_of(rows.iter().map(|r| (r.stream_partition, r.purged_through)))?;
        let tail = cursor_of(rows.iter().map(|r| (r.stream_partition, r.tail)))?;
        Ok((marks, tail))
    }

    /// Takes the lease of every partition that is free (its lease ran out) or already
    /// `holder`'s, until `lease` from now; the partitions `holder` now holds. The rows are
    /// locked in partition order, so two relays leasing at once never deadlock.
    pub async fn lease_partitions(
        &self,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<usize>, StoreError> {
        let rows = sqlx::query_scalar!(
            r#"UPDATE stream_relays
               SET holder = $1, lease_until = now() + make_interval(secs => $2)
               WHERE stream_partition IN (
                 SELECT stream_partition FROM stream_relays
                 WHERE holder = $1 OR lease_until < now()
                 ORDER BY stream_partition
                 FOR UPDATE)
                 AND (holder = $1 OR lease_until < now())
               RETURNING stream_partition"#,
            holder,
            lease.as_secs_f64(),
        )
        .fetch_all(self.pool())
        .instrument(statement("UPDATE", "stream_relays"))
        .await?;
        let mut held = rows
            .into_iter()
            .map(partition_index)
            .collect::<Result<Vec<_>, _>>()?;
        held.sort_unstable();
        Ok(held)
    }

    /// Gives up `holder`'s leases (a replica that stops hands its partitions over at once).
    pub async fn release_partitions(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE stream_relays SET holder = NULL, lease_until = '-infinity' WHERE holder = $1",
            holder
        )
        .execute(self.pool())
        .instrument(statement("UPDATE", "stream_relays"))
        .await?;
        Ok(())
    }

    /// Up to `limit` committed outbox rows of `partitions`, oldest row first. An order's
    /// rows are numbered in the order they were written, each after the order's row lock
    /// was taken, so if a row is here every earlier row of its order still waiting is too.
    pub async fn unrelayed(
        &self,
        partitions: &[usize],
        limit: i64,
    ) -> Result<Vec<Unrelayed>, StoreError> {
        let partitions: Vec<i16> = partitions.iter().map(|&p| p as i16).collect();
        let rows = sqlx::query!(
            r#"SELECT id, stream_partition AS "stream_partition!", event_id, order_id,
                      order_sequence AS "order_sequence!",
                      event_type, dispute_id, dispute_seq, actor_role, actor_id, occurred_at,
                      payload, trace_id
               FROM outbox WHERE stream_partition = ANY($1)
               ORDER BY id LIMIT $2"#,
            &partitions,
            limit,
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "outbox"))
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Unrelayed {
                    id: row.id,
                    event: StreamEvent {
                        at: LogPosition {
                            partition: partition_index(row.stream_partition)?,
                            position: 0,
                        },
                        order_sequence: row.order_sequence,
                        event_id: row.event_id,
                        event_type: row.event_type,
                        order_id: row.order_id,
                        dispute_id: row.dispute_id.map(DisputeId),
                        dispute_seq: row.dispute_seq,
                        actor: actor(&row.actor_role, row.actor_id)?,
                        occurred_at: row.occurred_at,
                        payload: row.payload,
                        trace_id: row.trace_id,
                    },
                })
            })
            .collect()
    }

    /// The smallest `order_sequence` still in the outbox for each of `orders`: where each
    /// order's waiting events begin (a row leaves the outbox only once it is in the log).
    pub async fn waiting_from(&self, orders: &[&str]) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT order_id, min(order_sequence) AS "from!" FROM outbox
               WHERE order_id = ANY($1) GROUP BY order_id"#,
            orders as &[&str],
        )
        .fetch_all(self.pool())
        .instrument(statement("SELECT", "outbox"))
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.order_id, row.from))
            .collect())
    }

    /// Appends `batches` (each partition's rows, oldest first) to the log: after each
    /// partition's last position, each order's events only after the ones already there,
    /// with no gap in its sequence. A row already in the log (a relay stopped before
    /// deleting it) is only reported done. `waiting` is [`Store::waiting_from`] for the
    /// batch's orders: an order whose events retention deleted from the log continues from
    /// its first waiting event. On one PostgreSQL every partition goes in one transaction
    /// (five round trips a pass); on Citus each partition in a transaction of its own, on
    /// its shard. Another relay appending to a partition at the same time makes one of the
    /// two fail on the log's keys: that one appends nothing there (`Ok`, nothing done).
    pub async fn append(
        &self,
        batches: &BTreeMap<usize, Vec<Unrelayed>>,
        waiting: &HashMap<String, i64>,
    ) -> Result<Appended, StoreError> {
        let distributed = self.distributed().await?;
        let groups: Vec<Vec<(usize, &[Unrelayed])>> = if distributed {
            batches
                .iter()
                .map(|(p, rows)| vec![(*p, rows.as_slice())])
                .collect()
        } else {
            vec![
                batches
                    .iter()
                    .map(|(p, rows)| (*p, rows.as_slice()))
                    .collect(),
            ]
        };
        let mut all = Appended::default();
        for group in groups {
            match self.try_append(&group, waiting, distributed).await {
                Ok(appended) => {
                    all.tails.extend(appended.tails);
                    all.appended += appended.appended;
                    all.done.extend(appended.done);
                    all.held_back += appended.held_back;
                }
                Err(StoreError::Database(sqlx::Error::Database(error)))
                    if error.code().as_deref() == Some(sqlstate::UNIQUE_VIOLATION) =>
                {
                    tracing::debug!(%error, "another relay appended to the partition first");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(all)
    }

    /// One transaction of [`Store::append`]: `group`'s partitions, on one node (on Citus,
    /// `distributed`, counted for the store's record as they are appended).
    async fn try_append(
        &self,
        group: &[(usize, &[Unrelayed])],
        waiting: &HashMap<String, i64>,
        distributed: bool,
    ) -> Result<Appended, StoreError> {
        let partitions: Vec<i16> = group.iter().map(|(p, _)| *p as i16).collect();
        let mut tx = self.begin().await?;
        // Each partition's last position: a backward index scan per partition (one
        // aggregate over several partitions would read all their rows).
        let mut last_query = per_partition(&partitions, |branch, p| {
            branch
                .push("SELECT ")
                .push_bind(*p)
                .push("::int2, (SELECT COALESCE(max(position), 0) FROM event_log WHERE stream_partition = ")
                .push_bind(*p)
                .push(")");
        });
        let lasts: HashMap<i16, i64> = last_query
            .build_query_as::<(i16, i64)>()
            .fetch_all(&mut *tx)
            .instrument(statement("SELECT", "event_log"))
            .await?
            .into_iter()
            .collect();
        // How far each order's events are in the log: an index probe per order of the
        // partition's batch.
        let mut relayed_query = per_partition(group, |branch, (partition, rows)| {
            let mut orders: Vec<&str> = rows.iter().map(|u| u.event.order_id.as_str()).collect();
            orders.sort_unstable();
            orders.dedup();
            branch
                .push(
                    "SELECT order_id, max(order_sequence) FROM event_log WHERE stream_partition = ",
                )
                .push_bind(*partition as i16)
                .push(" AND order_id = ANY(")
                .push_bind(orders.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .push(") GROUP BY order_id");
        });
        let relayed: HashMap<String, i64> = relayed_query
            .build_query_as::<(String, i64)>()
            .fetch_all(&mut *tx)
            .instrument(statement("SELECT", "event_log"))
            .await?
            .into_iter()
            .collect();
        let mut result = Appended::default();
        let mut new: Vec<(i16, &StreamEvent, i64)> = Vec::new();
        for (partition, rows) in group {
            let p = *partition as i16;
            let last = lasts.get(&p).copied().unwrap_or(0);
            let plan = plan_append(rows, &relayed, waiting, last);
            if !plan.new.is_empty() || !plan.done.is_empty() {
                let through = plan.new.last().map_or(last, |(_, position)| *position);
                result.tails.push((*partition, through));
            }
            result.appended += plan.new.len();
            result.held_back += plan.held_back;
            result.done.extend(plan.done);
            new.extend(
                plan.new
                    .into_iter()
                    .map(|(event, position)| (p, event, position)),
            );
        }
        if !new.is_empty() {
            let mut insert: sqlx::QueryBuilder<sqlx::Postgres> = sqlx::QueryBuilder::new(
                "INSERT INTO event_log (stream_partition, position, event_id, order_id, order_sequence, \
                 event_type, dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, \
                 trace_id) ",
            );
            insert.push_values(new.iter(), |mut row, (p, event, position)| {
                row.push_bind(*p)
                    .push_bind(*position)
                    .push_bind(event.event_id)
                    .push_bind(event.order_id.as_str())
                    .push_bind(event.order_sequence)
                    .push_bind(event.event_type.as_str())
                    .push_bind(event.dispute_id.map(|id| id.0))
                    .push_bind(event.dispute_seq)
                    .push_bind(event.actor.role.as_str())
                    .push_bind(event.actor.id.as_str())
                    .push_bind(event.occurred_at)
                    .push_bind(&event.payload)
                    .push_bind(event.trace_id.as_deref());
            });
            insert
                .build()
                .execute(&mut *tx)
                .instrument(statement("INSERT", "event_log"))
                .await
                .map_err(StoreError::Database)?;
            if distributed {
                for p in &partitions {
                    let appended = new.iter().filter(|(of, ..)| of == p);
                    super::record::fold(&mut tx, *p, appended.map(|(_, event, _)| *event)).await?;
                }
            }
        }
        super::commit(tx).await?;
        Ok(result)
    }

    /// Deletes outbox rows now in the log, by (order, row id).
    pub async fn forget_relayed(&self, done: &[(String, i64)]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let (orders, ids): (Vec<&str>, Vec<i64>) =
            done.iter().map(|(order, id)| (order.as_str(), *id)).unzip();
        sqlx::query!(
            // Row ids are unique in the whole table; the orders let Citus prune shards.
            "DELETE FROM outbox WHERE order_id = ANY($1) AND id = ANY($2)",
            &orders as &[&str],
            &ids,
        )
        .execute(self.pool())
        .instrument(statement("DELETE", "outbox"))
        .await?;
        Ok(())
    }

    /// Notes how far the log reaches in `appended` partitions (the tail new readers start
    /// from), and wakes every replica's readers: one notification per relay batch.
    pub async fn appended(&self, appended: &[(usize, i64)]) -> Result<(), StoreError> {
        let (partitions, throughs): (Vec<i16>, Vec<i64>) = appended
            .iter()
            .map(|&(p, through)| (p as i16, through))
            .unzip();
        // One statement: PostgreSQL delivers a channel's identical notifications of one
        // transaction once.
        sqlx::query!(
            r#"UPDATE stream_relays r SET appended_through = GREATEST(r.appended_through, a.through)
               FROM unnest($1::int2[], $2::int8[]) AS a(p, through)
               WHERE r.stream_partition = a.p
               RETURNING pg_notify('dispute_events', '')"#,
            &partitions,
            &throughs,
        )
        .fetch_all(self.pool())
        .instrument(statement("UPDATE", "stream_relays"))
        .await?;
        Ok(())
    }

    /// Deletes, in each partition, the longest run of its oldest events (at most `limit`)
    /// relayed before `before`, never the partition's last event (the next append numbers
    /// on from it); how many. Per partition: the last position to go, then the mark raised
    /// to it (on the coordinator), then the rows up to it deleted (on the partition's
    /// shard). A reader checks the mark after reading, so it never takes a read with
    /// deleted rows for a whole one; a purge that stops between the two leaves rows the
    /// next one deletes.
    pub async fn purge_log(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let mut purged = 0;
        for partition in 0..STREAM_PARTITIONS as i16 {
            let last = sqlx::query_scalar!(
                r#"WITH head AS (
                     SELECT position, relayed_at FROM event_log
                     WHERE stream_partition = $1 ORDER BY position LIMIT $3
                   )
                   SELECT max(position) FROM head
                   WHERE position < LEAST(
                     (SELECT min(position) FROM head WHERE relayed_at >= $2),
                     (SELECT max(position) FROM event_log WHERE stream_partition = $1))"#,
                partition,
                before,
                limit,
            )
            .fetch_one(self.pool())
            .instrument(statement("SELECT", "event_log"))
            .await?;
            let Some(last) = last else { continue };
            sqlx::query!(
                r#"UPDATE stream_relays SET purged_through = GREATEST(purged_through, $2)
                   WHERE stream_partition = $1"#,
                partition,
                last,
            )
            .execute(self.pool())
            .instrument(statement("UPDATE", "stream_relays"))
            .await?;
            let deleted = sqlx::query!(
                "DELETE FROM event_log WHERE stream_partition = $1 AND position <= $2",
                partition,
                last,
            )
            .execute(self.pool())
            .instrument(statement("DELETE", "event_log"))
            .await?;
            purged += deleted.rows_affected();
        }
        Ok(purged)
    }
}

/// What a relay appends of a batch, and which rows are done with.
#[derive(Debug, Default, PartialEq)]
struct AppendPlan<'a> {
    /// The events to append, each with its position.
    new: Vec<(&'a StreamEvent, i64)>,
    /// Every row in the log once the new ones are: (order, outbox row id).
    done: Vec<(String, i64)>,
    held_back: usize,
}

/// Decides a partition's append: `batch` oldest row first, `relayed` the last sequence of
/// each of its orders in the log, `waiting` the first sequence of each still in the outbox,
/// `last` the partition's last position. An order's event is appended only right after
/// the one before it (in the log, or appended just before it — or, when retention has
/// deleted the order's events from the log, its first waiting one); one at or below the
/// order's last in the log is a copy of what is there; one further on waits (its
/// predecessor is still in the outbox but was not read: the rule that keeps an order's
/// events in order and without gaps whatever a read returned).
fn plan_append<'a>(
    batch: &'a [Unrelayed],
    relayed: &HashMap<String, i64>,
    waiting: &HashMap<String, i64>,
    last: i64,
) -> AppendPlan<'a> {
    let mut next: HashMap<&str, i64> = HashMap::new();
    let mut plan = AppendPlan::default();
    let mut position = last;
    let mut ordered: Vec<&Unrelayed> = batch.iter().collect();
    // Oldest row first; an order's rows in their sequence.
    ordered.sort_by_key(|u| u.id);
    for row in ordered {
        let event = &row.event;
        let expected = next.entry(event.order_id.as_str()).or_insert_with(|| {
            let after_log = relayed.get(&event.order_id).copied().unwrap_or(0) + 1;
            after_log.max(waiting.get(&event.order_id).copied().unwrap_or(0))
        });
        if event.order_sequence < *expected {
            plan.done.push((event.order_id.clone(), row.id));
        } else if event.order_sequence == *expected {
            position += 1;
            *expected += 1;
            plan.new.push((event, position));
            plan.done.push((event.order_id.clone(), row.id));
        } else {
            plan.held_back += 1;
        }
    }
    plan
}

/// One statement of a branch per partition, joined by UNION ALL, each branch written by
/// `branch` and in parentheses: each is an index range or probe of its own partition. (A
/// join with, or `= ANY` over, several partitions is planned as a scan of the whole log
/// once the log is large: 73 ms for a read of 1,000 events at 240,000.)
fn per_partition<T>(
    items: impl IntoIterator<Item = T>,
    mut branch: impl FnMut(&mut sqlx::QueryBuilder<sqlx::Postgres>, T),
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut query = sqlx::QueryBuilder::new("");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            query.push(" UNION ALL ");
        }
        query.push("(");
        branch(&mut query, item);
        query.push(")");
    }
    query
}

/// A row of the log, as [`Store::stream_events`] reads it.
#[derive(sqlx::FromRow)]
struct LogRow {
    stream_partition: i16,
    position: i64,
    event_id: uuid::Uuid,
    order_id: String,
    order_sequence: i64,
    event_type: String,
    dispute_id: Option<uuid::Uuid>,
    dispute_seq: Option<i32>,
    actor_role: String,
    actor_id: String,
    occurred_at: DateTime<Utc>,
    payload: serde_json::Value,
    trace_id: Option<String>,
}

/// A cursor as the database takes it: partitions and positions, side by side.
fn by_partition(cursor: &Cursor) -> (Vec<i16>, Vec<i64>) {
    cursor
        .0
        .iter()
        .enumerate()
        .map(|(p, &position)| (p as i16, position))
        .unzip()
}

fn partition_index(stored: i16) -> Result<usize, StoreError> {
    usize::try_from(stored)
        .ok()
        .filter(|&p| p < STREAM_PARTITIONS)
        .ok_or_else(|| StoreError::Corrupt(format!("stream partition {stored} out of range")))
}

/// A cursor from one row per partition.
fn cursor_of(rows: impl Iterator<Item = (i16, i64)>) -> Result<Cursor, StoreError> {
    let mut cursor = Cursor::START;
    let mut seen = 0;
    for (partition, position) in rows {
        cursor.0[partition_index(partition)?] = position;
        seen += 1;
    }
    if seen != STREAM_PARTITIONS {
        return Err(StoreError::Corrupt(format!(
            "stream_relays has {seen} partitions, not {STREAM_PARTITIONS}"
        )));
    }
    Ok(cursor)
}

impl Store {
    /// Bumps `appended` whenever a relay appends to the log (`LISTEN dispute_events`), so
    /// event streams wake at once; reconnects after errors. Streams also poll, so a lost
    /// notification only delays them. Runs until `stop`.
    pub async fn listen_for_appends(
        self,
        appended: tokio::sync::watch::Sender<u64>,
        mut stop: crate::shutdown::Stop,
    ) {
        loop {
            let listen = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
                listener.listen("dispute_events").await?;
                loop {
                    listener.recv().await?;
                    appended.send_modify(|n| *n = n.wrapping_add(1));
                }
            };
            tokio::select! {
                result = listen => {
                    let error: sqlx::Error = match result { Err(error) => error, Ok(()) => continue };
                    tracing::warn!(%error, "event log listener failed; reconnecting");
                    tokio::time::sleep(LISTEN_RETRY).await;
                }
                _ = crate::shutdown::stopped(&mut stop) => return,
            }
        }
    }
}

/// How long the listener waits before reconnecting.
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbox row of `order`, its `sequence`th event, row id `id`.
    fn row(id: i64, order: &str, sequence: i64) -> Unrelayed {
        Unrelayed {
            id,
            event: StreamEvent {
                at: LogPosition {
                    partition: 3,
                    position: 0,
                },
                order_sequence: sequence,
                event_id: uuid::Uuid::now_v7(),
                event_type: "X".into(),
                order_id: order.into(),
                dispute_id: None,
                dispute_seq: None,
                actor: Actor::new(Role::Service, "s".to_owned()),
                occurred_at: Utc::now(),
                payload: serde_json::json!({}),
                trace_id: None,
            },
        }
    }

    /// What the plan appends: (order, sequence, position).
    fn appended(plan: &AppendPlan<'_>) -> Vec<(String, i64, i64)> {
        plan.new
            .iter()
            .map(|(e, position)| (e.order_id.clone(), e.order_sequence, *position))
            .collect()
    }

    fn relayed(orders: &[(&str, i64)]) -> HashMap<String, i64> {
        orders.iter().map(|(o, s)| ((*o).to_owned(), *s)).collect()
    }

    #[test]
    fn new_events_follow_the_partitions_last_position_without_gaps() {
        let batch = [row(10, "a", 1), row(11, "b", 1), row(12, "a", 2)];
        let plan = plan_append(&batch, &HashMap::new(), &HashMap::new(), 41);
        assert_eq!(
            appended(&plan),
            [
                ("a".into(), 1, 42),
                ("b".into(), 1, 43),
                ("a".into(), 2, 44)
            ]
        );
        assert_eq!(plan.done.len(), 3);
        assert_eq!(plan.held_back, 0);
    }

    #[test]
    fn rows_are_taken_oldest_row_first_whatever_order_they_came_in() {
        let batch = [row(12, "a", 2), row(10, "a", 1)];
        let plan = plan_append(&batch, &HashMap::new(), &HashMap::new(), 0);
        assert_eq!(appended(&plan), [("a".into(), 1, 1), ("a".into(), 2, 2)]);
    }

    #[test]
    fn an_event_already_in_the_log_is_only_done_not_appended_again() {
        // A relay appended a's 1 and 2, then stopped before deleting them.
        let batch = [row(10, "a", 1), row(12, "a", 2), row(13, "a", 3)];
        let plan = plan_append(&batch, &relayed(&[("a", 2)]), &relayed(&[("a", 1)]), 7);
        assert_eq!(appended(&plan), [("a".into(), 3, 8)]);
        assert_eq!(
            plan.done,
            [("a".into(), 10), ("a".into(), 12), ("a".into(), 13)]
        );
    }

    #[test]
    fn an_event_whose_predecessor_is_missing_waits_and_so_do_its_successors() {
        // b's 2 was not read (nor is it in the log): b's 3 and 4 must not go before it.
        let batch = [row(10, "a", 1), row(11, "b", 3), row(12, "b", 4)];
        let plan = plan_append(&batch, &relayed(&[("b", 1)]), &relayed(&[("b", 2)]), 0);
        assert_eq!(appended(&plan), [("a".into(), 1, 1)]);
        assert_eq!(plan.held_back, 2);
        assert_eq!(
            plan.done,
            [("a".into(), 10)],
            "held back rows stay in the outbox"
        );
    }

    #[test]
    fn an_order_continues_after_its_last_event_in_the_log() {
        let batch = [row(20, "a", 6)];
        let plan = plan_append(&batch, &relayed(&[("a", 5)]), &relayed(&[("a", 6)]), 100);
        assert_eq!(appended(&plan), [("a".into(), 6, 101)]);
    }

    #[test]
    fn an_order_whose_logged_events_retention_deleted_continues_from_its_first_waiting_one() {
        // a's 1–5 were relayed and later deleted from the log; 6 and 7 wait.
        let batch = [row(20, "a", 6), row(21, "a", 7)];
        let plan = plan_append(&batch, &HashMap::new(), &relayed(&[("a", 6)]), 100);
        assert_eq!(
            appended(&plan),
            [("a".into(), 6, 101), ("a".into(), 7, 102)]
        );
        assert_eq!(plan.held_back, 0);
    }

    #[test]
    fn a_cursor_goes_to_the_database_as_one_position_per_partition() {
        let mut cursor = Cursor::START;
        cursor.0[2] = 9;
        let (partitions, positions) = by_partition(&cursor);
        assert_eq!(
            partitions,
            (0..STREAM_PARTITIONS as i16).collect::<Vec<_>>()
        );
        assert_eq!(positions[2], 9);
        assert_eq!(positions.iter().sum::<i64>(), 9);
        assert!(
            cursor_of([(0_i16, 1_i64)].into_iter()).is_err(),
            "a partition row missing"
        );
        assert!(partition_index(STREAM_PARTITIONS as i16).is_err());
        assert!(partition_index(-1).is_err());
    }
}
