//! The stream's relay (README, "Consuming the event stream"): moves committed outbox rows
//! into the event log, partition by partition. Every replica runs one; a partition is
//! moved by the replica holding its lease (`stream_relays`), which it renews while it
//! runs and gives up when it stops, and which any other replica takes once it has run
//! out. The relay moves what it finds waiting (by state, not by position), so a
//! transaction that commits late is moved on a later pass, never skipped; an order's
//! events go in their sequence, and the log's keys refuse a second copy, so a replica that
//! lost its lease while it was appending cannot duplicate or reorder anything.
//!
//! A pass: renew the leases (when a third of the lease has gone by), read up to a batch of
//! the held partitions' rows, append them (in one transaction on one PostgreSQL; a partition per transaction, on its
//! shard, on Citus), delete the moved rows from the outbox, note the new tails and notify
//! the readers once. It runs when a command of this process commits events (at most once
//! every [`RelayConfig::gather`]), every [`RelayConfig::poll`] otherwise, and at once again
//! after a full batch.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::Utc;
use tokio::time::Instant;

use crate::{
    domain::STREAM_PARTITIONS,
    metrics::Metrics,
    shutdown::{Stop, stopped},
    store::{Store, StoreError, Unrelayed},
};

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Who holds a lease: unique per process.
    pub holder: String,
    /// How long a lease lasts unless renewed: how long partitions of a replica that died
    /// wait for another.
    pub lease: Duration,
    /// How often the relay looks for rows when no command of this process woke it (rows
    /// written through other replicas).
    pub poll: Duration,
    /// How long after the start of a pass a commit of this process may wake the next
    /// one: the commits of that interval are moved together, in one pass's statements, not
    /// a pass each (under load a pass per commit cost more database time than the
    /// commands; see BENCHMARKS.md). It bounds how much later than at once an event
    /// reaches the stream.
    pub gather: Duration,
    /// Most outbox rows moved per pass.
    pub batch: i64,
}

/// [`RelayConfig::poll`] by default.
pub const POLL: Duration = Duration::from_millis(100);
/// [`RelayConfig::gather`] by default.
pub const GATHER: Duration = Duration::from_millis(10);

impl RelayConfig {
    /// The defaults, for a holder named after this host and process.
    pub fn new() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dispute-service".to_owned());
        Self {
            holder: format!("{host}/{}", uuid::Uuid::now_v7()),
            lease: Duration::from_secs(5),
            poll: POLL,
            gather: GATHER,
            batch: 1000,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Partitions this relay holds.
    pub held: usize,
    /// Outbox rows read.
    pub read: usize,
    /// Events appended to the log.
    pub appended: usize,
    /// Whether the read was a full batch (more may wait).
    pub full: bool,
}

pub struct Relay {
    store: Store,
    metrics: Metrics,
    config: RelayConfig,
    held: Vec<usize>,
    renew_at: Instant,
}

/// Longest wait after failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Relay {
    pub fn new(store: Store, metrics: Metrics, config: RelayConfig) -> Self {
        Self {
            store,
            metrics,
            config,
            held: Vec::new(),
            // The first pass leases at once.
            renew_at: Instant::now(),
        }
    }

