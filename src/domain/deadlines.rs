//! Deadlines (README, "Deadlines"): what happens when a party stays silent. Applied by the worker as
//! the `system` service actor, through the same transitions as the RPCs.

use chrono::{DateTime, Duration, Utc};

use super::dispute::{grant, settle_and_resolve};
use super::{Change, Dispute, DisputeState, DomainError, EventKind, Order, ReturnStatus};

/// Which deadline a dispute waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The whole amount goes back to the buyer (a return in transit is taken as received).
    RefundBuyer,
    /// The whole amount goes to the seller.
    ReleaseToSeller,
    /// An agent takes the dispute over.
    Escalate,
}

/// The moment a deadline's clock starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Opened,
    ReturnAgreed,
    ReturnShipped,
    ReplacementAgreed,
    ReplacementShipped,
}

impl Clock {
    /// When the clock started for `dispute` (`None`: it has not).
    pub fn started_at(self, dispute: &Dispute) -> Option<DateTime<Utc>> {
        let item_return = dispute.item_return.as_ref();
        let replacement = dispute.replacement.as_ref();
        match self {
            Clock::Opened => Some(dispute.created_at),
            Clock::ReturnAgreed => item_return?.agreed_at,
            Clock::ReturnShipped => item_return?.shipped_at,
            Clock::ReplacementAgreed => Some(replacement?.agreed_at),
            Clock::ReplacementShipped => replacement?.shipped_at,
        }
    }
}

/// One deadline, declared once: the state it runs in, what starts its clock, its default
/// length, what happens when it passes and the event that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: DeadlineKind,
    pub state: DisputeState,
    pub clock: Clock,
    pub default_days: i64,
    pub consequence: Consequence,
    pub event: EventKind,
    /// Its name in metrics and configuration (`SELLER_RESPONSE`).
    pub name: &'static str,
}

/// The deadline table (README, "Deadlines"), in [`DeadlineKind`] order. `due`, `next`,
/// the worker's scan, the metric labels and the configuration's defaults all read it.
pub const RULES: [Rule; 6] = [
    Rule {
        kind: DeadlineKind::SellerResponse,
        state: DisputeState::AwaitingSeller,
        clock: Clock::Opened,
        default_days: 5,
        consequence: Consequence::GrantBuyerRemedy,
        event: EventKind::SellerResponseDeadlinePassed,
        name: "SELLER_RESPONSE",
    },
    Rule {
        kind: DeadlineKind::Negotiation,
        state: DisputeState::Negotiating,
        clock: Clock::Opened,
        default_days: 15,
        consequence: Consequence::Escalate,
        event: EventKind::NegotiationDeadlinePassed,
        name: "NEGOTIATION",
    },
    Rule {
        kind: DeadlineKind::ReturnShipment,
        state: DisputeState::AwaitingReturnShipment,
        clock: Clock::ReturnAgreed,
        default_days: 10,
        consequence: Consequence::ReleaseToSeller,
        event: EventKind::ReturnShipmentDeadlinePassed,
        name: "RETURN_SHIPMENT",
    },
    Rule {
        kind: DeadlineKind::ReturnReceipt,
        state: DisputeState::ReturnInTransit,
        clock: Clock::ReturnShipped,
        default_days: 15,
        consequence: Consequence::RefundBuyer,
        event: EventKind::ReturnReceiptDeadlinePassed,
        name: "RETURN_RECEIPT",
    },
    Rule {
        kind: DeadlineKind::ReplacementShipment,
        state: DisputeState::AwaitingReplacementShipment,
        clock: Clock::ReplacementAgreed,
        default_days: 10,
        consequence: Consequence::RefundBuyer,
        event: EventKind::ReplacementShipmentDeadlinePassed,
        name: "REPLACEMENT_SHIPMENT",
    },
    Rule {
        kind: DeadlineKind::ReplacementReceipt,
        state: DisputeState::ReplacementInTransit,
        clock: Clock::ReplacementShipped,
        default_days: 30,
        consequence: Consequence::ReleaseToSeller,
        event: EventKind::ReplacementReceiptDeadlinePassed,
        name: "REPLACEMENT_RECEIPT",
    },
];

/// Default of the one window outside the table: how long after a replacement ships the
/// buyer is protected at least.
const REPLACEMENT_DELIVERY_DAYS: i64 = 30;

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 6] = [
        DeadlineKind::SellerResponse,
        DeadlineKind::Negotiation,
        DeadlineKind::ReturnShipment,
        DeadlineKind::ReturnReceipt,
        DeadlineKind::ReplacementShipment,
        DeadlineKind::ReplacementReceipt,
    ];

    /// Its row of [`RULES`].
    pub fn rule(self) -> &'static Rule {
        &RULES[self as usize]
    }
}

/// The rule of the deadline a dispute in `state` waits on (UNDER_REVIEW waits for an
/// agent, terminal states for nothing).
pub fn rule_for(state: DisputeState) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.state == state)
}

/// The deadline an event records, if it records one.
pub fn rule_of(event: EventKind) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.event == event)
}

/// How long each party has: one configured length per [`DeadlineKind`] (defaults from
/// [`RULES`]), and the replacement's delivery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    lengths: [Duration; 6],
    /// How long after a replacement ships the buyer is protected at least: the order's
    /// protection end moves out to cover it.
    pub replacement_delivery: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            lengths: RULES.map(|rule| Duration::days(rule.default_days)),
            replacement_delivery: Duration::days(REPLACEMENT_DELIVERY_DAYS),
        }
    }
}

/// The latest time a deadline's clock may have started for a dispute in its state to be
/// due at some `now`: the worker's scan, the inverse of [`Deadlines::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    pub state: DisputeState,
    pub clock: Clock,
    pub started_before: DateTime<Utc>,
}

