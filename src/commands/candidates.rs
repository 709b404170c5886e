//! What the deadline worker finds and books, through the commands: the disputes due now by
//! the deadlines this service runs with, the orders whose protection has ended, the
//! bookkeeping of candidates set aside, and the retention purges. The worker decides when
//! and in what order; it never reaches into the store itself (`scripts/module-graph`).

use chrono::{DateTime, Utc};

use super::{Commands, Error};
use crate::store::{Candidate, Due, Setback};

/// The two kinds of candidate the worker scans for, in the order it drains them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Open disputes whose deadline has passed, oldest change first.
    Deadlines,
    /// Orders whose protection has ended with their funds held and no active dispute.
    ProtectionEnds,
}

impl Scan {
    pub const ALL: [Scan; 2] = [Scan::Deadlines, Scan::ProtectionEnds];

    /// Its name in `worker_partitions`.
    fn name(self) -> &'static str {
        match self {
            Scan::Deadlines => "DEADLINES",
            Scan::ProtectionEnds => "PROTECTION_ENDS",
        }
    }
}

/// The candidates of each scan are cut into this many partitions, by a hash of their
/// order (migration 12's `worker_partitions` holds one lease per scan and partition).
pub const CANDIDATE_PARTITIONS: usize = 16;

/// How much of the keys' creation time one purge statement covers.
const KEY_PURGE_SLICE: std::time::Duration = std::time::Duration::from_secs(60);

impl Commands {
    /// At most `limit` candidates of `scan` in `partition` due now (by the deadlines this
    /// service runs with); those set aside with a retry time after `retry_by` are skipped.
    pub async fn due(
        &self,
        scan: Scan,
        partition: usize,
        retry_by: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Due<Candidate>>, Error> {
        let now = self.now();
        let due = match scan {
            Scan::Deadlines => {
                let cutoffs = self.deadlines.cutoffs(now);
                let due = self
                    .store
                    .due_disputes(&cutoffs, retry_by, partition, limit)
                    .await?;
                due.into_iter()
                    .map(|d| Due {
                        id: Candidate::Dispute(d.id),
                        set_aside: d.set_aside,
                    })
                    .collect()
            }
            Scan::ProtectionEnds => {
                let due = self
                    .store
                    .expired_orders(now, retry_by, partition, limit)
                    .await?;
                due.into_iter()
                    .map(|d| Due {
                        id: Candidate::Order(d.id),
                        set_aside: d.set_aside,
                    })
                    .collect()
            }
        };
        Ok(due)
    }

    /// The query plans of both scans of `partition` as they would run now.
    pub async fn explain_scans(&self, partition: usize, limit: i64) -> Result<Vec<String>, Error> {
        let now = self.now();
        let cutoffs = self.deadlines.cutoffs(now);
        Ok(self
            .store
            .explain_scans(&cutoffs, now, partition, limit)
            .await?)
    }

    /// Leases `partition` of `scan`'s candidates to `holder` for `lease`, unless someone
    /// else holds it; whether `holder` holds it now.
    pub async fn lease_candidates(
        &self,
        scan: Scan,
        partition: usize,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, Error> {
        Ok(self
            .store
            .lease_candidates(scan.name(), partition, holder, lease)
            .await?)
    }

    /// Hands back every candidate partition leased by a holder whose name starts with
    /// `holder`.
    pub async fn hand_back_candidates(&self, holder: &str) -> Result<(), Error> {
        Ok(self.store.hand_back_candidates(holder).await?)
    }

    /// Applies `candidate` if it is (still) due: its dispute's deadline, or its order's
    /// release at the end of protection. `false` when another replica holds it or it
    /// became moot.
    pub async fn apply(&self, candidate: &Candidate) -> Result<bool, Error> {
        match candidate {
            Candidate::Dispute(dispute_id) => self.apply_deadline(*dispute_id).await,
            Candidate::Order(order_id) => self.release_if_protection_ended(order_id).await,
        }
    }

    /// Sets `candidate` aside after a failure: tried again `first_delay × 2^(attempts − 1)`
    /// from now, at most `max_delay`.
    pub async fn set_aside(
        &self,
        candidate: &Candidate,
        first_delay: std::time::Duration,
        max_delay: std::time::Duration,
        error: &str,
    ) -> Result<Option<Setback>, Error> {
        let now = self.now();
        Ok(self
            .store
            .set_aside(candidate, now, first_delay, max_delay, error)
            .await?)
    }

    /// `candidate` applied after all: no longer set aside.
    pub async fn clear_setback(&self, candidate: &Candidate) -> Result<(), Error> {
        Ok(self.store.clear_setback(candidate).await?)
    }

    /// Forgets the setbacks of candidates that changed or closed since they failed.
    pub async fn prune_setbacks(&self) -> Result<(), Error> {
        Ok(self.store.prune_setbacks().await?)
    }

    /// How many candidates are set aside now.
    pub async fn stuck_candidates(&self) -> Result<i64, Error> {
        Ok(self.store.setbacks().await?)
    }

    /// Forgets idempotency keys older than `retention`, a minute of them at a time, until
    /// about `limit` are gone; how many.
    pub async fn forget_idempotency_keys(
        &self,
        retention: chrono::Duration,
        limit: u64,
    ) -> Result<u64, Error> {
        let before = self.now() - retention;
        Ok(self
            .store
            .purge_idempotency_keys(before, KEY_PURGE_SLICE, limit)
            .await?)
    }

    /// Deletes, in each stream partition, at most `limit` events relayed longer than
    /// `retention` ago; how many.
    pub async fn purge_stream_events(
        &self,
        retention: chrono::Duration,
        limit: i64,
    ) -> Result<u64, Error> {
        let before = self.now() - retention;
        Ok(self.store.purge_log(before, limit).await?)
    }
}
