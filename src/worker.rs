//! The deadline worker (README, "Deadlines"), running inside `serve`. Every replica runs one.
//! The candidates of each scan are cut into [`CANDIDATE_PARTITIONS`] partitions by a hash of
//! their order; a pass runs `concurrency` tasks, and each task leases a partition nobody
//! holds (`worker_partitions`), drains it, hands it back and goes on to the next, so the
//! replicas and the tasks inside each share a wave of deadlines instead of all walking the
//! same oldest candidates. The lease only saves work: each candidate is still locked with
//! `SKIP LOCKED` and re-decided by the domain in its own transaction, so every deadline is
//! applied exactly once whoever holds what. A failed pass (say, the database is down) is
//! logged and retried with backoff; a replica that dies leaves its leases to run out
//! ([`LEASE`]).
//!
//! A candidate that fails to apply for any other reason (a corrupt row, a bug, a trigger) is
//! set aside (`deadline_setbacks`): logged with its id, attempts, retry time and error,
//! skipped by the scans until `interval × 2^(attempts − 1)` after the failure (at most
//! [`MAX_RETRY_DELAY`]), and counted in `dispute_deadline_candidates_stuck`. The scan then
//! goes on past it, so no number of broken candidates at the head of the queue holds up a
//! healthy one. A candidate set aside during a pass is not tried again in that pass, so
//! every batch either applies or sets aside something new, or ends the scan.

use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    commands::{CANDIDATE_PARTITIONS, Candidate, Commands, Due, Error, Scan},
    shutdown::stopped,
};

/// How long a task's lease of a partition lasts; renewed after every batch.
pub const LEASE: Duration = Duration::from_secs(15);

/// Longest wait between failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait before a set-aside candidate is tried again (the first wait is the
/// worker's interval, doubling with each failure).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The longest error text kept with a set-aside candidate.
const MAX_ERROR_CHARS: usize = 2000;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How often due deadlines are looked for.
    pub interval: Duration,
    /// Candidates fetched per scan.
    pub batch: i64,
    /// Partitions drained at once (each a task applying its candidates one at a time).
    pub concurrency: usize,
    /// Idempotency keys older than this are forgotten (at least 24 h).
    pub idempotency_retention: chrono::Duration,
    /// Stream events relayed to the log longer ago than this are deleted (the history
    /// stays).
    pub outbox_retention: chrono::Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub deadlines_applied: usize,
    pub orders_released: usize,
    pub keys_purged: u64,
    pub events_purged: u64,
    /// Candidates (dispute deadlines and protection ends) that failed and were set aside.
    pub set_aside: usize,
}

impl std::ops::AddAssign for Pass {
    fn add_assign(&mut self, other: Pass) {
        self.deadlines_applied += other.deadlines_applied;
        self.orders_released += other.orders_released;
        self.keys_purged += other.keys_purged;
        self.events_purged += other.events_purged;
        self.set_aside += other.set_aside;
    }
}

/// What became of one candidate.
enum Tried {
    Applied,
    /// Moot, or another replica holds it.
    Skipped,
    SetAside,
}

pub struct DeadlineWorker {
    commands: Commands,
    config: WorkerConfig,
    /// Its leases' holder names start with this (`<host>/<uuid>/`), one per task:
    /// `<host>/<uuid>/<task>/`.
    name: String,
}

