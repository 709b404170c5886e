//! The deadline worker (README, "Deadlines"), running inside `serve`. Every replica runs one: they
//! find the same candidates, but each candidate is locked with `SKIP LOCKED` and re-decided
//! by the domain in its own transaction, so every deadline is applied exactly once. A
//! failed pass (say, the database is down) is logged and retried with backoff.

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    commands::{Commands, Error},
    domain::Deadlines,
    shutdown::stopped,
    store::Store,
};

/// Longest wait between failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How often due deadlines are looked for.
    pub interval: Duration,
    /// Candidates fetched per scan.
    pub batch: i64,
    pub deadlines: Deadlines,
    /// Idempotency keys older than this are forgotten (at least 24 h).
    pub idempotency_retention: chrono::Duration,
    /// Outbox events older than this are deleted (the history stays).
    pub outbox_retention: chrono::Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub deadlines_applied: usize,
    pub orders_released: usize,
    pub keys_purged: u64,
    pub events_purged: u64,
}

pub struct DeadlineWorker {
    store: Store,
    commands: Commands,
    config: WorkerConfig,
}

impl DeadlineWorker {
    pub fn new(store: Store, commands: Commands, config: WorkerConfig) -> Self {
        Self {
            store,
            commands,
            config,
        }
    }

    /// Applies everything due now: dispute deadlines, then protection ends; then forgets
    /// expired idempotency keys and outbox events. One trace per pass, started by nothing.
    pub async fn run_once(&self) -> Result<Pass, Error> {
        let span =
            tracing::info_span!(parent: None, "worker.pass", otel.name = "deadline worker pass");
        self.pass().instrument(span).await
    }

    async fn pass(&self) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        loop {
            let cutoffs = self.config.deadlines.cutoffs(self.commands.now());
            let due = self.store.due_disputes(&cutoffs, self.config.batch).await?;
            let mut applied = 0;
            for dispute_id in &due {
                applied += usize::from(skip_broken(
                    self.commands
                        .apply_deadline(*dispute_id, &self.config.deadlines)
                        .await,
                )?);
            }
            pass.deadlines_applied += applied;
            if (due.len() as i64) < self.config.batch || applied == 0 {
                break;
            }
        }
        loop {
            let expired = self
                .store
                .expired_orders(self.commands.now(), self.config.batch)
                .await?;
            let mut released = 0;
            for order_id in &expired {
                released += usize::from(skip_broken(
                    self.commands.release_if_protection_ended(order_id).await,
                )?);
            }
            pass.orders_released += released;
            if (expired.len() as i64) < self.config.batch || released == 0 {
                break;
            }
        }
        let forget_before = self.commands.now() - self.config.idempotency_retention;
        pass.keys_purged = self
            .store
            .purge_idempotency_keys(forget_before, 10_000)
            .await?;
        let events_before = self.commands.now() - self.config.outbox_retention;
        pass.events_purged = self.store.purge_outbox(events_before, 10_000).await?;
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

/// One broken item (a bug, a corrupt row) must not stop every other deadline: log it and
/// go on. An unreachable database ends the pass.
fn skip_broken(result: Result<bool, Error>) -> Result<bool, Error> {
    match result {
        Err(unavailable @ Error::Unavailable(_)) => Err(unavailable),
        Err(error) => {
            tracing::error!(error = ?error, "deadline could not be applied; skipping it this pass");
            Ok(false)
        }
        ok => ok,
    }
}