    /// One pass (see the module's doc).
    pub async fn step(&mut self) -> Result<Moved, StoreError> {
        // Renewed (and free partitions looked for) every third of a lease, held or not.
        if Instant::now() >= self.renew_at {
            self.renew_at = Instant::now() + self.config.lease / 3;
            let held = self
                .store
                .lease_partitions(&self.config.holder, self.config.lease)
                .await?;
            // Partitions another replica now holds: that one reports their lag.
            for lost in self.held.iter().filter(|p| !held.contains(p)) {
                self.metrics.relay_lag(*lost, 0.0);
            }
            self.held = held;
        }
        if self.held.is_empty() {
            return Ok(Moved::default());
        }
        let rows = self.store.unrelayed(&self.held, self.config.batch).await?;
        let read = rows.len();
        self.report_lag(&rows, read as i64 == self.config.batch);
        let mut by_partition: BTreeMap<usize, Vec<Unrelayed>> = BTreeMap::new();
        for row in rows {
            by_partition
                .entry(row.event.at.partition)
                .or_default()
                .push(row);
        }
        let mut result = self.store.append(&by_partition, &HashMap::new()).await?;
        if result.held_back > 0 {
            // Held back: an order's first event here is not the one after its last in the
            // log. Either retention deleted the order's logged events (then it continues
            // from its first waiting one) or its predecessor was not read; the outbox tells.
            let mut orders: Vec<&str> = by_partition
                .values()
                .flatten()
                .map(|u| u.event.order_id.as_str())
                .collect();
            orders.sort_unstable();
            orders.dedup();
            let waiting = self.store.waiting_from(&orders).await?;
            let again = self.store.append(&by_partition, &waiting).await?;
            result.tails.extend(again.tails);
            result.appended += again.appended;
            result.done.extend(again.done);
            result.held_back = again.held_back;
        }
        if result.held_back > 0 {
            tracing::warn!(
                held_back = result.held_back,
                "events held back until their order's earlier events are read"
            );
        }
        let (done, appended) = (result.done, result.appended);
        // Noted (and readers woken) for partitions whose rows were found in the log too:
        // an earlier pass may have appended them and stopped before it noted them. One
        // tail per partition, the furthest.
        let mut furthest: BTreeMap<usize, i64> = BTreeMap::new();
        for (partition, through) in result.tails {
            let tail = furthest.entry(partition).or_default();
            *tail = (*tail).max(through);
        }
        let tails: Vec<(usize, i64)> = furthest.into_iter().collect();
        let moved = !done.is_empty();
        self.store.forget_relayed(&done).await?;
        if !tails.is_empty() {
            self.store.appended(&tails).await?;
        }
        self.metrics.events_relayed(appended as u64);
        Ok(Moved {
            held: self.held.len(),
            read,
            appended,
            // More may wait — unless the batch moved nothing (rows held back), which a
            // pass at once would only read again.
            full: read as i64 == self.config.batch && moved,
        })
    }

    /// The age of the oldest row waiting in each held partition: 0 when none waits; for a
    /// partition a full batch did not reach, the age of the newest row read (its rows come
    /// after those, so that bounds its oldest one's age).
    fn report_lag(&self, rows: &[Unrelayed], full: bool) {
        let now = Utc::now();
        let age = |at: chrono::DateTime<Utc>| (now - at).num_milliseconds().max(0) as f64 / 1000.0;
        let mut oldest = [None; STREAM_PARTITIONS];
        for row in rows {
            let slot = &mut oldest[row.event.at.partition];
            if slot.is_none_or(|at| row.event.occurred_at < at) {
                *slot = Some(row.event.occurred_at);
            }
        }
        let beyond = rows
            .iter()
            .map(|row| row.event.occurred_at)
            .max()
            .filter(|_| full)
            .map_or(0.0, age);
        for &partition in &self.held {
            let lag = oldest[partition].map_or(beyond, age);
            self.metrics.relay_lag(partition, lag);
        }
    }

    /// Runs passes until `stop`, then gives the leases up. A failed pass is logged and
    /// retried with backoff.
    pub async fn run(mut self, mut stop: Stop) {
        let mut wake = self.store.committed_events();
        let mut wait = self.config.poll;
        loop {
            let started = Instant::now();
            match self.step().await {
                Ok(moved) => {
                    wait = self.config.poll;
                    if moved.full {
                        if crate::shutdown::is_stopped(&stop) {
                            break;
                        }
                        continue;
                    }
                }
                Err(error) => {
                    wait = (wait * 2).clamp(self.config.poll, MAX_BACKOFF);
                    tracing::warn!(%error, retry_in = ?wait, "event relay pass failed");
                }
            }
            tokio::select! {
                changed = wake.changed() => match changed {
                    Ok(()) => tokio::time::sleep_until(started + self.config.gather).await,
                    Err(_) => tokio::time::sleep(wait).await,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut stop) => break,
            }
        }
        if let Err(error) = self.store.release_partitions(&self.config.holder).await {
            tracing::warn!(%error, "giving up the relay's leases failed; they run out");
        }
    }
}
