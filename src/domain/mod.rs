//! The rules of orders, escrowed funds and disputes. Pure: no I/O, no gRPC, no SQL.
//!
//! Every function here takes the current facts (an order, a dispute, the actor, the time)
//! and either refuses with a [`DomainError`] or returns the new facts for the caller to
//! write in one transaction. Nothing here can settle an order twice or create money:
//! [`Settlement::new`] is the only way to build a settlement and it conserves the amount.

mod actor;
mod deadlines;
mod dispute;
mod error;
mod ids;
mod lifecycle;
mod money;
mod order;
mod protection;
mod record;
mod records;
mod text;
mod trace;
mod workflow;

pub use actor::{Actor, Role};
pub use deadlines::{
    Clock, Consequence, Cutoff, DeadlineKind, Deadlines, NextDeadline, RULES, Rule, apply_deadline,
    rule_for, rule_of,
};
pub use dispute::{
    Change, Dispute, DisputeState, EventKind, ItemReturn, Outcome, Proposal, Reason, Remedy,
    Replacement, ReturnStatus,
};
pub use error::{DomainError, FieldViolation, Precondition, Resource};
pub use ids::{DisputeId, PartyId, RequestId};
pub use lifecycle::{CancelVia, NewDispute, Resolution, cancel, open, resolve};
pub use money::{Currency, Money};
pub use order::{FundsState, NewOrder, Order, Registered, Registration, Settlement, register};
pub use protection::{extend_protection, release_at_protection_end};
pub use record::{
    ByOutcome, ByReason, DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS, SellerStats, StatsWindow,
    ensure_may_read_record,
};
pub use records::{
    Cursor, DisputeFilter, HistoryEvent, ListOrder, ListPosition, LogPosition, STREAM_PARTITIONS,
    StreamEvent,
};
pub use text::{TextKind, check_text};
pub use trace::TraceId;
pub use workflow::{
    DisputeCommand, SellerDecision, accept_proposal, confirm_replacement_received,
    confirm_return_received, decide, escalate, post_message, respond, submit_replacement_shipment,
    submit_return_shipment,
};

/// Limits on what a buyer may attach to a dispute.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// At most this many evidence references per dispute.
pub const MAX_EVIDENCE_URLS: usize = 10;
/// Each evidence reference is at most this long.
pub const MAX_EVIDENCE_URL_CHARS: usize = 512;
/// A ruling's note, a proposal's message or an escalation's reason is at most this long.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// A message in a dispute's conversation is at most this long.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// A return's carrier name is at most this long.
pub const MAX_CARRIER_CHARS: usize = 64;
/// A return's tracking number is at most this long.
pub const MAX_TRACKING_CHARS: usize = 128;

#[cfg(test)]
mod tests;
