//! What a dispute is: its reason, remedy, state, return and proposal, and the checks
//! every transition shares.

use chrono::{DateTime, Utc};

use super::{
    Actor, DisputeId, DomainError, Money, Order, PartyId, Precondition, Resource, Role, Settlement,
};

/// Why the buyer disputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    ItemNotReceived,
    NotAsDescribed,
    QualityIssue,
}

/// What the buyer asks for, or the seller proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Remedy {
    FullRefund,
    /// Keep the item, get this much back: 0 < amount < order amount, order currency.
    PartialRefund(Money),
    /// Send the item back for the whole amount.
    ReturnAndRefund,
    /// The seller reissues the product; the funds go to the seller once it arrives.
    Replacement,
}

impl Remedy {
    /// There is nothing to return when the item never arrived.
    pub fn allowed_for(self, reason: Reason) -> bool {
        !(reason == Reason::ItemNotReceived && self == Remedy::ReturnAndRefund)
    }

    /// How much of `order_amount` this remedy is worth to the buyer in money: what a
    /// seller who resolves the funds instead must give back at least. A replacement
    /// stands for the whole item, so a seller who will not reissue it refunds in full
    /// (as the deadline does when the replacement is never shipped).
    pub fn refund_minor(self, order_amount: Money) -> i64 {
        match self {
            Remedy::FullRefund | Remedy::ReturnAndRefund | Remedy::Replacement => {
                order_amount.minor
            }
            Remedy::PartialRefund(refund) => refund.minor,
        }
    }

    /// Checks the remedy against the order it is for and the dispute's reason.
    /// `field` names the remedy in the request (`remedy`, `counter_remedy`); its amount is
    /// `<field's prefix>refund_amount`.
    pub(super) fn check_for(
        self,
        order: &Order,
        reason: Reason,
        field: &str,
    ) -> Result<(), DomainError> {
        if !self.allowed_for(reason) {
            return Err(DomainError::invalid(
                field,
                "RETURN_AND_REFUND is not allowed with ITEM_NOT_RECEIVED: there is nothing to return",
            ));
        }
        if let Remedy::PartialRefund(refund) = self {
            let amount_field = format!(
                "{}refund_amount",
                field.strip_suffix("remedy").unwrap_or_default()
            );
            check_partial_refund(order, refund, &amount_field)?;
        }
        Ok(())
    }
}

