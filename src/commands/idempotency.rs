//! The idempotency of every write (README, "API conventions"), as zero2prod does it: a
//! command claims its request's key inside its own transaction, once it holds its locks,
//! and is told what to do next — start, or return the reply saved for the key. The
//! pipeline ([`Commands::run`]) saves the reply with the claimed key in the same statement
//! as the change (exactly one row), so a command cannot commit without completing its key.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::{Commands, Error, Origin};
use crate::{
    domain::{Actor, PartyId, RequestId, TraceId},
    store::{self, IdempotencyKey, KeyState, StoreError},
};

/// Who sent a write, which RPC, under which request id, with which payload (hashed), in
/// which trace.
#[derive(Debug, Clone)]
pub struct RequestKey {
    key: IdempotencyKey,
    trace_id: TraceId,
}

impl RequestKey {
    /// The key a command's lock statement claims.
    pub(super) fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// `payload` is the request as received (its bytes): the same request id with another
    /// payload is refused.
    pub fn new(
        actor: Actor,
        rpc: &'static str,
        request_id: RequestId,
        payload: &[u8],
        trace_id: TraceId,
    ) -> Self {
        Self {
            key: IdempotencyKey {
                actor,
                rpc,
                request_id,
                request_hash: Sha256::digest(payload).to_vec(),
            },
            trace_id,
        }
    }
}

/// What a command does once it holds its locks.
pub(super) enum NextAction<T> {
    /// First time: go on at `now` (read once the locks are held, so a command that waited
    /// does not decide on a stale time).
    Start {
        now: DateTime<Utc>,
        claimed: Claimed,
    },
    /// Done before with the same payload: this is what it answered.
    Return(T),
}

/// The key this transaction claimed; the pipeline's write completes it.
pub(super) struct Claimed {
    key: IdempotencyKey,
    origin: Origin,
}

impl Claimed {
    pub(super) fn origin(&self) -> &Origin {
        &self.origin
    }
}

impl Commands {
    /// What to do once the command's lock statement has tried to claim `request`'s key
    /// (`claimed`: it did). A key claimed before is replayed, or refused when its payload
    /// differs; a refused command rolls back and leaves no key.
    pub(super) async fn claim<T: DeserializeOwned>(
        &self,
        conn: &mut PgConnection,
        order_id: &PartyId,
        request: RequestKey,
        claimed: bool,
    ) -> Result<NextAction<T>, Error> {
        if claimed {
            return Ok(NextAction::Start {
                now: self.clock.now(),
                claimed: Claimed {
                    origin: Origin {
                        actor: request.key.actor.clone(),
                        trace_id: request.trace_id,
                    },
                    key: request.key,
                },
            });
        }
        match store::claimed_before(conn, order_id, &request.key).await? {
            KeyState::Saved(reply) => serde_json::from_value(reply)
                .map(NextAction::Return)
                .map_err(|e| Error::Internal(StoreError::Corrupt(format!("saved reply: {e}")))),
            KeyState::Reused => Err(Error::RequestIdReused),
        }
    }
}

/// The reply as saved with its key: the domain snapshot as JSON.
pub(super) fn saved_reply<T: Serialize>(reply: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(reply)
        .map_err(|e| Error::Internal(StoreError::Corrupt(format!("reply: {e}"))))
}

impl Claimed {
    /// The key, for the write that saves the reply with it.
    pub(super) fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}
