//! Use cases: one transaction per command. Each locks the order it changes first, then
//! claims the request's idempotency key, asks the domain what to do, and writes the new
//! facts, the settlement ledger and the events together. Reads apply the same
//! visibility rule as the domain.

mod deadlines;
mod events;
mod reads;
mod writes;

pub use reads::ListPage;
pub use writes::RegisterOutcome;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use thiserror::Error;

use tracing::Instrument;

use crate::{
    clock::Clock,
    domain::{Actor, Change, DomainError, Order, PartyId, TraceId},
    metrics::Metrics,
    store::{self, IdempotencyKey, KeyState, Store, StoreError},
};

/// Every way a command can fail.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The request id was used before, by the same actor and RPC, with another payload.
    #[error("request id reused with a different payload")]
    RequestIdReused,
    /// The consumer's cursor points at events retention has deleted.
    #[error("cursor expired")]
    CursorExpired,
    /// The request was done before: this is its response. Only [`Commands::idempotent`]
    /// sees it; it turns it into that response.
    #[error("replayed response")]
    Replay(Vec<u8>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The service's commands and queries over one store and one clock.
#[derive(Clone)]
pub struct Commands {
    store: Store,
    clock: Arc<dyn Clock>,
    max_disputes_per_order: i32,
    metrics: Metrics,
}

/// What a committed command did: counted and logged only once its transaction has
/// committed, so neither a metric nor a success line ever describes a rolled-back write.
#[derive(Debug)]
pub enum Done {
    OrderRegistered { order_id: PartyId, created: bool },
    DisputeChanged(Box<Change>),
    ProtectionExtended(Order),
}

impl Done {
    fn report(&self, metrics: &Metrics) {
        match self {
            Done::OrderRegistered { order_id, created } => {
                if *created {
                    tracing::info!(%order_id, "order registered");
                }
            }
            Done::DisputeChanged(change) => {
                metrics.dispute_changed(change);
                tracing::info!(
                    dispute_id = %change.dispute.dispute_id,
                    order_id = %change.order.order_id,
                    event = change.event.as_str(),
                    settled = change.settlement.is_some(),
                    "dispute changed"
                );
            }
            Done::ProtectionExtended(order) => {
                tracing::info!(
                    order_id = %order.order_id,
                    protection_ends_at = %order.protection_ends_at,
                    "protection extended"
                );
            }
        }
    }
}

/// Who caused a change, and in which trace: kept with every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    pub trace_id: TraceId,
}

impl Origin {
    /// The service itself (the deadline worker), in the trace of the span it runs in.
    pub fn system() -> Self {
        Self {
            actor: Actor::system(),
            trace_id: crate::telemetry::trace_id(&tracing::Span::current()),
        }
    }
}

/// A request's idempotency key, for the command to claim once it holds its locks, and
/// where the request came from.
pub struct KeyClaim {
    key: IdempotencyKey,
    origin: Origin,
    clock: Arc<dyn Clock>,
}

impl KeyClaim {
    /// Claims the key and returns the time the command runs at: read once the command
    /// holds its locks, so a command that waited for them does not decide on a stale
    /// time. A request done before ends the command with its first response.
    pub async fn claim(&self, conn: &mut PgConnection) -> Result<DateTime<Utc>, Error> {
        let now = self.clock.now();
        match store::claim(conn, &self.key, now).await? {
            KeyState::Fresh => Ok(now),
            KeyState::Replay(response) => Err(Error::Replay(response)),
            KeyState::Reused => Err(Error::RequestIdReused),
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl Commands {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        max_disputes_per_order: i32,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            clock,
            max_disputes_per_order,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs `command` in one transaction under an idempotency key and returns its encoded
    /// response, or the response the first call with this key got. A different payload
    /// under the same key is refused; a refused command leaves no key behind. What the
    /// command did is counted and logged after COMMIT.
    pub async fn idempotent<F>(
        &self,
        key: IdempotencyKey,
        trace_id: TraceId,
        command: F,
    ) -> Result<Vec<u8>, Error>
    where
        F: for<'c> FnOnce(
            &'c mut PgConnection,
            KeyClaim,
        ) -> BoxFuture<'c, Result<(Vec<u8>, Done), Error>>,
    {
        let (response, done) = self
            .transaction(key, trace_id, command)
            .instrument(store::transaction_span())
            .await?;
        if let Some(done) = done {
            done.report(&self.metrics);
        }
        Ok(response)
    }

    async fn transaction<F>(
        &self,
        key: IdempotencyKey,
        trace_id: TraceId,
        command: F,
    ) -> Result<(Vec<u8>, Option<Done>), Error>
    where
        F: for<'c> FnOnce(
            &'c mut PgConnection,
            KeyClaim,
        ) -> BoxFuture<'c, Result<(Vec<u8>, Done), Error>>,
    {
        let mut tx = self.store.begin().await?;
        let claim = KeyClaim {
            origin: Origin {
                actor: key.actor.clone(),
                trace_id,
            },
            key: key.clone(),
            clock: self.clock.clone(),
        };
        let (response, done) = match command(&mut tx, claim).await {
            Err(Error::Replay(response)) => return Ok((response, None)),
            other => other?,
        };
        store::complete(&mut tx, &key, &response).await?;
        store::commit(tx).await?;
        Ok((response, Some(done)))
    }
}