impl Deadlines {
    /// `lengths` for the kinds it names (the others keep their defaults).
    pub fn new(
        lengths: impl IntoIterator<Item = (DeadlineKind, Duration)>,
        replacement_delivery: Duration,
    ) -> Self {
        let mut deadlines = Self {
            replacement_delivery,
            ..Self::default()
        };
        for (kind, length) in lengths {
            deadlines.lengths[kind as usize] = length;
        }
        deadlines
    }

    /// How long `kind` runs.
    pub fn of(&self, kind: DeadlineKind) -> Duration {
        self.lengths[kind as usize]
    }

    /// When the dispute's current deadline falls and what it is; `None` for states
    /// without one.
    pub fn due(&self, dispute: &Dispute) -> Option<(DateTime<Utc>, EventKind)> {
        let rule = rule_for(dispute.state)?;
        Some((
            rule.clock.started_at(dispute)? + self.of(rule.kind),
            rule.event,
        ))
    }

    /// The deadline [`apply_deadline`] will apply to `dispute`, when and with what effect
    /// (from [`Deadlines::due`], the function the worker decides with, so the two never
    /// disagree); `None` when nothing happens by itself.
    pub fn next(&self, dispute: &Dispute) -> Option<NextDeadline> {
        let (due_at, _) = self.due(dispute)?;
        let rule = rule_for(dispute.state)?;
        Some(NextDeadline {
            kind: rule.kind,
            due_at,
            consequence: rule.consequence,
        })
    }

    /// For each rule, the latest start of its clock that makes it due at `now`.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Vec<Cutoff> {
        RULES
            .iter()
            .map(|rule| Cutoff {
                state: rule.state,
                clock: rule.clock,
                started_before: now - self.of(rule.kind),
            })
            .collect()
    }
}

/// The next automatic step of a dispute: what the parties see as a countdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDeadline {
    pub kind: DeadlineKind,
    pub due_at: DateTime<Utc>,
    pub consequence: Consequence,
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
    let Some(rule) = rule_for(dispute.state) else {
        return Ok(None);
    };
    if now < due {
        return Ok(None);
    }
    let change = match rule.consequence {
        Consequence::GrantBuyerRemedy => grant(order, dispute, dispute.remedy, event, now)?,
        Consequence::Escalate => {
            let mut dispute = dispute.clone();
            dispute.move_to(DisputeState::UnderReview, now);
            Change::new(order.clone(), dispute, None, event)
        }
        Consequence::RefundBuyer => {
            // The seller did not object in time: a return in transit is taken as delivered.
            let mut refunded = dispute.clone();
            if let Some(item_return) = refunded.item_return.as_mut()
                && item_return.status == ReturnStatus::InTransit
            {
                item_return.status = ReturnStatus::Received;
            }
            settle_and_resolve(order, &refunded, order.amount.minor, event, now)?
        }
        // The buyer did not object in time: a replacement in transit is taken as delivered.
        Consequence::ReleaseToSeller => settle_and_resolve(order, dispute, 0, event, now)?,
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
        assert_eq!(d.of(DeadlineKind::SellerResponse), Duration::days(5));
        assert_eq!(d.of(DeadlineKind::Negotiation), Duration::days(15));
        assert_eq!(d.of(DeadlineKind::ReturnShipment), Duration::days(10));
        assert_eq!(d.of(DeadlineKind::ReturnReceipt), Duration::days(15));
        assert_eq!(d.of(DeadlineKind::ReplacementShipment), Duration::days(10));
        assert_eq!(d.of(DeadlineKind::ReplacementReceipt), Duration::days(30));
        assert_eq!(d.replacement_delivery, Duration::days(30));
    }

    #[test]
    fn a_cutoff_is_the_deadline_counted_back_from_now() {
        let cutoffs = Deadlines::default().cutoffs(at(1, 3, 12));
        let before = |state| {
            cutoffs
                .iter()
                .find(|c| c.state == state)
                .map(|c| (c.clock, c.started_before))
        };
        use DisputeState::*;
        assert_eq!(before(AwaitingSeller), Some((Clock::Opened, at(24, 2, 12))));
        assert_eq!(before(Negotiating), Some((Clock::Opened, at(14, 2, 12))));
        assert_eq!(
            before(AwaitingReturnShipment),
            Some((Clock::ReturnAgreed, at(19, 2, 12)))
        );
        assert_eq!(
            before(ReturnInTransit),
            Some((Clock::ReturnShipped, at(14, 2, 12)))
        );
        assert_eq!(
            before(AwaitingReplacementShipment),
            Some((Clock::ReplacementAgreed, at(19, 2, 12)))
        );
        assert_eq!(
            before(ReplacementInTransit),
            Some((Clock::ReplacementShipped, at(30, 1, 12)))
        );
        assert_eq!(cutoffs.len(), 6);
    }

    #[test]
    fn the_table_is_in_kind_order_and_every_waiting_state_has_one_deadline() {
        for (i, rule) in RULES.iter().enumerate() {
            assert_eq!(rule.kind as usize, i, "{rule:?}");
            assert_eq!(DeadlineKind::ALL[i], rule.kind);
            assert_eq!(rule_of(rule.event), Some(rule));
        }
        // README, "Deadlines": every open state but UNDER_REVIEW waits on exactly one.
        for state in DisputeState::ALL {
            let rules = RULES.iter().filter(|r| r.state == state).count();
            let expected = usize::from(!state.is_terminal() && state != DisputeState::UnderReview);
            assert_eq!(rules, expected, "{state:?}");
        }
    }
}
