//! Use cases: one transaction per command, owned here from BEGIN to COMMIT by one
//! pipeline ([`pipeline`]): it locks the order (and the dispute) a change acts on, claims
//! the request's idempotency key (or returns the reply saved for it), asks the domain what
//! to do, writes the new facts, the settlement ledger, the events and the reply in one
//! statement, commits, and only then counts and logs what it did. The edge hands in a
//! parsed command and gets a domain value back. Reads apply the same visibility rule as
//! the domain.

mod candidates;
mod deadlines;
mod events;
mod idempotency;
mod pipeline;
mod reads;
mod writes;

pub use crate::store::{Candidate, Due, Setback};
pub use candidates::{CANDIDATE_PARTITIONS, Scan};
pub use idempotency::RequestKey;
pub use reads::ListPage;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::{
    clock::Clock,
    domain::{Actor, Change, Deadlines, DomainError, Order, PartyId, Settlement, TraceId},
    metrics::Metrics,
    store::{Store, StoreError},
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
    /// The database cannot be reached now: retry later.
    #[error(transparent)]
    Unavailable(StoreError),
    /// A real internal fault (a bug, a corrupt row, an unexpected database error).
    #[error(transparent)]
    Internal(StoreError),
}

impl From<StoreError> for Error {
    /// A write the schema refused is the domain error of the rule behind the constraint.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Refused { refusal, .. } => Error::Domain(refusal),
            unavailable @ (StoreError::Unavailable(_) | StoreError::Contended(_)) => {
                Error::Unavailable(unavailable)
            }
            other => Error::Internal(other),
        }
    }
}

/// The service's commands and queries over one store and one clock.
#[derive(Clone)]
pub struct Commands {
    store: Store,
    clock: Arc<dyn Clock>,
    max_disputes_per_order: i32,
    /// The terms a command runs under (a replacement's delivery window).
    deadlines: Deadlines,
    metrics: Metrics,
}

/// What a committed command did: counted and logged only once its transaction has
/// committed, so neither a metric nor a success line ever describes a rolled-back write.
#[derive(Debug)]
enum Done {
    OrderRegistered {
        order_id: PartyId,
        created: bool,
    },
    DisputeChanged(Box<Change>),
    ProtectionExtended(Order),
    /// The worker applied a dispute's deadline (reported in its `deadline` span).
    DeadlineApplied(Box<Change>),
    /// The worker released an order's funds at the end of its protection.
    ProtectionEnded(Order, Settlement),
    /// A retry answered with the reply saved for its key: reported the first time.
    Replayed,
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
            Done::DeadlineApplied(change) => {
                let span = tracing::Span::current();
                span.record("order.id", change.order.order_id.as_str());
                span.record("deadline.kind", change.event.as_str());
                metrics.dispute_changed(change);
                let dispute_id = change.dispute.dispute_id;
                tracing::info!(%dispute_id, event = change.event.as_str(), "deadline applied");
            }
            Done::ProtectionEnded(order, settlement) => {
                metrics.protection_ended(order, settlement);
                let order_id = &order.order_id;
                tracing::info!(%order_id, "protection ended; funds released to the seller");
            }
            Done::Replayed => {}
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

impl Commands {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        max_disputes_per_order: i32,
        deadlines: Deadlines,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            clock,
            max_disputes_per_order,
            deadlines,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
