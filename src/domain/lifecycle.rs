//! Opening a dispute, buyer-only cancellation, and fund resolution.

use chrono::{DateTime, Utc};

use super::dispute::{ItemReturn, settle_and_resolve};
use super::{
    Actor, Change, Dispute, DisputeId, DisputeState, DomainError, EventKind, Money, Order, Outcome,
    PartyId, Precondition, Reason, Remedy, Role,
};

/// A buyer's request to open a dispute, already parsed field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDispute {
    pub order_id: PartyId,
    pub reason: Reason,
    pub remedy: Remedy,
    pub description: String,
    pub evidence_urls: Vec<String>,
}

/// Opens a dispute on `order`. `has_active_dispute` says whether another dispute on the
/// order is still open; `max_disputes` is the per-order limit.
pub fn open(
    order: &Order,
    has_active_dispute: bool,
    new: NewDispute,
    actor: &Actor,
    max_disputes: i32,
    dispute_id: DisputeId,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    if actor.role != Role::Buyer {
        return Err(DomainError::PermissionDenied {
            reason: "ONLY_BUYER_CAN_OPEN",
            message: "only the order's buyer can open a dispute",
        });
    }
    order.ensure_visible_to(actor)?;
    new.remedy.check_for(order, new.reason, "remedy")?;
    let precondition = if order.disputes_closed {
        Some(Precondition::DisputesClosed)
    } else if order.settlement.is_some() {
        Some(Precondition::FundsSettled)
    } else if !order.protection_active(now) {
        Some(Precondition::ProtectionExpired)
    } else {
        None
    };
    if let Some(precondition) = precondition {
        return Err(DomainError::FailedPrecondition(precondition));
    }
    if has_active_dispute {
        return Err(DomainError::DISPUTE_ALREADY_OPEN);
    }
    if order.dispute_count >= max_disputes {
        return Err(DomainError::FailedPrecondition(
            Precondition::DisputeLimitReached,
        ));
    }
    let mut order = order.clone();
    order.dispute_count += 1;
    let dispute = Dispute {
        dispute_id,
        order_id: order.order_id.clone(),
        buyer_id: order.buyer_id.clone(),
        seller_id: order.seller_id.clone(),
        reason: new.reason,
        remedy: new.remedy,
        description: new.description,
        evidence_urls: new.evidence_urls,
        state: DisputeState::AwaitingSeller,
        outcome: None,
        item_return: (new.remedy == Remedy::ReturnAndRefund).then(ItemReturn::requested),
        proposal: None,
        replacement: None,
        seller_first_response_at: None,
        protection_ends_at: order.protection_ends_at,
        created_at: now,
        updated_at: now,
    };
    Ok(Change::new(order, dispute, None, EventKind::DisputeOpened))
}

/// Which cancel RPC the buyer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelVia {
    /// CancelDispute: only while no return is under way.
    Dispute,
    /// CancelReturn: calls the return off, which cancels the dispute.
    Return,
}

/// The buyer cancels the dispute. If buyer protection has ended, the funds go to the
/// seller at once and the order is closed to disputes; otherwise they stay held.
pub fn cancel(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    via: CancelVia,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    if actor.role != Role::Buyer {
        return Err(DomainError::ONLY_BUYER_CAN_CANCEL);
    }
    dispute.ensure_visible_to(actor)?;
    if dispute.state.is_terminal() {
        return Err(DomainError::FailedPrecondition(Precondition::DisputeClosed));
    }
    match (via, &dispute.item_return) {
        (CancelVia::Dispute, _) if dispute.has_active_return() => {
            return Err(DomainError::FailedPrecondition(
                Precondition::ReturnInProgress,
            ));
        }
        (CancelVia::Return, None) => {
            return Err(DomainError::FailedPrecondition(Precondition::NoReturn));
        }
        (CancelVia::Return, Some(item_return)) if !item_return.status.is_active() => {
            return Err(DomainError::FailedPrecondition(
                Precondition::ReturnAlreadyReceived,
            ));
        }
        _ => {}
    }
    let mut order = order.clone();
    let settlement = if order.protection_active(now) {
        None
    } else {
        order.disputes_closed = true;
        Some(order.settle(0, now)?)
    };
    let mut dispute = dispute.clone();
    dispute.end(DisputeState::Cancelled, Outcome::CancelledByBuyer, now);
    Ok(Change::new(
        order,
        dispute,
        settlement,
        EventKind::DisputeCancelled,
    ))
}

/// How ResolveFunds divides the funds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    RefundFull,
    RefundPartial(Money),
    ReleaseToSeller,
}

/// Settles the order's funds and ends the dispute resolved. An agent may rule any way
/// (with a note); the order's seller may only give money back, at least what the buyer
/// asked for.
pub fn resolve(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    resolution: Resolution,
    note: &str,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    if !matches!(actor.role, Role::Agent | Role::Seller) {
        return Err(DomainError::PermissionDenied {
            reason: "RESOLVE_NOT_ALLOWED",
            message: "only an agent or the order's seller can resolve a dispute's funds",
        });
    }
    // The checks every transition starts with come first (a closed dispute is
    // DISPUTE_CLOSED whatever the ruling says), then the ruling's own.
    dispute.ensure_can(actor, &[Role::Agent, Role::Seller], &DisputeState::ALL)?;
    let refund_minor = match resolution {
        Resolution::RefundFull => order.amount.minor,
        Resolution::ReleaseToSeller => 0,
        Resolution::RefundPartial(refund) => {
            super::dispute::check_partial_refund(order, refund, "refund_amount")?;
            refund.minor
        }
    };
    if actor.role == Role::Agent && note.trim().is_empty() {
        return Err(DomainError::invalid(
            "note",
            "is required from an agent: state the reason for the ruling",
        ));
    }
    if actor.role == Role::Seller && refund_minor < dispute.remedy.refund_minor(order.amount) {
        return Err(DomainError::PermissionDenied {
            reason: "SELLER_CANNOT_REDUCE_REFUND",
            message: "a seller may only refund the buyer at least what the buyer asked for; an agent decides anything else",
        });
    }
    let change = settle_and_resolve(order, dispute, refund_minor, EventKind::FundsResolved, now)?;
    Ok(if note.is_empty() {
        change
    } else {
        change.with_note(note)
    })
}
