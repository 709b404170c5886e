//! Disputes: opening, buyer-only cancellation and fund resolution.

use chrono::{DateTime, Utc};

use super::{
    Actor, DisputeId, DomainError, Money, Order, PartyId, Precondition, Resource, Role, Settlement,
};

/// Why the buyer disputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ItemNotReceived,
    NotAsDescribed,
    QualityIssue,
}

/// What the buyer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    FullRefund,
    /// Keep the item, get this much back: 0 < amount < order amount, order currency.
    PartialRefund(Money),
    /// Send the item back for the whole amount.
    ReturnAndRefund,
}

impl Remedy {
    /// There is nothing to return when the item never arrived.
    pub fn allowed_for(self, reason: Reason) -> bool {
        !(reason == Reason::ItemNotReceived && self == Remedy::ReturnAndRefund)
    }

    /// How much of `order_amount` this remedy gives back to the buyer.
    pub fn refund_minor(self, order_amount: Money) -> i64 {
        match self {
            Remedy::FullRefund | Remedy::ReturnAndRefund => order_amount.minor,
            Remedy::PartialRefund(refund) => refund.minor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeState {
    AwaitingSeller,
    Negotiating,
    AwaitingReturnShipment,
    ReturnInTransit,
    UnderReview,
    Cancelled,
    Resolved,
}

impl DisputeState {
    pub const ALL: [DisputeState; 7] = [
        DisputeState::AwaitingSeller,
        DisputeState::Negotiating,
        DisputeState::AwaitingReturnShipment,
        DisputeState::ReturnInTransit,
        DisputeState::UnderReview,
        DisputeState::Cancelled,
        DisputeState::Resolved,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, DisputeState::Cancelled | DisputeState::Resolved)
    }
}

/// How a terminal dispute ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    CancelledByBuyer,
    ResolvedBuyerFavour,
    ResolvedPartial,
    ResolvedSellerFavour,
}

impl Outcome {
    fn of_settlement(settlement: &Settlement) -> Self {
        match (settlement.refund_minor(), settlement.release_minor()) {
            (_, 0) => Outcome::ResolvedBuyerFavour,
            (0, _) => Outcome::ResolvedSellerFavour,
            _ => Outcome::ResolvedPartial,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnStatus {
    Requested,
    AwaitingShipment,
    InTransit,
    Received,
    Cancelled,
}

impl ReturnStatus {
    /// The buyer may still call the return off.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ReturnStatus::Requested | ReturnStatus::AwaitingShipment | ReturnStatus::InTransit
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemReturn {
    pub status: ReturnStatus,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub dispute_id: DisputeId,
    pub order_id: PartyId,
    pub buyer_id: PartyId,
    pub seller_id: PartyId,
    pub reason: Reason,
    pub remedy: Remedy,
    pub description: String,
    pub evidence_urls: Vec<String>,
    pub state: DisputeState,
    pub outcome: Option<Outcome>,
    /// Set exactly when the remedy is `ReturnAndRefund`.
    pub item_return: Option<ItemReturn>,
    /// The order's, copied so a dispute can tell the buyer what cancelling would do.
    pub protection_ends_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Dispute {
    /// Parties see their own disputes; the platform sees all. Everyone else is told the
    /// dispute does not exist.
    pub fn ensure_visible_to(&self, actor: &Actor) -> Result<(), DomainError> {
        let visible = match actor.role {
            Role::Buyer => self.buyer_id.as_str() == actor.id,
            Role::Seller => self.seller_id.as_str() == actor.id,
            Role::Agent | Role::Service => true,
        };
        if visible {
            Ok(())
        } else {
            Err(DomainError::NotFound(Resource::Dispute))
        }
    }

    fn ensure_active(&self) -> Result<(), DomainError> {
        if self.state.is_terminal() {
            return Err(DomainError::FailedPrecondition(Precondition::DisputeClosed));
        }
        Ok(())
    }

    fn has_active_return(&self) -> bool {
        self.item_return
            .as_ref()
            .is_some_and(|item_return| item_return.status.is_active())
    }

    /// Ends the dispute, calling off a return that is still under way.
    fn end(&mut self, state: DisputeState, outcome: Outcome, now: DateTime<Utc>) {
        self.state = state;
        self.outcome = Some(outcome);
        if let Some(item_return) = self.item_return.as_mut().filter(|r| r.status.is_active()) {
            item_return.status = ReturnStatus::Cancelled;
        }
        self.updated_at = now;
    }
}

/// What happened, for the dispute's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    DisputeOpened,
    DisputeCancelled,
    DisputeResolved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DisputeOpened => "DISPUTE_OPENED",
            EventKind::DisputeCancelled => "DISPUTE_CANCELLED",
            EventKind::DisputeResolved => "DISPUTE_RESOLVED",
        }
    }
}

/// The new facts after a command, for the caller to write in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub order: Order,
    pub dispute: Dispute,
    /// Set when this change settled the order's funds (append it to the ledger).
    pub settlement: Option<Settlement>,
    pub event: EventKind,
}

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
    if let Remedy::PartialRefund(refund) = new.remedy {
        check_partial_refund(order, refund)?;
    }
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
        return Err(DomainError::AlreadyExists {
            reason: "DISPUTE_ALREADY_OPEN",
            message: "the order already has an active dispute",
        });
    }
    if order.dispute_count >= max_disputes {
        return Err(DomainError::FailedPrecondition(
            Precondition::DisputeLimitReached,
        ));
    }
    let item_return = (new.remedy == Remedy::ReturnAndRefund).then_some(ItemReturn {
        status: ReturnStatus::Requested,
        carrier: None,
        tracking_number: None,
    });
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
        item_return,
        protection_ends_at: order.protection_ends_at,
        created_at: now,
        updated_at: now,
    };
    Ok(Change {
        order,
        dispute,
        settlement: None,
        event: EventKind::DisputeOpened,
    })
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
    dispute.ensure_active()?;
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
    Ok(Change {
        order,
        dispute,
        settlement,
        event: EventKind::DisputeCancelled,
    })
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
    match actor.role {
        Role::Agent | Role::Seller => {}
        Role::Buyer | Role::Service => {
            return Err(DomainError::PermissionDenied {
                reason: "RESOLVE_NOT_ALLOWED",
                message: "only an agent or the order's seller can resolve a dispute's funds",
            });
        }
    }
    dispute.ensure_visible_to(actor)?;
    let refund_minor = match resolution {
        Resolution::RefundFull => order.amount.minor,
        Resolution::ReleaseToSeller => 0,
        Resolution::RefundPartial(refund) => {
            check_partial_refund(order, refund)?;
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
    dispute.ensure_active()?;
    let mut order = order.clone();
    let settlement = order.settle(refund_minor, now)?;
    let mut dispute = dispute.clone();
    dispute.end(
        DisputeState::Resolved,
        Outcome::of_settlement(&settlement),
        now,
    );
    Ok(Change {
        order,
        dispute,
        settlement: Some(settlement),
        event: EventKind::DisputeResolved,
    })
}

/// A partial refund is in the order's currency and strictly between zero and the amount.
fn check_partial_refund(order: &Order, refund: Money) -> Result<(), DomainError> {
    let mut violations = Vec::new();
    if refund.currency != order.amount.currency {
        violations.push(super::FieldViolation::new(
            "refund_amount.currency_code",
            format!("must be the order's currency, {}", order.amount.currency),
        ));
    }
    if !(1..order.amount.minor).contains(&refund.minor) {
        violations.push(super::FieldViolation::new(
            "refund_amount.amount_minor",
            format!(
                "a partial refund must be more than 0 and less than the order amount, {}",
                order.amount.minor
            ),
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(DomainError::InvalidArgument(violations))
    }
}
