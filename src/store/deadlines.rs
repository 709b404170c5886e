//! The deadline worker's scans. They only find candidates; each candidate is then locked
//! (`SKIP LOCKED`, so replicas share the work) and re-decided by the domain in its own
//! transaction, so a stale or duplicate candidate does nothing.
//!
//! A candidate that failed to apply (not an outage: a corrupt row, a bug, a trigger) is set
//! aside in `deadline_setbacks` (migration 8) until its retry time, so it cannot hold up the
//! candidates behind it; the scans skip it until then. The bookkeeping lives in a table of
//! its own, written outside the failed transaction: it never touches the guarded disputes
//! and orders rows, their `updated_at` or the store record. A setback is for the row as it
//! was when it failed: once the row changes (an RPC, a repair), it is forgotten.

use tracing::Instrument;

use super::statement;

use chrono::{DateTime, Utc};

use super::codec;
use super::{Store, StoreError};
use crate::domain::{Clock, Cutoff, DisputeId, PartyId};

/// A deadline candidate: a dispute (its deadline) or an order (its protection end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    Dispute(DisputeId),
    Order(PartyId),
}

/// A candidate found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<Id> {
    pub id: Id,
    /// It failed before and was set aside; its retry time has come.
    pub set_aside: bool,
}

/// A candidate set aside: how often it has failed and when it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setback {
    pub attempts: i32,
    pub retry_at: DateTime<Utc>,
}

/// The scan of [`Store::expired_orders`]: one range of `orders_held_by_partition`
/// (migration 12). Built at run time like the disputes' scan, so that the test at scale
/// can EXPLAIN the very statement ($1 now, $2 limit, $3 retry by, $4 partition).
const EXPIRED_ORDERS: &str = "SELECT o.order_id,
         EXISTS (SELECT 1 FROM deadline_setbacks s
                 WHERE s.order_id = o.order_id AND s.dispute_id IS NULL) AS set_aside
  FROM orders o
  WHERE o.funds_state = 'HELD' AND (hashtext(o.order_id) & 15)::smallint = $4
    AND o.protection_ends_at <= $1
    AND NOT EXISTS (SELECT 1 FROM disputes d
                    WHERE d.order_id = o.order_id AND d.state NOT IN ('CANCELLED', 'RESOLVED'))
    AND NOT EXISTS (SELECT 1 FROM deadline_setbacks s
                    WHERE s.order_id = o.order_id AND s.dispute_id IS NULL AND s.retry_at > $3)
  ORDER BY o.protection_ends_at
  LIMIT $2";

