//! Use cases: one transaction per command. Each locks the rows it changes (the order
//! first), asks the domain what to do, and writes the new facts, the settlement ledger
//! and the history together. Reads apply the same visibility rule as the domain.

mod deadlines;
mod reads;
mod writes;

pub use reads::ListPage;
pub use writes::RegisterOutcome;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use thiserror::Error;

use crate::{
    clock::Clock,
    domain::DomainError,
    store::{self, Claim, IdempotencyKey, Store, StoreError},
};

/// Every way a command can fail.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The request id was used before, by the same actor and RPC, with another payload.
    #[error("request id reused with a different payload")]
    RequestIdReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The service's commands and queries over one store and one clock.
#[derive(Clone)]
pub struct Commands {
    store: Store,
    clock: Arc<dyn Clock>,
    max_disputes_per_order: i32,
}

impl Commands {
    pub fn new(store: Store, clock: Arc<dyn Clock>, max_disputes_per_order: i32) -> Self {
        Self {
            store,
            clock,
            max_disputes_per_order,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs `command` in one transaction under an idempotency key and returns its encoded
    /// response, or the response the first call with this key got. A different payload
    /// under the same key is refused; a refused command leaves no key behind.
    pub async fn idempotent<F>(
        &self,
        key: IdempotencyKey<'_>,
        request_hash: &[u8],
        command: F,
    ) -> Result<Vec<u8>, Error>
    where
        F: for<'c> FnOnce(
            &'c mut PgConnection,
            DateTime<Utc>,
        ) -> BoxFuture<'c, Result<Vec<u8>, Error>>,
    {
        let mut tx = self.store.begin().await?;
        let now = self.now();
        match store::claim(&mut tx, &key, request_hash, now).await? {
            Claim::Replay(response) => return Ok(response),
            Claim::Reused => return Err(Error::RequestIdReused),
            Claim::Fresh => {}
        }
        let response = command(&mut tx, now).await?;
        store::complete(&mut tx, &key, &response).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(response)
    }
}
