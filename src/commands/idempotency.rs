//! The idempotency of every write (README, "API conventions"): a command's lock statement
//! reads its request's key; a key answered before is replayed ([`replay`]); otherwise the
//! pipeline ([`Commands::run`]) writes the key with its reply as the last statement of the
//! command's transaction, so a command cannot commit without its key, and a refused one
//! leaves none (`store::idempotency` says how a concurrent duplicate is caught).

use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{Error, Origin};
use crate::{
    domain::{Actor, RequestId, TraceId},
    store::{IdempotencyKey, KeyState, StoreError},
};

/// Who sent a write, which RPC, under which request id, with which payload (hashed), in
/// which trace.
#[derive(Debug, Clone)]
pub struct RequestKey {
    key: IdempotencyKey,
    trace_id: TraceId,
}

impl RequestKey {
    /// The key a command's lock statement reads and its write saves.
    pub(super) fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// Who acts, in which trace.
    pub(super) fn origin(&self) -> Origin {
        Origin {
            actor: self.key.actor.clone(),
            trace_id: self.trace_id.clone(),
        }
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

/// What a key answered before gives back: the reply saved for it, or the refusal of a
/// request id used again with another payload.
pub(super) fn replay<T: DeserializeOwned>(saved: KeyState) -> Result<T, Error> {
    match saved {
        KeyState::Saved(reply) => serde_json::from_value(reply)
            .map_err(|e| Error::Internal(StoreError::Corrupt(format!("saved reply: {e}")))),
        KeyState::Reused => Err(Error::RequestIdReused),
    }
}

/// The reply as saved with its key: the domain snapshot as JSON.
pub(super) fn saved_reply<T: Serialize>(reply: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(reply)
        .map_err(|e| Error::Internal(StoreError::Corrupt(format!("reply: {e}"))))
}