impl Store {
    /// Open disputes of candidate `partition` whose deadline has passed (one `cutoff` per
    /// deadline of the table), oldest change first; those set aside with a retry time
    /// after `retry_by` are skipped.
    ///
    /// The one statement here built at run time: its state → clock column conditions
    /// come from the domain's deadline table, so the table stays the one place a deadline
    /// is declared. Only static column names and bound parameters go into it, and
    /// tests/api/scan.rs holds it to `Deadlines::due` on generated disputes.
    pub async fn due_disputes(
        &self,
        cutoffs: &[Cutoff],
        retry_by: DateTime<Utc>,
        partition: usize,
        limit: i64,
    ) -> Result<Vec<Due<DisputeId>>, StoreError> {
        let mut query = due_disputes_query("", cutoffs, retry_by, partition, limit);
        let rows = query
            .build_query_as::<(uuid::Uuid, bool)>()
            .fetch_all(self.pool())
            .instrument(statement("SELECT", "disputes"))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, set_aside)| Due {
                id: DisputeId(id),
                set_aside,
            })
            .collect())
    }

    /// The plans of both scans of `partition` (tests/api/wave.rs prints them at scale).
    pub async fn explain_scans(
        &self,
        cutoffs: &[Cutoff],
        now: DateTime<Utc>,
        partition: usize,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut query = due_disputes_query("EXPLAIN ", cutoffs, now, partition, limit);
        let mut plan: Vec<String> = query.build_query_scalar().fetch_all(self.pool()).await?;
        let explain = sqlx::AssertSqlSafe(format!("EXPLAIN {EXPIRED_ORDERS}"));
        let orders: Vec<String> = sqlx::query_scalar(explain)
            .bind(now)
            .bind(limit)
            .bind(now)
            .bind(partition as i16)
            .fetch_all(self.pool())
            .await?;
        plan.extend(orders);
        Ok(plan)
    }

    /// Orders of candidate `partition` whose protection has ended with their funds held
    /// and no active dispute, soonest end first; those set aside with a retry time after
    /// `retry_by` are skipped.
    pub async fn expired_orders(
        &self,
        now: DateTime<Utc>,
        retry_by: DateTime<Utc>,
        partition: usize,
        limit: i64,
    ) -> Result<Vec<Due<PartyId>>, StoreError> {
        let rows: Vec<(String, bool)> = sqlx::query_as(EXPIRED_ORDERS)
            .bind(now)
            .bind(limit)
            .bind(retry_by)
            .bind(partition as i16)
            .fetch_all(self.pool())
            .instrument(statement("SELECT", "orders"))
            .await?;
        rows.into_iter()
            .map(|(order_id, set_aside)| {
                Ok(Due {
                    id: PartyId::parse(&order_id).map_err(StoreError::Corrupt)?,
                    set_aside,
                })
            })
            .collect()
    }

    /// Leases candidate `partition` of `scan` to `holder` for `lease` (from the database's
    /// clock) if it is free, its lease ran out, or `holder` holds it already; whether
    /// `holder` now holds it.
    pub async fn lease_candidates(
        &self,
        scan: &str,
        partition: usize,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let leased = sqlx::query_scalar!(
            r#"UPDATE worker_partitions SET holder = $3, lease_until = now() + make_interval(secs => $4)
               WHERE scan = $1 AND candidate_partition = $2 AND (holder = $3 OR lease_until < now())
               RETURNING true AS "leased!""#,
            scan,
            partition as i16,
            holder,
            lease.as_secs_f64(),
        )
        .fetch_optional(self.pool())
        .instrument(statement("UPDATE", "worker_partitions"))
        .await?;
        Ok(leased.is_some())
    }

    /// Hands back the candidate partitions leased by holders whose name starts with
    /// `holder` (a worker task's name, or a whole worker's prefix).
    pub async fn hand_back_candidates(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE worker_partitions SET holder = NULL, lease_until = '-infinity'
             WHERE starts_with(holder, $1)",
            holder,
        )
        .execute(self.pool())
        .instrument(statement("UPDATE", "worker_partitions"))
        .await?;
        Ok(())
    }

    /// Sets `candidate` aside after a failure at `now`: one more attempt, tried again
    /// `first_delay × 2^(attempts − 1)` later, at most `max_delay`. `None` if the candidate's
    /// row is gone (it never is: disputes and orders are not deleted).
    pub async fn set_aside(
        &self,
        candidate: &Candidate,
        now: DateTime<Utc>,
        first_delay: std::time::Duration,
        max_delay: std::time::Duration,
        error: &str,
    ) -> Result<Option<Setback>, StoreError> {
        let (first, max) = (first_delay.as_secs_f64(), max_delay.as_secs_f64());
        let Some((order_id, dispute_id)) = self.key_of(candidate).await? else {
            return Ok(None);
        };
        /// The one statement, for a candidate's table, its row and the setbacks' key.
        macro_rules! set_aside {
            ($from:tt, $conflict:tt) => {
                // The exponent stops growing long before the delay could overflow an
                // interval. The retry time is counted in UTC: Citus runs an upsert's
                // update only with immutable functions (timestamptz + interval is not).
                sqlx::query_as!(
                    Setback,
                    r#"INSERT INTO deadline_setbacks AS s (order_id, dispute_id, attempts, retry_at, last_error,
                                                      first_failed_at, candidate_updated_at)
                       SELECT order_id, $6::uuid, 1, $2::timestamptz + make_interval(secs => least($3::float8, $4::float8)),
                              $5, $2, updated_at
                       FROM "# + $from + " ON CONFLICT " + $conflict + r#" DO UPDATE SET
                         attempts = s.attempts + 1,
                         retry_at = (($2::timestamptz AT TIME ZONE 'UTC')
                                     + make_interval(secs => least($3 * power(2, least(s.attempts, 40)), $4)))
                                    AT TIME ZONE 'UTC',
                         last_error = excluded.last_error,
                         candidate_updated_at = excluded.candidate_updated_at
                       RETURNING attempts AS "attempts!", retry_at AS "retry_at!""#,
                    order_id.as_str(),
                    now,
                    first,
                    max,
                    error,
                    dispute_id,
                )
                .fetch_optional(self.pool())
                .instrument(statement("INSERT", "deadline_setbacks"))
                .await?
            };
        }
        let setback = match candidate {
            Candidate::Dispute(_) => set_aside!(
                "disputes WHERE order_id = $1 AND dispute_id = $6",
                "(order_id, dispute_id) WHERE dispute_id IS NOT NULL"
            ),
            Candidate::Order(_) => set_aside!(
                "orders WHERE order_id = $1 AND $6::uuid IS NULL",
                "(order_id) WHERE dispute_id IS NULL"
            ),
        };
        Ok(setback)
    }

    /// The setbacks' key of `candidate`: its order, and its dispute if it is one. `None`:
    /// no such dispute.
    async fn key_of(
        &self,
        candidate: &Candidate,
    ) -> Result<Option<(PartyId, Option<uuid::Uuid>)>, StoreError> {
        Ok(match candidate {
            Candidate::Dispute(id) => self.order_of(*id).await?.map(|order| (order, Some(id.0))),
            Candidate::Order(id) => Some((id.clone(), None)),
        })
    }

    /// Forgets `candidate`'s setback: it has been applied.
    pub async fn clear_setback(&self, candidate: &Candidate) -> Result<(), StoreError> {
        let Some((order_id, dispute_id)) = self.key_of(candidate).await? else {
            return Ok(());
        };
        sqlx::query!(
            "DELETE FROM deadline_setbacks WHERE order_id = $1 AND dispute_id IS NOT DISTINCT FROM $2",
            order_id.as_str(),
            dispute_id,
        )
        .execute(self.pool())
        .instrument(statement("DELETE", "deadline_setbacks"))
        .await?;
        Ok(())
    }

    /// Forgets the setbacks of candidates that changed since they failed (an RPC acted on
    /// them, or someone repaired them) or are no longer open.
    pub async fn prune_setbacks(&self) -> Result<(), StoreError> {
        sqlx::query!(
            r#"DELETE FROM deadline_setbacks s
               WHERE NOT EXISTS (SELECT 1 FROM disputes d
                                 WHERE d.order_id = s.order_id AND d.dispute_id = s.dispute_id
                                   AND d.updated_at = s.candidate_updated_at
                                   AND d.state NOT IN ('CANCELLED', 'RESOLVED'))
                 AND NOT EXISTS (SELECT 1 FROM orders o
                                 WHERE s.dispute_id IS NULL AND o.order_id = s.order_id
                                   AND o.updated_at = s.candidate_updated_at AND o.funds_state = 'HELD')"#
        )
        .execute(self.pool())
        .instrument(statement("DELETE", "deadline_setbacks"))
        .await?;
        Ok(())
    }

    /// Candidates set aside now.
    pub async fn setbacks(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM deadline_setbacks"#)
            .fetch_one(self.pool())
            .instrument(statement("SELECT", "deadline_setbacks"))
            .await?;
        Ok(count)
    }

    /// Forgets idempotency keys created before `before`, a slice of time at a time from
    /// the oldest (`slice` of creation times per statement), until none is left or `limit`
    /// are gone (the last slice may take it past); returns how many. A delete bounded by
    /// time, not by a row count, is one statement on every shard on Citus.
    pub async fn purge_idempotency_keys(
        &self,
        before: DateTime<Utc>,
        slice: std::time::Duration,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let mut done = 0;
        while done < limit {
            let deleted = sqlx::query!(
                r#"DELETE FROM idempotency_keys
                   WHERE created_at < LEAST($1, (SELECT min(created_at) FROM idempotency_keys)
                                                + make_interval(secs => $2::float8))"#,
                before,
                slice.as_secs_f64(),
            )
            .execute(self.pool())
            .instrument(statement("DELETE", "idempotency_keys"))
            .await?
            .rows_affected();
            if deleted == 0 {
                break;
            }
            done += deleted;
        }
        Ok(done)
    }
}