/// A partial refund is in the order's currency and strictly between zero and the amount.
pub(super) fn check_partial_refund(
    order: &Order,
    refund: Money,
    field: &str,
) -> Result<(), DomainError> {
    let mut violations = Vec::new();
    if refund.currency != order.amount.currency {
        violations.push(super::FieldViolation::new(
            format!("{field}.currency_code"),
            format!("must be the order's currency, {}", order.amount.currency),
        ));
    }
    if !(1..order.amount.minor).contains(&refund.minor) {
        violations.push(super::FieldViolation::new(
            format!("{field}.amount_minor"),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DisputeState {
    AwaitingSeller,
    Negotiating,
    AwaitingReturnShipment,
    ReturnInTransit,
    UnderReview,
    Cancelled,
    Resolved,
    /// A replacement was agreed: the seller ships it.
    AwaitingReplacementShipment,
    /// The replacement travels: the buyer confirms it arrived (or cancels, or escalates).
    ReplacementInTransit,
}

impl DisputeState {
    pub const ALL: [DisputeState; 9] = [
        DisputeState::AwaitingSeller,
        DisputeState::Negotiating,
        DisputeState::AwaitingReturnShipment,
        DisputeState::ReturnInTransit,
        DisputeState::UnderReview,
        DisputeState::AwaitingReplacementShipment,
        DisputeState::ReplacementInTransit,
        DisputeState::Cancelled,
        DisputeState::Resolved,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, DisputeState::Cancelled | DisputeState::Resolved)
    }

    /// Whose move the dispute waits for in this state (the workflow's rules): the seller
    /// answers, confirms a return's receipt and ships a replacement; the buyer decides on
    /// a counter-proposal, ships a return and confirms a replacement's arrival; an agent
    /// rules under review; terminal states wait for nobody.
    pub fn waits_for(self) -> Option<Role> {
        match self {
            DisputeState::AwaitingSeller
            | DisputeState::ReturnInTransit
            | DisputeState::AwaitingReplacementShipment => Some(Role::Seller),
            DisputeState::Negotiating
            | DisputeState::AwaitingReturnShipment
            | DisputeState::ReplacementInTransit => Some(Role::Buyer),
            DisputeState::UnderReview => Some(Role::Agent),
            DisputeState::Cancelled | DisputeState::Resolved => None,
        }
    }
}

/// How a terminal dispute ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    CancelledByBuyer,
    ResolvedBuyerFavour,
    ResolvedPartial,
    ResolvedSellerFavour,
}

impl Outcome {
    pub(super) fn of_settlement(settlement: &Settlement) -> Self {
        match (settlement.refund_minor(), settlement.release_minor()) {
            (_, 0) => Outcome::ResolvedBuyerFavour,
            (0, _) => Outcome::ResolvedSellerFavour,
            _ => Outcome::ResolvedPartial,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemReturn {
    pub status: ReturnStatus,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    /// When the return was agreed (the shipment deadline runs from here).
    pub agreed_at: Option<DateTime<Utc>>,
    /// When the buyer submitted the tracking (the receipt deadline runs from here).
    pub shipped_at: Option<DateTime<Utc>>,
}

impl ItemReturn {
    pub(super) fn requested() -> Self {
        Self {
            status: ReturnStatus::Requested,
            carrier: None,
            tracking_number: None,
            agreed_at: None,
            shipped_at: None,
        }
    }
}

/// A replacement the seller reissues, once agreed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replacement {
    /// When it was agreed (the shipment deadline runs from here).
    pub agreed_at: DateTime<Utc>,
    /// Set together when the seller ships it (the receipt deadline runs from
    /// `shipped_at`).
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
}

/// A seller's counter-offer, fixed once made: the buyer accepts exactly this.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub remedy: Remedy,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Set once the dispute involves a return: from the start with `ReturnAndRefund`, or
    /// when a return is agreed.
    pub item_return: Option<ItemReturn>,
    pub proposal: Option<Proposal>,
    /// Set once a replacement is agreed.
    pub replacement: Option<Replacement>,
    /// When the order's seller first acted on the dispute (answered, proposed, wrote,
    /// shipped, resolved...): the store record's response time. Set once.
    pub seller_first_response_at: Option<DateTime<Utc>>,
    /// The order's, copied so a dispute can tell the buyer what cancelling would do.
    pub protection_ends_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Dispute {
    /// Parties see their own disputes; the platform sees all. Everyone else is told the
    /// dispute does not exist.
    pub fn ensure_visible_to(&self, actor: &Actor) -> Result<(), DomainError> {
        if actor.may_see(&self.buyer_id, &self.seller_id) {
            Ok(())
        } else {
            Err(DomainError::NotFound(Resource::Dispute))
        }
    }

    /// The checks every transition starts with, in this order: the role may act at all,
    /// the dispute is the actor's to see, it is still open, and it is in one of `states`.
    pub(super) fn ensure_can(
        &self,
        actor: &Actor,
        roles: &[Role],
        states: &[DisputeState],
    ) -> Result<(), DomainError> {
        if !roles.contains(&actor.role) {
            return Err(DomainError::PermissionDenied {
                reason: "ROLE_NOT_ALLOWED",
                message: "this role may not do this to a dispute",
            });
        }
        self.ensure_visible_to(actor)?;
        if self.state.is_terminal() {
            return Err(DomainError::FailedPrecondition(Precondition::DisputeClosed));
        }
        if !states.contains(&self.state) {
            return Err(DomainError::FailedPrecondition(
                Precondition::InvalidDisputeState,
            ));
        }
        Ok(())
    }

    pub(super) fn has_active_return(&self) -> bool {
        self.item_return
            .as_ref()
            .is_some_and(|item_return| item_return.status.is_active())
    }

    /// Ends the dispute, calling off a return that is still under way.
    pub(super) fn end(&mut self, state: DisputeState, outcome: Outcome, now: DateTime<Utc>) {
        self.state = state;
        self.outcome = Some(outcome);
        if let Some(item_return) = self.item_return.as_mut().filter(|r| r.status.is_active()) {
            item_return.status = ReturnStatus::Cancelled;
        }
        self.updated_at = now;
    }

    pub(super) fn move_to(&mut self, state: DisputeState, now: DateTime<Utc>) {
        self.state = state;
        self.updated_at = now;
    }
}

/// What happened, for the dispute's history and the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    DisputeOpened,
    DisputeCancelled,
    FundsResolved,
    RemedyAccepted,
    RemedyProposed,
    ProposalAccepted,
    DisputeEscalated,
    ReturnShipped,
    ReturnReceived,
    SellerResponseDeadlinePassed,
    NegotiationDeadlinePassed,
    ReturnShipmentDeadlinePassed,
    ReturnReceiptDeadlinePassed,
    ReplacementShipped,
    ReplacementReceived,
    ReplacementShipmentDeadlinePassed,
    ReplacementReceiptDeadlinePassed,
    MessagePosted,
    InternalNoteAdded,
}

impl EventKind {
    /// History entries only agents read (README, "What the parties see"); the event stream
    /// carries every event.
    pub const FOR_AGENTS_ONLY: &'static [EventKind] = &[EventKind::InternalNoteAdded];

    /// The kinds of history entry `role` does not see: the parties see all but the
    /// agents' own.
    pub fn hidden_from(role: Role) -> Vec<&'static str> {
        match role {
            Role::Buyer | Role::Seller => Self::FOR_AGENTS_ONLY
                .iter()
                .map(|kind| kind.as_str())
                .collect(),
            Role::Agent | Role::Service => Vec::new(),
        }
    }
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DisputeOpened => "DISPUTE_OPENED",
            EventKind::DisputeCancelled => "DISPUTE_CANCELLED",
            EventKind::FundsResolved => "FUNDS_RESOLVED",
            EventKind::RemedyAccepted => "REMEDY_ACCEPTED",
            EventKind::RemedyProposed => "REMEDY_PROPOSED",
            EventKind::ProposalAccepted => "PROPOSAL_ACCEPTED",
            EventKind::DisputeEscalated => "DISPUTE_ESCALATED",
            EventKind::ReturnShipped => "RETURN_SHIPPED",
            EventKind::ReturnReceived => "RETURN_RECEIVED",
            EventKind::SellerResponseDeadlinePassed => "SELLER_RESPONSE_DEADLINE_PASSED",
            EventKind::NegotiationDeadlinePassed => "NEGOTIATION_DEADLINE_PASSED",
            EventKind::ReturnShipmentDeadlinePassed => "RETURN_SHIPMENT_DEADLINE_PASSED",
            EventKind::ReturnReceiptDeadlinePassed => "RETURN_RECEIPT_DEADLINE_PASSED",
            EventKind::ReplacementShipped => "REPLACEMENT_SHIPPED",
            EventKind::ReplacementReceived => "REPLACEMENT_RECEIVED",
            EventKind::ReplacementShipmentDeadlinePassed => "REPLACEMENT_SHIPMENT_DEADLINE_PASSED",
            EventKind::ReplacementReceiptDeadlinePassed => "REPLACEMENT_RECEIPT_DEADLINE_PASSED",
            EventKind::MessagePosted => "MESSAGE_POSTED",
            EventKind::InternalNoteAdded => "INTERNAL_NOTE_ADDED",
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
    /// Free text the actor gave (a ruling's note, a proposal's message, an escalation's
    /// reason, a message's text), kept in the history.
    pub note: Option<String>,
    /// Evidence a message refers to, kept in the history with it.
    pub evidence_urls: Vec<String>,
    /// When it happened: the dispute's `updated_at`, unless the change leaves the dispute
    /// as it was.
    pub occurred_at: DateTime<Utc>,
}

impl Change {
    /// Whether this change ended its dispute: it gave the dispute its outcome (`before`:
    /// the dispute as it was; `None`: this change opened it). After that only internal
    /// notes are written to a dispute; the store's record counts the ending here.
    pub fn ended(&self, before: Option<&Dispute>) -> bool {
        self.dispute.outcome.is_some() && before.is_none_or(|dispute| dispute.outcome.is_none())
    }

    pub(super) fn new(
        order: Order,
        dispute: Dispute,
        settlement: Option<Settlement>,
        event: EventKind,
    ) -> Self {
        Self {
            occurred_at: dispute.updated_at,
            order,
            dispute,
            settlement,
            event,
            note: None,
            evidence_urls: Vec::new(),
        }
    }

    pub(super) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Gives the buyer `remedy`: a refund settles now and resolves the dispute; a return
/// moves it to await the buyer's shipment, a replacement the seller's.
pub(super) fn grant(
    order: &Order,
    dispute: &Dispute,
    remedy: Remedy,
    event: EventKind,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    let mut order = order.clone();
    let mut dispute = dispute.clone();
    if remedy == Remedy::ReturnAndRefund {
        let item_return = dispute
            .item_return
            .get_or_insert_with(ItemReturn::requested);
        item_return.status = ReturnStatus::AwaitingShipment;
        item_return.agreed_at = Some(now);
        dispute.move_to(DisputeState::AwaitingReturnShipment, now);
        return Ok(Change::new(order, dispute, None, event));
    }
    if remedy == Remedy::Replacement {
        dispute.replacement = Some(Replacement {
            agreed_at: now,
            carrier: None,
            tracking_number: None,
            shipped_at: None,
        });
        dispute.move_to(DisputeState::AwaitingReplacementShipment, now);
        return Ok(Change::new(order, dispute, None, event));
    }
    let settlement = order.settle(remedy.refund_minor(order.amount), now)?;
    dispute.end(
        DisputeState::Resolved,
        Outcome::of_settlement(&settlement),
        now,
    );
    Ok(Change::new(order, dispute, Some(settlement), event))
}

/// Settles the order with `refund_minor` to the buyer and resolves the dispute.
pub(super) fn settle_and_resolve(
    order: &Order,
    dispute: &Dispute,
    refund_minor: i64,
    event: EventKind,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    let mut order = order.clone();
    let settlement = order.settle(refund_minor, now)?;
    let mut dispute = dispute.clone();
    dispute.end(
        DisputeState::Resolved,
        Outcome::of_settlement(&settlement),
        now,
    );
    Ok(Change::new(order, dispute, Some(settlement), event))
}
