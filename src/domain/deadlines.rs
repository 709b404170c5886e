//! Deadlines (README, "Deadlines"): what happens when a party stays silent. Applied by the worker as
//! the `system` service actor, through the same transitions as the RPCs.

use chrono::{DateTime, Duration, Utc};

use super::dispute::{grant, settle_and_resolve};
use super::{Change, Dispute, DisputeState, DomainError, EventKind, Order, ReturnStatus};

/// How long each party has. Defaults are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Seller silent in AWAITING_SELLER, from opening: the buyer's remedy is granted.
    pub seller_response: Duration,
    /// Still NEGOTIATING, from opening: an agent reviews.
    pub negotiation: Duration,
    /// Return not shipped, from when it was agreed: funds released to the seller.
    pub return_shipment: Duration,
    /// Seller silent in RETURN_IN_TRANSIT, from the tracking: the buyer is refunded.
    pub return_receipt: Duration,
    /// Replacement not shipped, from when it was agreed: the buyer is refunded.
    pub replacement_shipment: Duration,
    /// Buyer silent in REPLACEMENT_IN_TRANSIT, from the shipment: funds released to the
    /// seller (the replacement is taken as delivered).
    pub replacement_receipt: Duration,
    /// How long after a replacement ships the buyer is protected at least: the order's
    /// protection end moves out to cover it.
    pub replacement_delivery: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            seller_response: Duration::days(5),
            negotiation: Duration::days(15),
            return_shipment: Duration::days(10),
            return_receipt: Duration::days(15),
            replacement_shipment: Duration::days(10),
            replacement_receipt: Duration::days(30),
            replacement_delivery: Duration::days(30),
        }
    }
}

impl Deadlines {
    /// When the dispute's current deadline falls and what it is; `None` for states
    /// without one (UNDER_REVIEW waits for an agent; terminal states wait for nothing).
    pub fn due(&self, dispute: &Dispute) -> Option<(DateTime<Utc>, EventKind)> {
        let item_return = dispute.item_return.as_ref();
        match dispute.state {
            DisputeState::AwaitingSeller => Some((
                dispute.created_at + self.seller_response,
                EventKind::SellerResponseDeadlinePassed,
            )),
            DisputeState::Negotiating => Some((
                dispute.created_at + self.negotiation,
                EventKind::NegotiationDeadlinePassed,
            )),
            DisputeState::AwaitingReturnShipment => Some((
                item_return?.agreed_at? + self.return_shipment,
                EventKind::ReturnShipmentDeadlinePassed,
            )),
            DisputeState::ReturnInTransit => Some((
                item_return?.shipped_at? + self.return_receipt,
                EventKind::ReturnReceiptDeadlinePassed,
            )),
            DisputeState::AwaitingReplacementShipment => Some((
                dispute.replacement.as_ref()?.agreed_at + self.replacement_shipment,
                EventKind::ReplacementShipmentDeadlinePassed,
            )),
            DisputeState::ReplacementInTransit => Some((
                dispute.replacement.as_ref()?.shipped_at? + self.replacement_receipt,
                EventKind::ReplacementReceiptDeadlinePassed,
            )),
            DisputeState::UnderReview | DisputeState::Cancelled | DisputeState::Resolved => None,
        }
    }
}

/// Which deadline a dispute waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineKind {
    /// The seller's time to answer the dispute.
    SellerResponse,
    /// The parties' time to agree on a counter-proposal.
    Negotiation,
    /// The buyer's time to ship an agreed return.
    ReturnShipment,
    /// The seller's time to confirm (or dispute) receipt of the return.
    ReturnReceipt,
    /// The seller's time to ship an agreed replacement.
    ReplacementShipment,
    /// The buyer's time to confirm (or dispute) receipt of the replacement.
    ReplacementReceipt,
}

/// What the worker does when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consequence {
    /// The buyer's remedy is granted as asked: a refund settles, a return starts.
    GrantBuyerRemedy,
    /// The whole amount goes back to the buyer.
    RefundBuyer,
    /// The whole amount goes to the seller.
    ReleaseToSeller,
    /// An agent takes the dispute over.
    Escalate,
}

/// The next automatic step of a dispute: what the parties see as a countdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDeadline {
    pub kind: DeadlineKind,
    pub due_at: DateTime<Utc>,
    pub consequence: Consequence,
}

