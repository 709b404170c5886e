//! The deadline worker (README, "Deadlines"), running inside `serve`. Every replica runs one: they
//! find the same candidates, but each candidate is locked with `SKIP LOCKED` and re-decided
//! by the domain in its own transaction, so every deadline is applied exactly once. A
//! failed pass (say, the database is down) is logged and retried with backoff.
//!
//! A candidate that fails to apply for any other reason (a corrupt row, a bug, a trigger) is
//! set aside (`deadline_setbacks`): logged with its id, attempts, retry time and error,
//! skipped by the scans until `interval × 2^(attempts − 1)` after the failure (at most
//! [`MAX_RETRY_DELAY`]), and counted in `dispute_deadline_candidates_stuck`. The scan then
//! goes on past it, so no number of broken candidates at the head of the queue holds up a
//! healthy one. A candidate set aside during a pass is not tried again in that pass, so
//! every batch either applies or sets aside something new, or ends the scan.

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    commands::{Candidate, Commands, Due, Error, Scan},
    shutdown::stopped,
};

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
}

impl DeadlineWorker {
    /// A worker that applies the deadlines `commands` runs with.
    pub fn new(commands: Commands, config: WorkerConfig) -> Self {
        Self { commands, config }
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
            loop {
                let due = self.commands.due(scan, started, self.config.batch).await?;
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
                    break;
                }
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

    /// Runs passes every `interval` until `stop` turns true; a pass under way finishes.
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
                _ = stopped(&mut stop) => return,
            }
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
