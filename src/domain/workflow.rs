//! Negotiation, the return and the replacement: the seller answers, the buyer accepts a
//! proposal, either party escalates, the item travels back and the seller confirms it
//! arrived, or a replacement travels out and the buyer confirms it arrived; and the
//! conversation beside all of it.

use chrono::{DateTime, Duration, Utc};

use super::dispute::{Proposal, grant, settle_and_resolve};
use super::{
    Actor, Change, Dispute, DisputeState, DomainError, EventKind, Order, Remedy, ReturnStatus, Role,
};

use DisputeState::{
    AwaitingReplacementShipment, AwaitingReturnShipment, AwaitingSeller, Negotiating,
    ReplacementInTransit, ReturnInTransit, UnderReview,
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

/// EscalateDispute: the parties disagree (either, while negotiating), the returned item
/// is missing, wrong or damaged (the seller, while it is in transit), or the replacement
/// does not come or is not right (the buyer, while it is awaited or travels). An agent
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
        _ => &[
            Negotiating,
            AwaitingReplacementShipment,
            ReplacementInTransit,
        ],
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

/// SubmitReplacementShipment: the seller shipped the replacement. The order's protection
/// end moves to at least now + `delivery_window`, so the buyer stays protected while it
/// travels (never earlier than it was).
pub fn submit_replacement_shipment(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    carrier: &str,
    tracking_number: &str,
    delivery_window: Duration,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Seller], &[AwaitingReplacementShipment])?;
    let mut dispute = dispute.clone();
    let replacement = dispute
        .replacement
        .as_mut()
        .ok_or(DomainError::FailedPrecondition(
            super::Precondition::InvalidDisputeState,
        ))?;
    replacement.carrier = Some(carrier.to_owned());
    replacement.tracking_number = Some(tracking_number.to_owned());
    replacement.shipped_at = Some(now);
    let mut order = order.clone();
    order.protection_ends_at = order.protection_ends_at.max(now + delivery_window);
    dispute.protection_ends_at = order.protection_ends_at;
    dispute.move_to(ReplacementInTransit, now);
    Ok(Change::new(
        order,
        dispute,
        None,
        EventKind::ReplacementShipped,
    ))
}

/// ConfirmReplacementReceived: the buyer has the replacement; the funds go to the seller.
pub fn confirm_replacement_received(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    dispute.ensure_can(actor, &[Role::Buyer], &[ReplacementInTransit])?;
    settle_and_resolve(order, dispute, 0, EventKind::ReplacementReceived, now)
}

/// PostDisputeMessage: the buyer, the order's seller or an agent writes in an open
/// dispute's conversation. Nothing but the dispute's `updated_at` changes (a message is
/// activity on the dispute, so lists ordered by change show it first).
pub fn post_message(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    text: &str,
    evidence_urls: &[String],
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    let open: Vec<DisputeState> = DisputeState::ALL
        .into_iter()
        .filter(|state| !state.is_terminal())
        .collect();
    dispute.ensure_can(actor, &[Role::Buyer, Role::Seller, Role::Agent], &open)?;
    let mut dispute = dispute.clone();
    dispute.updated_at = now;
    let mut change =
        Change::new(order.clone(), dispute, None, EventKind::MessagePosted).with_note(text);
    change.evidence_urls = evidence_urls.to_vec();
    Ok(change)
}

/// AddInternalNote: an agent notes something on a dispute in any state, for agents only
/// (the parties never see it in the history). Nothing about the dispute changes, not even
/// its `updated_at`: the parties see no trace of it.
pub fn add_internal_note(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    text: &str,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    if actor.role != Role::Agent {
        return Err(DomainError::PermissionDenied {
            reason: "ROLE_NOT_ALLOWED",
            message: "only an agent writes internal notes",
        });
    }
    dispute.ensure_visible_to(actor)?;
    let mut change = Change::new(
        order.clone(),
        dispute.clone(),
        None,
        EventKind::InternalNoteAdded,
    )
    .with_note(text);
    change.occurred_at = now;
    Ok(change)
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
    SubmitReplacementShipment {
        carrier: String,
        tracking_number: String,
    },
    ConfirmReplacementReceived,
    PostMessage {
        text: String,
        evidence_urls: Vec<String>,
    },
    AddInternalNote {
        text: String,
    },
}

/// Decides `command` by `actor` on `dispute` of `order` at `now`, under `deadlines` (a
/// replacement's delivery window). The first thing the order's seller does on a dispute
/// is its first response (the store record's response time).
pub fn decide(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    command: DisputeCommand,
    deadlines: &super::Deadlines,
    now: DateTime<Utc>,
) -> Result<Change, DomainError> {
    let mut change = decide_command(order, dispute, actor, command, deadlines, now)?;
    if actor.role == Role::Seller {
        change.dispute.seller_first_response_at.get_or_insert(now);
    }
    Ok(change)
}

fn decide_command(
    order: &Order,
    dispute: &Dispute,
    actor: &Actor,
    command: DisputeCommand,
    deadlines: &super::Deadlines,
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
        DisputeCommand::SubmitReplacementShipment {
            carrier,
            tracking_number,
        } => submit_replacement_shipment(
            order,
            dispute,
            actor,
            &carrier,
            &tracking_number,
            deadlines.replacement_delivery,
            now,
        ),
        DisputeCommand::ConfirmReplacementReceived => {
            confirm_replacement_received(order, dispute, actor, now)
        }
        DisputeCommand::PostMessage {
            text,
            evidence_urls,
        } => post_message(order, dispute, actor, &text, &evidence_urls, now),
        DisputeCommand::AddInternalNote { text } => {
            add_internal_note(order, dispute, actor, &text, now)
        }
    }
}