impl DeadlineWorker {
    /// A worker that applies the deadlines `commands` runs with.
    pub fn new(commands: Commands, config: WorkerConfig) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dispute-service".to_owned());
        let name = format!("{host}/{}/", uuid::Uuid::now_v7());
        Self {
            commands,
            config,
            name,
        }
    }

    /// Applies everything due now: dispute deadlines, then protection ends; then forgets
    /// expired idempotency keys and stream events. One trace per pass, started by nothing.
    pub async fn run_once(&self) -> Result<Pass, Error> {
        let span =
            tracing::info_span!(parent: None, "worker.pass", otel.name = "deadline worker pass");
        self.pass().instrument(span).await
    }

    async fn pass(&self) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        // Candidates set aside until after the pass began are skipped, so one set aside
        // during this pass is not tried again in it.
        let started = self.commands.now();
        self.commands.prune_setbacks().await?;
        for scan in Scan::ALL {
            let tasks = (0..self.config.concurrency).map(|task| self.drain(scan, task, started));
            let mut failed = None;
            for done in join_all(tasks).await {
                match done {
                    Ok(done) => pass += done,
                    Err(error) => failed = Some(error),
                }
            }
            if let Some(error) = failed {
                return Err(error);
            }
        }
        let stuck = self.commands.stuck_candidates().await?;
        self.commands.metrics().deadline_candidates_stuck(stuck);
        pass.keys_purged = self
            .commands
            .forget_idempotency_keys(self.config.idempotency_retention, 10_000)
            .await?;
        pass.events_purged = self
            .commands
            .purge_stream_events(self.config.outbox_retention, 10_000)
            .await?;
        Ok(pass)
    }

    /// The query plans of the worker's two scans of candidate `partition` as they would run
    /// now (the test at scale prints them).
    pub async fn explain_scans(&self, partition: usize) -> Result<Vec<String>, Error> {
        self.commands
            .explain_scans(partition, self.config.batch)
            .await
    }

    /// One task of a pass over `scan`: every partition in turn, from one of its own, each
    /// drained if no one else holds it. The tasks of a worker start spread over the
    /// partitions, so they rarely ask for the same one.
    async fn drain(
        &self,
        scan: Scan,
        task: usize,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<Pass, Error> {
        let holder = format!("{}{task}/", self.name);
        let first = task * CANDIDATE_PARTITIONS / self.config.concurrency.max(1);
        let mut pass = Pass::default();
        for step in 0..CANDIDATE_PARTITIONS {
            let partition = (first + step) % CANDIDATE_PARTITIONS;
            if !self
                .commands
                .lease_candidates(scan, partition, &holder, LEASE)
                .await?
            {
                continue;
            }
            let drained = self
                .drain_partition(scan, partition, &holder, started)
                .await;
            // Handed back even after a failure, unless the database is away (then the
            // lease runs out, or this task takes it again).
            self.commands.hand_back_candidates(&holder).await?;
            pass += drained?;
        }
        Ok(pass)
    }

    /// Applies the candidates of `partition` due now, a batch at a time, while `holder`
    /// keeps its lease.
    async fn drain_partition(
        &self,
        scan: Scan,
        partition: usize,
        holder: &str,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        loop {
            let due = self
                .commands
                .due(scan, partition, started, self.config.batch)
                .await?;
            let mut progress = 0;
            for Due { id, set_aside } in &due {
                let result = self.commands.apply(id).await;
                match (self.tried(id, *set_aside, result).await?, id) {
                    (Tried::Applied, Candidate::Dispute(_)) => pass.deadlines_applied += 1,
                    (Tried::Applied, Candidate::Order(_)) => pass.orders_released += 1,
                    (Tried::SetAside, _) => pass.set_aside += 1,
                    (Tried::Skipped, _) => continue,
                }
                progress += 1;
            }
            if (due.len() as i64) < self.config.batch || progress == 0 {
                return Ok(pass);
            }
            if !self
                .commands
                .lease_candidates(scan, partition, holder, LEASE)
                .await?
            {
                // The lease ran out and someone else took the partition over.
                return Ok(pass);
            }
        }
    }

    /// Runs passes every `interval` until `stop` turns true; a pass under way finishes,
    /// then the worker's leases are handed back.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wait = self.config.interval;
        loop {
            match self.run_once().await {
                Ok(pass) => {
                    if pass != Pass::default() {
                        tracing::info!(?pass, "deadline pass");
                    }
                    wait = self.config.interval;
                }
                Err(error) => {
                    wait = (wait * 2).clamp(self.config.interval, MAX_BACKOFF);
                    tracing::warn!(%error, retry_in = ?wait, "deadline pass failed; backing off");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut stop) => break,
            }
        }
        if let Err(error) = self.commands.hand_back_candidates(&self.name).await {
            tracing::warn!(%error, "could not hand the deadline partitions back; their leases run out");
        }
    }
}

impl DeadlineWorker {
    /// Books the `result` of applying `candidate`. One broken candidate (a bug, a corrupt
    /// row) must not stop every other deadline: it is set aside with backoff, logged, and
    /// the scan goes on. An unreachable database ends the pass. A candidate applied after
    /// being set aside is no longer stuck.
    async fn tried(
        &self,
        candidate: &Candidate,
        was_set_aside: bool,
        result: Result<bool, Error>,
    ) -> Result<Tried, Error> {
        match result {
            Ok(true) => {
                if was_set_aside {
                    self.commands.clear_setback(candidate).await?;
                }
                Ok(Tried::Applied)
            }
            Ok(false) => Ok(Tried::Skipped),
            Err(unavailable @ Error::Unavailable(_)) => Err(unavailable),
            Err(error) => {
                let text: String = error.to_string().chars().take(MAX_ERROR_CHARS).collect();
                let setback = self
                    .commands
                    .set_aside(candidate, self.config.interval, MAX_RETRY_DELAY, &text)
                    .await?;
                let (attempts, retry_at) = setback.map_or((None, None), |s| {
                    (Some(s.attempts), Some(s.retry_at.to_rfc3339()))
                });
                match candidate {
                    Candidate::Dispute(dispute_id) => tracing::error!(
                        %dispute_id, attempts, retry_at, error = ?error,
                        "deadline could not be applied; dispute set aside until its retry time"
                    ),
                    Candidate::Order(order_id) => tracing::error!(
                        %order_id, attempts, retry_at, error = ?error,
                        "protection end could not be applied; order set aside until its retry time"
                    ),
                }
                Ok(Tried::SetAside)
            }
        }
    }
}
