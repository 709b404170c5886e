//! The rules of orders, escrowed funds and disputes. Pure: no I/O, no gRPC, no SQL.
//!
//! Every function here takes the current facts (an order, a dispute, the actor, the time)
//! and either refuses with a [`DomainError`] or returns the new facts for the caller to
//! write in one transaction. Nothing here can settle an order twice or create money:
//! [`Settlement::new`] is the only way to build a settlement and it conserves the amount.

mod actor;
mod dispute;
mod error;
mod ids;
mod money;
mod order;

pub use actor::{Actor, Role};
pub use dispute::{
    CancelVia, Change, Dispute, DisputeState, EventKind, ItemReturn, NewDispute, Outcome, Reason,
    Remedy, Resolution, ReturnStatus, cancel, open, resolve,
};
pub use error::{DomainError, FieldViolation, Precondition, Resource};
pub use ids::{DisputeId, PartyId, RequestId};
pub use money::{Currency, Money};
pub use order::{FundsState, NewOrder, Order, Registration, Settlement, register};

/// Limits on what a buyer may attach to a dispute.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// At most this many evidence references per dispute.
pub const MAX_EVIDENCE_URLS: usize = 10;
/// Each evidence reference is at most this long.
pub const MAX_EVIDENCE_URL_CHARS: usize = 512;
/// A ruling's note is at most this long.
pub const MAX_NOTE_CHARS: usize = 2_000;

#[cfg(test)]
mod tests;