/// The statement of [`Store::due_disputes`], after `prefix` (`EXPLAIN `, or nothing).
fn due_disputes_query(
    prefix: &str,
    cutoffs: &[Cutoff],
    retry_by: DateTime<Utc>,
    partition: usize,
    limit: i64,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut query = sqlx::QueryBuilder::new(prefix);
    query.push(
        "SELECT d.dispute_id, EXISTS (SELECT 1 FROM deadline_setbacks s \
         WHERE s.order_id = d.order_id AND s.dispute_id = d.dispute_id) AS set_aside \
         FROM disputes d WHERE (hashtext(d.order_id) & 15)::smallint = ",
    );
    query.push_bind(partition as i16).push(" AND (false");
    for cutoff in cutoffs {
        query
            .push(" OR (d.state = ")
            .push_bind(codec::state_str(cutoff.state))
            .push(format_args!(" AND d.{} <= ", clock_column(cutoff.clock)))
            .push_bind(cutoff.started_before)
            .push(")");
    }
    query
        .push(
            ") AND NOT EXISTS (SELECT 1 FROM deadline_setbacks s \
             WHERE s.order_id = d.order_id AND s.dispute_id = d.dispute_id AND s.retry_at > ",
        )
        .push_bind(retry_by)
        .push(") ORDER BY d.updated_at LIMIT ")
        .push_bind(limit);
    query
}

/// The disputes column each deadline clock reads.
fn clock_column(clock: Clock) -> &'static str {
    match clock {
        Clock::Opened => "created_at",
        Clock::ReturnAgreed => "return_agreed_at",
        Clock::ReturnShipped => "return_shipped_at",
        Clock::ReplacementAgreed => "replacement_agreed_at",
        Clock::ReplacementShipped => "replacement_shipped_at",
    }
}
