//! Negotiation and the return: the seller answers, the buyer accepts a proposal, either
//! party escalates, the item travels back and the seller confirms it arrived.

use chrono::{DateTime, Utc};

use super::dispute::{Proposal, grant, settle_and_resolve};
use super::{
    Actor, Change, Dispute, DisputeState, DomainError, EventKind, Order, Remedy, ReturnStatus, Role,
};

use DisputeState::{
    AwaitingReturnShipment, AwaitingSeller, Negotiating, ReturnInTransit, UnderReview,
};

/// The seller's answer to a new dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SellerDecision {
    /// Grant what the buyer asked for.
    Accept,
    /// Offer something else instead.
    Propose { remedy: Remedy, message: String },
}

/// RespondToDispute: the order's seller accepts the buyer's remedy (a refund settles at
/// once; a return is awaited) or proposes another one, opening a negotiation.
pub fn respond(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    decision: SellerDecision,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Seller], &[AwaitingSeller])?;
    match decision {
        SellerDecision::Accept => grant(
            order,
            dispute,
            dispute.remedy,
            EventKind::RemedyAccepted,
            now,
        ),
        SellerDecision::Propose { remedy, message } => {
            remedy.check_for(order, dispute.reason, "counter_remedy")?;
            let mut dispute = dispute.clone();
            dispute.proposal = Some(Proposal {
                remedy,
                message: message.clone(),
            });
            dispute.move_to(Negotiating, now);
            Ok(
                Change::new(order.clone(), dispute, None, EventKind::RemedyProposed)
                    .with_note(message),
            )
        }
    }
}

/// AcceptProposal: the buyer takes exactly the proposal the seller made.
pub fn accept_proposal(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Buyer], &[Negotiating])?;
    let proposal = dispute
        .proposal
        .as_ref()
        .ok_or(DomainError::FailedPrecondition(
            super::Precondition::InvalidDisputeState,
        ))?;
    grant(
        order,
        dispute,
        proposal.remedy,
        EventKind::ProposalAccepted,
        now,
    )
}

/// EscalateDispute: the parties disagree (either, while negotiating), or the returned
/// item is missing, wrong or damaged (the seller, while it is in transit). An agent
/// decides with ResolveFunds.
pub fn escalate(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    let states: &[DisputeState] = match actor.role {
        Role::Seller => &[Negotiating, ReturnInTransit],
        _ => &[Negotiating],
    };
    dispute.ensure_can(actor, &[Role::Buyer, Role::Seller], states)?;
    let mut dispute = dispute.clone();
    dispute.move_to(UnderReview, now);
    Ok(Change::new(order.clone(), dispute, None, EventKind::DisputeEscalated).with_note(reason))
}

/// SubmitReturnShipment: the buyer sent the item back.
pub fn submit_return_shipment(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    carrier: &str,
    tracking_number: &str,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Buyer], &[AwaitingReturnShipment])?;
    let mut dispute = dispute.clone();
    let item_return = dispute
        .item_return
        .as_mut()
        .ok_or(DomainError::FailedPrecondition(
            super::Precondition::NoReturn,
        ))?;
    item_return.status = ReturnStatus::InTransit;
    item_return.carrier = Some(carrier.to_owned());
    item_return.tracking_number = Some(tracking_number.to_owned());
    item_return.shipped_at = Some(now);
    dispute.move_to(ReturnInTransit, now);
    Ok(Change::new(
        order.clone(),
        dispute,
        None,
        EventKind::ReturnShipped,
    ))
}

/// ConfirmReturnReceived: the seller has the item; the whole amount is refunded.
pub fn confirm_return_received(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Seller], &[ReturnInTransit])?;
    let mut received = dispute.clone();
    if let Some(item_return) = received.item_return.as_mut() {
        item_return.status = ReturnStatus::Received;
    }
    settle_and_resolve(
        order,
        &received,
        order.amount.minor,
        EventKind::ReturnReceived,
        now,
    )
}

/// Every command that acts on one existing dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeCommand {
    Cancel(super::CancelVia),
    Resolve {
        resolution: super::Resolution,
        note: String,
    },
    Respond(SellerDecision),
    AcceptProposal,
    Escalate {
        reason: String,
    },
    SubmitReturnShipment {
        carrier: String,
        tracking_number: String,
    },
    ConfirmReturnReceived,
}

/// Decides `command` by `actor` on `dispute` of `order` at `now`.
pub fn decide(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    command: DisputeCommand,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    match command {
        DisputeCommand::Cancel(via) => super::cancel(order, dispute, actor, via, now),
        DisputeCommand::Resolve { resolution, note } => {
            super::resolve(order, dispute, actor, resolution, &note, now)
        }
        DisputeCommand::Respond(decision) => respond(order, dispute, actor, decision, now),
        DisputeCommand::AcceptProposal => accept_proposal(order, dispute, actor, now),
        DisputeCommand::Escalate { reason } => escalate(order, dispute, actor, &reason, now),
        DisputeCommand::SubmitReturnShipment {
            carrier,
            tracking_number,
        } => submit_return_shipment(order, dispute, actor, &carrier, &tracking_number, now),
        DisputeCommand::ConfirmReturnReceived => {
            confirm_return_received(order, dispute, actor, now)
        }
    }
}