impl Deadlines {
    /// The deadline [`apply_deadline`] will apply to `dispute`, when and with what effect
    /// (from [`Deadlines::due`], the function the worker decides with, so the two never
    /// disagree); `None` when nothing happens by itself.
    pub fn next(&self, dispute: &Dispute) -> Option<NextDeadline> {
        let (due_at, _) = self.due(dispute)?;
        let (kind, consequence) = match dispute.state {
            DisputeState::AwaitingSeller => {
                (DeadlineKind::SellerResponse, Consequence::GrantBuyerRemedy)
            }
            DisputeState::Negotiating => (DeadlineKind::Negotiation, Consequence::Escalate),
            DisputeState::AwaitingReturnShipment => {
                (DeadlineKind::ReturnShipment, Consequence::ReleaseToSeller)
            }
            DisputeState::ReturnInTransit => {
                (DeadlineKind::ReturnReceipt, Consequence::RefundBuyer)
            }
            DisputeState::AwaitingReplacementShipment => {
                (DeadlineKind::ReplacementShipment, Consequence::RefundBuyer)
            }
            DisputeState::ReplacementInTransit => (
                DeadlineKind::ReplacementReceipt,
                Consequence::ReleaseToSeller,
            ),
            DisputeState::UnderReview | DisputeState::Cancelled | DisputeState::Resolved => {
                return None;
            }
        };
        Some(NextDeadline {
            kind,
            due_at,
            consequence,
        })
    }
}

/// The latest times at which each deadline's clock may have started for it to be due at
/// `now`: the store's scan for due disputes, the inverse of [`Deadlines::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub awaiting_seller_opened_before: DateTime<Utc>,
    pub negotiating_opened_before: DateTime<Utc>,
    pub return_agreed_before: DateTime<Utc>,
    pub return_shipped_before: DateTime<Utc>,
    pub replacement_agreed_before: DateTime<Utc>,
    pub replacement_shipped_before: DateTime<Utc>,
}

impl Deadlines {
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        Cutoffs {
            awaiting_seller_opened_before: now - self.seller_response,
            negotiating_opened_before: now - self.negotiation,
            return_agreed_before: now - self.return_shipment,
            return_shipped_before: now - self.return_receipt,
            replacement_agreed_before: now - self.replacement_shipment,
            replacement_shipped_before: now - self.replacement_receipt,
        }
    }
}

/// Applies the dispute's deadline if it has passed. `Ok(None)` when it is moot: not due
/// yet, or the dispute moved on (the buyer cancelled, the seller answered).
pub fn apply_deadline(
    order: &Order,
    dispute: &Dispute,
    deadlines: &Deadlines,
    now: DateTime<Utc>,
) -> Result<Option<Change>, DomainError> {
    let Some((due, event)) = deadlines.due(dispute) else {
        return Ok(None);
    };
    if now < due {
        return Ok(None);
    }
    let change = match dispute.state {
        DisputeState::AwaitingSeller => grant(order, dispute, dispute.remedy, event, now)?,
        DisputeState::Negotiating => {
            let mut dispute = dispute.clone();
            dispute.move_to(DisputeState::UnderReview, now);
            Change::new(order.clone(), dispute, None, event)
        }
        DisputeState::AwaitingReturnShipment => settle_and_resolve(order, dispute, 0, event, now)?,
        DisputeState::ReturnInTransit => {
            // The seller did not object in time: the item is taken as delivered.
            let mut received = dispute.clone();
            if let Some(item_return) = received.item_return.as_mut() {
                item_return.status = ReturnStatus::Received;
            }
            settle_and_resolve(order, &received, order.amount.minor, event, now)?
        }
        // The seller never shipped the replacement: the buyer gets the money back.
        DisputeState::AwaitingReplacementShipment => {
            settle_and_resolve(order, dispute, order.amount.minor, event, now)?
        }
        // The buyer did not object in time: the replacement is taken as delivered.
        DisputeState::ReplacementInTransit => settle_and_resolve(order, dispute, 0, event, now)?,
        DisputeState::UnderReview | DisputeState::Cancelled | DisputeState::Resolved => {
            return Ok(None);
        }
    };
    Ok(Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, month: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, day, hour, 0, 0).unwrap()
    }

    #[test]
    fn the_defaults_are_the_rules_days() {
        // README, "Deadlines": 5, 15, 10, 15, 10 and 30 days; protection 30 days past a
        // replacement's shipment.
        let d = Deadlines::default();
        assert_eq!(d.seller_response, Duration::days(5));
        assert_eq!(d.negotiation, Duration::days(15));
        assert_eq!(d.return_shipment, Duration::days(10));
        assert_eq!(d.return_receipt, Duration::days(15));
        assert_eq!(d.replacement_shipment, Duration::days(10));
        assert_eq!(d.replacement_receipt, Duration::days(30));
        assert_eq!(d.replacement_delivery, Duration::days(30));
    }

    #[test]
    fn a_cutoff_is_the_deadline_counted_back_from_now() {
        let cutoffs = Deadlines::default().cutoffs(at(1, 3, 12));
        assert_eq!(cutoffs.awaiting_seller_opened_before, at(24, 2, 12));
        assert_eq!(cutoffs.negotiating_opened_before, at(14, 2, 12));
        assert_eq!(cutoffs.return_agreed_before, at(19, 2, 12));
        assert_eq!(cutoffs.return_shipped_before, at(14, 2, 12));
        assert_eq!(cutoffs.replacement_agreed_before, at(19, 2, 12));
        assert_eq!(cutoffs.replacement_shipped_before, at(30, 1, 12));
    }
}
