//! Unit and property tests of the rules: money conserved on every path, terminal states
//! final, only the buyer cancels, the protection-expiry branch, remedy and amount checks.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn usd(minor: i64) -> Money {
    Money::new(Currency::parse("USD").unwrap(), minor)
}

fn id(s: &str) -> PartyId {
    PartyId::parse(s).unwrap()
}

fn buyer() -> Actor {
    Actor::new(Role::Buyer, "b1")
}
fn seller() -> Actor {
    Actor::new(Role::Seller, "s1")
}
fn agent() -> Actor {
    Actor::new(Role::Agent, "a1")
}

fn order(amount: i64) -> Order {
    let Ok(Registration::Created(order)) = register(
        None,
        NewOrder {
            order_id: id("o1"),
            buyer_id: id("b1"),
            seller_id: id("s1"),
            amount: usd(amount),
            protection_ends_at: t0() + Duration::days(30),
        },
    ) else {
        panic!("a new order registers")
    };
    order
}

fn new_dispute(remedy: Remedy) -> NewDispute {
    NewDispute {
        order_id: id("o1"),
        reason: Reason::NotAsDescribed,
        remedy,
        description: "broken".into(),
        evidence_urls: vec![],
    }
}

fn opened(order: &Order, remedy: Remedy) -> Change {
    open(
        order,
        false,
        new_dispute(remedy),
        &buyer(),
        3,
        DisputeId::new(),
        t0(),
    )
    .unwrap()
}

fn precondition(result: Result<Change, DomainError>) -> Precondition {
    match result {
        Err(DomainError::FailedPrecondition(p)) => p,
        other => panic!("expected a failed precondition, got {other:?}"),
    }
}

fn conserved(order: &Order) -> bool {
    order.settlement.is_none_or(|s| {
        s.refund_minor() >= 0
            && s.release_minor() >= 0
            && s.refund_minor() + s.release_minor() == order.amount.minor
    })
}

#[test]
fn registering_the_same_facts_again_changes_nothing_and_other_facts_conflict() {
    let order = order(1000);
    let stored = Some(Registered {
        order: &order,
        protection_ends_at: order.protection_ends_at,
    });
    assert_eq!(register(stored, order.facts()), Ok(Registration::Unchanged));
    let mut other = order.facts();
    other.amount = usd(999);
    assert!(matches!(
        register(stored, other),
        Err(DomainError::AlreadyExists {
            reason: "ORDER_ALREADY_EXISTS",
            ..
        })
    ));
}

#[test]
fn after_an_extension_the_registered_facts_and_the_extended_ones_are_the_same_registration() {
    let registered = order(1000);
    let extended = extend_protection(
        &registered,
        &seller(),
        registered.protection_ends_at + Duration::days(7),
    )
    .unwrap();
    let stored = Some(Registered {
        order: &extended,
        protection_ends_at: registered.protection_ends_at,
    });
    assert_eq!(
        register(stored, registered.facts()),
        Ok(Registration::Unchanged)
    );
    assert_eq!(
        register(stored, extended.facts()),
        Ok(Registration::Unchanged)
    );
    let mut shorter = registered.facts();
    shorter.protection_ends_at -= Duration::days(1);
    assert_eq!(
        register(stored, shorter),
        Err(DomainError::ORDER_ALREADY_EXISTS)
    );
}

#[test]
fn a_buyer_opens_a_dispute_awaiting_the_seller_and_the_count_grows() {
    let change = opened(&order(1000), Remedy::FullRefund);
    assert_eq!(change.dispute.state, DisputeState::AwaitingSeller);
    assert_eq!(change.order.dispute_count, 1);
    assert_eq!(change.dispute.item_return, None);
    assert_eq!(change.settlement, None);
}

#[test]
fn a_return_and_refund_dispute_carries_a_requested_return() {
    let change = opened(&order(1000), Remedy::ReturnAndRefund);
    assert_eq!(
        change.dispute.item_return.map(|r| r.status),
        Some(ReturnStatus::Requested)
    );
}

#[test]
fn nothing_can_be_returned_when_the_item_never_arrived() {
    assert!(!Remedy::ReturnAndRefund.allowed_for(Reason::ItemNotReceived));
    assert!(Remedy::ReturnAndRefund.allowed_for(Reason::QualityIssue));
    assert!(Remedy::FullRefund.allowed_for(Reason::ItemNotReceived));
}

#[test]
fn a_partial_refund_must_be_inside_the_order_amount_and_currency() {
    let order = order(1000);
    for bad in [usd(1000), usd(1001), usd(0)] {
        let result = open(
            &order,
            false,
            new_dispute(Remedy::PartialRefund(bad)),
            &buyer(),
            3,
            DisputeId::new(),
            t0(),
        );
        assert!(
            matches!(result, Err(DomainError::InvalidArgument(_))),
            "{bad} accepted"
        );
    }
    let eur = Money::new(Currency::parse("EUR").unwrap(), 10);
    let result = open(
        &order,
        false,
        new_dispute(Remedy::PartialRefund(eur)),
        &buyer(),
        3,
        DisputeId::new(),
        t0(),
    );
    let Err(DomainError::InvalidArgument(violations)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(violations[0].field, "refund_amount.currency_code");
    assert!(
        open(
            &order,
            false,
            new_dispute(Remedy::PartialRefund(usd(999))),
            &buyer(),
            3,
            DisputeId::new(),
            t0()
        )
        .is_ok()
    );
}

#[test]
fn only_the_orders_own_buyer_can_open() {
    let order = order(1000);
    for actor in [seller(), agent(), Actor::new(Role::Service, "svc")] {
        let result = open(
            &order,
            false,
            new_dispute(Remedy::FullRefund),
            &actor,
            3,
            DisputeId::new(),
            t0(),
        );
        assert!(matches!(result, Err(DomainError::PermissionDenied { .. })));
    }
    let stranger = Actor::new(Role::Buyer, "b2");
    let result = open(
        &order,
        false,
        new_dispute(Remedy::FullRefund),
        &stranger,
        3,
        DisputeId::new(),
        t0(),
    );
    assert_eq!(result, Err(DomainError::NotFound(Resource::Order)));
}

#[test]
fn opening_is_refused_for_each_precondition_with_its_own_reason() {
    let fresh = order(1000);
    let late = t0() + Duration::days(31);
    let open_at = |order: &Order, active: bool, now| {
        open(
            order,
            active,
            new_dispute(Remedy::FullRefund),
            &buyer(),
            3,
            DisputeId::new(),
            now,
        )
    };
    assert_eq!(
        precondition(open_at(&fresh, false, late)),
        Precondition::ProtectionExpired
    );
    assert_eq!(
        precondition(open_at(&fresh, false, fresh.protection_ends_at)),
        Precondition::ProtectionExpired
    );
    let mut settled = fresh.clone();
    settled.settle(1000, t0()).unwrap();
    assert_eq!(
        precondition(open_at(&settled, false, t0())),
        Precondition::FundsSettled
    );
    let mut closed = settled.clone();
    closed.disputes_closed = true;
    assert_eq!(
        precondition(open_at(&closed, false, t0())),
        Precondition::DisputesClosed
    );
    let mut busy = fresh.clone();
    busy.dispute_count = 3;
    assert_eq!(
        precondition(open_at(&busy, false, t0())),
        Precondition::DisputeLimitReached
    );
    assert!(matches!(
        open_at(&fresh, true, t0()),
        Err(DomainError::AlreadyExists {
            reason: "DISPUTE_ALREADY_OPEN",
            ..
        })
    ));
}

#[test]
fn cancelling_before_protection_ends_keeps_the_funds_held_and_the_order_open() {
    let change = opened(&order(1000), Remedy::FullRefund);
    let cancelled = cancel(
        &change.order,
        &change.dispute,
        &buyer(),
        CancelVia::Dispute,
        t0(),
    )
    .unwrap();
    assert_eq!(cancelled.dispute.state, DisputeState::Cancelled);
    assert_eq!(cancelled.dispute.outcome, Some(Outcome::CancelledByBuyer));
    assert_eq!(cancelled.order.funds_state(), FundsState::Held);
    assert_eq!(cancelled.settlement, None);
    assert!(!cancelled.order.disputes_closed);
    // ... so the buyer may open again.
    assert!(
        open(
            &cancelled.order,
            false,
            new_dispute(Remedy::FullRefund),
            &buyer(),
            3,
            DisputeId::new(),
            t0()
        )
        .is_ok()
    );
}

#[test]
fn cancelling_after_protection_ends_releases_the_funds_and_closes_the_order() {
    let change = opened(&order(1000), Remedy::FullRefund);
    let late = change.order.protection_ends_at;
    let cancelled = cancel(
        &change.order,
        &change.dispute,
        &buyer(),
        CancelVia::Dispute,
        late,
    )
    .unwrap();
    assert_eq!(cancelled.order.funds_state(), FundsState::ReleasedToSeller);
    assert_eq!(cancelled.settlement.map(|s| s.release_minor()), Some(1000));
    assert!(cancelled.order.disputes_closed);
    let again = open(
        &cancelled.order,
        false,
        new_dispute(Remedy::FullRefund),
        &buyer(),
        3,
        DisputeId::new(),
        late,
    );
    assert_eq!(precondition(again), Precondition::DisputesClosed);
}

#[test]
fn only_the_buyer_can_cancel_and_the_refusal_states_the_rule() {
    let change = opened(&order(1000), Remedy::FullRefund);
    for actor in [seller(), agent(), Actor::new(Role::Service, "svc")] {
        for via in [CancelVia::Dispute, CancelVia::Return] {
            let result = cancel(&change.order, &change.dispute, &actor, via, t0());
            assert_eq!(result, Err(DomainError::ONLY_BUYER_CAN_CANCEL));
        }
    }
    let DomainError::PermissionDenied { message, .. } = DomainError::ONLY_BUYER_CAN_CANCEL else {
        unreachable!()
    };
    assert!(message.contains("only the buyer can cancel"));
    assert!(message.contains("customer service"));
    let stranger = Actor::new(Role::Buyer, "b2");
    let result = cancel(
        &change.order,
        &change.dispute,
        &stranger,
        CancelVia::Dispute,
        t0(),
    );
    assert_eq!(result, Err(DomainError::NotFound(Resource::Dispute)));
}

#[test]
fn a_dispute_with_a_return_is_cancelled_through_the_return_only() {
    let change = opened(&order(1000), Remedy::ReturnAndRefund);
    let refused = cancel(
        &change.order,
        &change.dispute,
        &buyer(),
        CancelVia::Dispute,
        t0(),
    );
    assert_eq!(precondition(refused), Precondition::ReturnInProgress);
    let cancelled = cancel(
        &change.order,
        &change.dispute,
        &buyer(),
        CancelVia::Return,
        t0(),
    )
    .unwrap();
    assert_eq!(cancelled.dispute.state, DisputeState::Cancelled);
    assert_eq!(
        cancelled.dispute.item_return.unwrap().status,
        ReturnStatus::Cancelled
    );

    let plain = opened(&order(1000), Remedy::FullRefund);
    let refused = cancel(
        &plain.order,
        &plain.dispute,
        &buyer(),
        CancelVia::Return,
        t0(),
    );
    assert_eq!(precondition(refused), Precondition::NoReturn);
}

#[test]
fn a_received_return_can_no_longer_be_cancelled() {
    let mut change = opened(&order(1000), Remedy::ReturnAndRefund);
    change.dispute.item_return.as_mut().unwrap().status = ReturnStatus::Received;
    let refused = cancel(
        &change.order,
        &change.dispute,
        &buyer(),
        CancelVia::Return,
        t0(),
    );
    assert_eq!(precondition(refused), Precondition::ReturnAlreadyReceived);
}

#[test]
fn an_agent_may_rule_any_way_but_must_say_why() {
    for (resolution, outcome, state) in [
        (
            Resolution::RefundFull,
            Outcome::ResolvedBuyerFavour,
            FundsState::RefundedToBuyer,
        ),
        (
            Resolution::RefundPartial(usd(300)),
            Outcome::ResolvedPartial,
            FundsState::Split,
        ),
        (
            Resolution::ReleaseToSeller,
            Outcome::ResolvedSellerFavour,
            FundsState::ReleasedToSeller,
        ),
    ] {
        let change = opened(&order(1000), Remedy::FullRefund);
        let refused = resolve(
            &change.order,
            &change.dispute,
            &agent(),
            resolution,
            " ",
            t0(),
        );
        assert!(matches!(refused, Err(DomainError::InvalidArgument(_))));
        let resolved = resolve(
            &change.order,
            &change.dispute,
            &agent(),
            resolution,
            "photos prove it",
            t0(),
        )
        .unwrap();
        assert_eq!(resolved.dispute.outcome, Some(outcome));
        assert_eq!(resolved.order.funds_state(), state);
        assert!(conserved(&resolved.order));
    }
}

#[test]
fn resolving_a_closed_dispute_is_dispute_closed_whatever_the_ruling() {
    let order = order(10_000);
    let d = opened(&order, Remedy::FullRefund).dispute;
    let cancelled = cancel(&order, &d, &buyer(), CancelVia::Dispute, t0())
        .unwrap()
        .dispute;
    let rulings = [
        // An agent without a note, a seller taking money, an out-of-range refund: each
        // would be refused for itself on an open dispute.
        (agent(), Resolution::RefundFull, ""),
        (seller(), Resolution::ReleaseToSeller, ""),
        (agent(), Resolution::RefundPartial(usd(20_000)), "too much"),
    ];
    for (actor, resolution, note) in rulings {
        assert_eq!(
            precondition(resolve(&order, &cancelled, &actor, resolution, note, t0())),
            Precondition::DisputeClosed,
            "{actor:?} {resolution:?}"
        );
    }
}

#[test]
fn a_seller_may_give_money_back_but_never_take_it() {
    let partial = opened(&order(1000), Remedy::PartialRefund(usd(400)));
    let (o, d) = (&partial.order, &partial.dispute);
    let refused = |r| {
        matches!(
            resolve(o, d, &seller(), r, "", t0()),
            Err(DomainError::PermissionDenied { .. })
        )
    };
    assert!(refused(Resolution::ReleaseToSeller));
    assert!(refused(Resolution::RefundPartial(usd(399))));
    assert!(
        resolve(
            o,
            d,
            &seller(),
            Resolution::RefundPartial(usd(400)),
            "",
            t0()
        )
        .is_ok()
    );
    assert!(
        resolve(
            o,
            d,
            &seller(),
            Resolution::RefundPartial(usd(999)),
            "",
            t0()
        )
        .is_ok()
    );
    assert!(resolve(o, d, &seller(), Resolution::RefundFull, "", t0()).is_ok());

    let full = opened(&order(1000), Remedy::ReturnAndRefund);
    let refused = resolve(
        &full.order,
        &full.dispute,
        &seller(),
        Resolution::RefundPartial(usd(999)),
        "",
        t0(),
    );
    assert!(matches!(refused, Err(DomainError::PermissionDenied { .. })));
    // Refunding without the item back abandons the return.
    let abandoned = resolve(
        &full.order,
        &full.dispute,
        &seller(),
        Resolution::RefundFull,
        "",
        t0(),
    )
    .unwrap();
    assert_eq!(
        abandoned.dispute.item_return.unwrap().status,
        ReturnStatus::Cancelled
    );

    let other_seller = Actor::new(Role::Seller, "s2");
    let hidden = resolve(o, d, &other_seller, Resolution::RefundFull, "", t0());
    assert_eq!(hidden, Err(DomainError::NotFound(Resource::Dispute)));
    for actor in [buyer(), Actor::new(Role::Service, "svc")] {
        let result = resolve(o, d, &actor, Resolution::RefundFull, "x", t0());
        assert!(matches!(result, Err(DomainError::PermissionDenied { .. })));
    }
}

#[test]
fn settlements_conserve_money_and_refuse_out_of_range_refunds() {
    assert!(Settlement::new(usd(10), -1, t0()).is_none());
    assert!(Settlement::new(usd(10), 11, t0()).is_none());
    let s = Settlement::new(usd(10), 4, t0()).unwrap();
    assert_eq!((s.refund_minor(), s.release_minor()), (4, 6));
}

mod model;

/// Every state with a deadline: the countdown the API shows is the one the worker keeps —
/// nothing a microsecond before `due_at`, exactly the announced consequence at it — and
/// the states without one show none.
/// A dispute in each state that waits on a party's step, every step taken at `at`.
struct Waiting {
    return_agreed: Dispute,
    return_shipped: Dispute,
    replacement_agreed: Dispute,
    replacement_shipped: Dispute,
}

fn waiting(order: &Order, deadlines: &Deadlines, at: DateTime<Utc>) -> Waiting {
    let asked = opened(order, Remedy::ReturnAndRefund).dispute;
    let return_agreed = respond(order, &asked, &seller(), SellerDecision::Accept, at)
        .unwrap()
        .dispute;
    let return_shipped = submit_return_shipment(order, &return_agreed, &buyer(), "ups", "1Z", at)
        .unwrap()
        .dispute;
    let replacement_agreed = replacement_agreed(order, at);
    let replacement_shipped = submit_replacement_shipment(
        order,
        &replacement_agreed,
        &seller(),
        "dhl",
        "JD1",
        deadlines.replacement_delivery,
        at,
    )
    .unwrap()
    .dispute;
    Waiting {
        return_agreed,
        return_shipped,
        replacement_agreed,
        replacement_shipped,
    }
}

#[test]
fn each_deadline_falls_its_days_after_its_own_clock() {
    let deadlines = Deadlines::default();
    let order = order(10_000);
    // Opened at t0 (1 January, 00:00); the seller and buyer act at 01:00.
    let later = t0() + Duration::hours(1);
    let date = |day, month, hour| Utc.with_ymd_and_hms(2026, month, day, hour, 0, 0).unwrap();
    let awaiting = opened(&order, Remedy::ReturnAndRefund).dispute;
    let Waiting {
        return_agreed: agreed,
        return_shipped: shipped,
        replacement_agreed: replacement,
        replacement_shipped,
    } = waiting(&order, &deadlines, later);
    let due = |d: &Dispute| deadlines.due(d).unwrap().0;
    assert_eq!(due(&awaiting), date(6, 1, 0), "5 days from opening");
    assert_eq!(
        due(&negotiating(&order)),
        date(16, 1, 0),
        "15 days from opening"
    );
    assert_eq!(due(&agreed), date(11, 1, 1), "10 days from the agreement");
    assert_eq!(due(&shipped), date(16, 1, 1), "15 days from the tracking");
    assert_eq!(
        due(&replacement),
        date(11, 1, 1),
        "10 days from the agreement"
    );
    assert_eq!(
        due(&replacement_shipped),
        date(31, 1, 1),
        "30 days from the shipment"
    );
}

#[test]
fn the_next_deadline_is_exactly_when_and_what_the_worker_does() {
    let deadlines = Deadlines::default();
    let order = order(10_000);
    let later = t0() + Duration::hours(1);
    let awaiting = |remedy| opened(&order, remedy).dispute;
    let Waiting {
        return_agreed: awaiting_shipment,
        return_shipped: in_transit,
        replacement_agreed: awaiting_replacement,
        replacement_shipped: replacement_in_transit,
    } = waiting(&order, &deadlines, later);
    let cases = [
        (
            awaiting(Remedy::FullRefund),
            DeadlineKind::SellerResponse,
            Consequence::GrantBuyerRemedy,
        ),
        (
            awaiting(Remedy::PartialRefund(usd(2_500))),
            DeadlineKind::SellerResponse,
            Consequence::GrantBuyerRemedy,
        ),
        (
            awaiting(Remedy::ReturnAndRefund),
            DeadlineKind::SellerResponse,
            Consequence::GrantBuyerRemedy,
        ),
        (
            negotiating(&order),
            DeadlineKind::Negotiation,
            Consequence::Escalate,
        ),
        (
            awaiting_shipment,
            DeadlineKind::ReturnShipment,
            Consequence::ReleaseToSeller,
        ),
        (
            in_transit,
            DeadlineKind::ReturnReceipt,
            Consequence::RefundBuyer,
        ),
        (
            awaiting(Remedy::Replacement),
            DeadlineKind::SellerResponse,
            Consequence::GrantBuyerRemedy,
        ),
        (
            awaiting_replacement,
            DeadlineKind::ReplacementShipment,
            Consequence::RefundBuyer,
        ),
        (
            replacement_in_transit,
            DeadlineKind::ReplacementReceipt,
            Consequence::ReleaseToSeller,
        ),
    ];
    for (dispute, kind, consequence) in cases {
        let next = deadlines.next(&dispute).expect("a deadline");
        assert_eq!(
            (next.kind, next.consequence),
            (kind, consequence),
            "{:?}",
            dispute.state
        );
        let early = next.due_at - Duration::microseconds(1);
        assert!(
            apply_deadline(&order, &dispute, &deadlines, early)
                .unwrap()
                .is_none()
        );
        let change = apply_deadline(&order, &dispute, &deadlines, next.due_at)
            .unwrap()
            .expect("applied at due_at");
        let refund = change.settlement.map(|s| s.refund_minor());
        match (consequence, dispute.remedy) {
            (Consequence::GrantBuyerRemedy, Remedy::FullRefund) => assert_eq!(refund, Some(10_000)),
            (Consequence::GrantBuyerRemedy, Remedy::PartialRefund(asked)) => {
                assert_eq!(refund, Some(asked.minor))
            }
            (Consequence::GrantBuyerRemedy, Remedy::ReturnAndRefund) => {
                assert_eq!(change.dispute.state, DisputeState::AwaitingReturnShipment)
            }
            (Consequence::GrantBuyerRemedy, Remedy::Replacement) => {
                assert_eq!(
                    change.dispute.state,
                    DisputeState::AwaitingReplacementShipment
                )
            }
            (Consequence::RefundBuyer, _) => assert_eq!(refund, Some(10_000)),
            (Consequence::ReleaseToSeller, _) => assert_eq!(refund, Some(0)),
            (Consequence::Escalate, _) => {
                assert_eq!(change.dispute.state, DisputeState::UnderReview)
            }
        }
        // Applied, the dispute's next deadline (if any) is a later one.
        if let Some(after) = deadlines.next(&change.dispute) {
            assert!(after.due_at > next.due_at);
        }
    }
    let negotiating = negotiating(&order);
    let due = deadlines.next(&negotiating).unwrap().due_at;
    let escalated = apply_deadline(&order, &negotiating, &deadlines, due)
        .unwrap()
        .unwrap()
        .dispute;
    assert_eq!(
        deadlines.next(&escalated),
        None,
        "UNDER_REVIEW waits for an agent"
    );
}

/// A dispute the seller answered with a counter-proposal.
fn negotiating(order: &Order) -> Dispute {
    let d = opened(order, Remedy::FullRefund).dispute;
    let offer = SellerDecision::Propose {
        remedy: Remedy::PartialRefund(usd(4_000)),
        message: "half?".into(),
    };
    respond(order, &d, &seller(), offer, t0()).unwrap().dispute
}

/// A dispute whose buyer asked for a replacement the seller accepted at `at`.
fn replacement_agreed(order: &Order, at: DateTime<Utc>) -> Dispute {
    let d = opened(order, Remedy::Replacement).dispute;
    respond(order, &d, &seller(), SellerDecision::Accept, at)
        .unwrap()
        .dispute
}

#[test]
fn a_replacement_is_asked_for_any_reason_and_agreed_by_accept_or_proposal() {
    let order = order(10_000);
    for reason in [
        Reason::ItemNotReceived,
        Reason::NotAsDescribed,
        Reason::QualityIssue,
    ] {
        let new = NewDispute {
            reason,
            ..new_dispute(Remedy::Replacement)
        };
        let opened = open(&order, false, new, &buyer(), 3, DisputeId::new(), t0()).unwrap();
        assert_eq!(opened.dispute.state, DisputeState::AwaitingSeller);
        assert_eq!(opened.dispute.replacement, None);
    }
    let agreed = replacement_agreed(&order, t0());
    assert_eq!(agreed.state, DisputeState::AwaitingReplacementShipment);
    assert_eq!(agreed.replacement.as_ref().unwrap().agreed_at, t0());
    assert_eq!(agreed.state.waits_for(), Some(Role::Seller));
    // Proposed by the seller instead of the refund asked, accepted by the buyer.
    let d = opened(&order, Remedy::FullRefund).dispute;
    let offer = SellerDecision::Propose {
        remedy: Remedy::Replacement,
        message: "we send a new one".into(),
    };
    let negotiating = respond(&order, &d, &seller(), offer, t0()).unwrap().dispute;
    let accepted = accept_proposal(&order, &negotiating, &buyer(), t0()).unwrap();
    assert_eq!(
        accepted.dispute.state,
        DisputeState::AwaitingReplacementShipment
    );
    assert!(accepted.settlement.is_none(), "nothing is paid yet");
}

#[test]
fn shipping_a_replacement_moves_protection_out_never_in() {
    let order = order(10_000);
    let window = Duration::days(30);
    let agreed = replacement_agreed(&order, t0());
    // Early: the order's own end (day 30) is before day 5 + 30: moved to day 35.
    let shipped_at = t0() + Duration::days(5);
    let early =
        submit_replacement_shipment(&order, &agreed, &seller(), "dhl", "JD1", window, shipped_at)
            .unwrap();
    assert_eq!(early.dispute.state, DisputeState::ReplacementInTransit);
    assert_eq!(early.order.protection_ends_at, shipped_at + window);
    assert_eq!(early.dispute.protection_ends_at, shipped_at + window);
    let r = early.dispute.replacement.as_ref().unwrap();
    assert_eq!(
        (
            r.carrier.as_deref(),
            r.tracking_number.as_deref(),
            r.shipped_at
        ),
        (Some("dhl"), Some("JD1"), Some(shipped_at))
    );
    assert_eq!(early.dispute.state.waits_for(), Some(Role::Buyer));
    // An end already later than shipment + window stays.
    let mut extended = order.clone();
    extended.protection_ends_at = t0() + Duration::days(90);
    let later = submit_replacement_shipment(
        &extended,
        &agreed,
        &seller(),
        "dhl",
        "JD1",
        window,
        shipped_at,
    )
    .unwrap();
    assert_eq!(later.order.protection_ends_at, t0() + Duration::days(90));
    // Only the order's seller ships, and only an agreed replacement.
    for actor in [buyer(), agent(), Actor::new(Role::Seller, "s2")] {
        assert!(
            submit_replacement_shipment(&order, &agreed, &actor, "dhl", "JD1", window, t0())
                .is_err()
        );
    }
    let not_agreed = opened(&order, Remedy::Replacement).dispute;
    assert_eq!(
        precondition(submit_replacement_shipment(
            &order,
            &not_agreed,
            &seller(),
            "dhl",
            "JD1",
            window,
            t0()
        )),
        Precondition::InvalidDisputeState
    );
}

#[test]
fn the_buyer_confirms_the_replacement_and_the_seller_is_paid() {
    let order = order(10_000);
    let agreed = replacement_agreed(&order, t0());
    let shipped = submit_replacement_shipment(
        &order,
        &agreed,
        &seller(),
        "dhl",
        "JD1",
        Duration::days(30),
        t0(),
    )
    .unwrap();
    let done =
        confirm_replacement_received(&shipped.order, &shipped.dispute, &buyer(), t0()).unwrap();
    assert_eq!(done.dispute.state, DisputeState::Resolved);
    assert_eq!(done.dispute.outcome, Some(Outcome::ResolvedSellerFavour));
    let s = done.settlement.unwrap();
    assert_eq!((s.refund_minor(), s.release_minor()), (0, 10_000));
    assert!(conserved(&done.order));
    // Not the seller, not before it ships.
    assert!(
        confirm_replacement_received(&shipped.order, &shipped.dispute, &seller(), t0()).is_err()
    );
    assert_eq!(
        precondition(confirm_replacement_received(
            &order,
            &agreed,
            &buyer(),
            t0()
        )),
        Precondition::InvalidDisputeState
    );
}

#[test]
fn while_a_replacement_is_awaited_the_buyer_may_cancel_or_escalate_and_only_the_buyer_cancels() {
    let order = order(10_000);
    let agreed = replacement_agreed(&order, t0());
    let shipped = submit_replacement_shipment(
        &order,
        &agreed,
        &seller(),
        "dhl",
        "JD1",
        Duration::days(30),
        t0() + Duration::days(20),
    )
    .unwrap();
    for (order, dispute) in [(&order, &agreed), (&shipped.order, &shipped.dispute)] {
        // Day 40: past the registered end (30) — but not past the moved one (50) once shipped.
        let at = t0() + Duration::days(40);
        let cancelled = cancel(order, dispute, &buyer(), CancelVia::Dispute, at).unwrap();
        assert_eq!(cancelled.dispute.outcome, Some(Outcome::CancelledByBuyer));
        assert_eq!(
            cancelled.settlement.is_some(),
            dispute.state == DisputeState::AwaitingReplacementShipment,
            "released only when protection has ended"
        );
        assert_eq!(
            precondition(cancel(order, dispute, &buyer(), CancelVia::Return, at)),
            Precondition::NoReturn
        );
        for actor in [seller(), agent(), Actor::new(Role::Service, "svc")] {
            assert_eq!(
                cancel(order, dispute, &actor, CancelVia::Dispute, at),
                Err(DomainError::ONLY_BUYER_CAN_CANCEL)
            );
        }
        let escalated = escalate(order, dispute, &buyer(), "never came", at).unwrap();
        assert_eq!(escalated.dispute.state, DisputeState::UnderReview);
        assert!(escalate(order, dispute, &seller(), "no", at).is_err());
    }
}

#[test]
fn a_seller_who_will_not_reissue_refunds_in_full() {
    let order = order(10_000);
    let agreed = replacement_agreed(&order, t0());
    let partial = resolve(
        &order,
        &agreed,
        &seller(),
        Resolution::RefundPartial(usd(9_999)),
        "",
        t0(),
    );
    assert!(matches!(
        partial,
        Err(DomainError::PermissionDenied {
            reason: "SELLER_CANNOT_REDUCE_REFUND",
            ..
        })
    ));
    let full = resolve(&order, &agreed, &seller(), Resolution::RefundFull, "", t0()).unwrap();
    assert_eq!(full.settlement.unwrap().refund_minor(), 10_000);
}

#[test]
fn messages_change_nothing_but_the_time_and_come_from_the_parties_or_an_agent() {
    let order = order(10_000);
    let d = opened(&order, Remedy::FullRefund).dispute;
    let at = t0() + Duration::hours(2);
    let urls = vec!["s3://evidence/photo.jpg".to_owned()];
    for actor in [buyer(), seller(), agent()] {
        let posted = post_message(&order, &d, &actor, "hello", &urls, at).unwrap();
        assert_eq!(posted.event, EventKind::MessagePosted);
        assert_eq!(posted.note.as_deref(), Some("hello"));
        assert_eq!(posted.evidence_urls, urls);
        assert_eq!(posted.order, order);
        assert!(posted.settlement.is_none());
        let mut expected = d.clone();
        expected.updated_at = at;
        assert_eq!(posted.dispute, expected);
    }
    for actor in [
        Actor::new(Role::Buyer, "b2"),
        Actor::new(Role::Seller, "s2"),
    ] {
        assert_eq!(
            post_message(&order, &d, &actor, "hi", &[], at),
            Err(DomainError::NotFound(Resource::Dispute))
        );
    }
    assert!(matches!(
        post_message(&order, &d, &Actor::new(Role::Service, "svc"), "hi", &[], at),
        Err(DomainError::PermissionDenied { .. })
    ));
    let ended = cancel(&order, &d, &buyer(), CancelVia::Dispute, at)
        .unwrap()
        .dispute;
    assert_eq!(
        precondition(post_message(&order, &ended, &buyer(), "hi", &[], at)),
        Precondition::DisputeClosed
    );
}

#[test]
fn the_sellers_first_action_is_its_first_response_and_is_kept() {
    let deadlines = Deadlines::default();
    let order = order(10_000);
    let d = opened(&order, Remedy::FullRefund).dispute;
    let first = t0() + Duration::hours(3);
    let message = |text: &str| DisputeCommand::PostMessage {
        text: text.into(),
        evidence_urls: vec![],
    };
    // The buyer writing is no response of the seller.
    let by_buyer = decide(&order, &d, &buyer(), message("where?"), &deadlines, first).unwrap();
    assert_eq!(by_buyer.dispute.seller_first_response_at, None);
    let answered = decide(&order, &d, &seller(), message("on it"), &deadlines, first).unwrap();
    assert_eq!(answered.dispute.seller_first_response_at, Some(first));
    let offer = DisputeCommand::Respond(SellerDecision::Propose {
        remedy: Remedy::Replacement,
        message: "new one?".into(),
    });
    let later = first + Duration::hours(5);
    let proposed = decide(
        &order,
        &answered.dispute,
        &seller(),
        offer,
        &deadlines,
        later,
    )
    .unwrap();
    assert_eq!(proposed.dispute.seller_first_response_at, Some(first));
}

#[test]
fn an_agents_note_changes_nothing_but_the_history_and_only_an_agent_writes_one() {
    let deadlines = Deadlines::default();
    let order = order(10_000);
    let open = opened(&order, Remedy::FullRefund).dispute;
    let at = t0() + Duration::hours(7);
    let note = || DisputeCommand::AddInternalNote {
        text: "called the buyer".into(),
    };
    // In any state, a terminal one included.
    let cancelled = cancel(&order, &open, &buyer(), CancelVia::Dispute, t0()).unwrap();
    for dispute in [&open, &cancelled.dispute] {
        let noted = decide(&order, dispute, &agent(), note(), &deadlines, at).unwrap();
        assert_eq!((&noted.order, &noted.dispute), (&order, dispute));
        assert_eq!(noted.settlement, None);
        assert_eq!(noted.event, EventKind::InternalNoteAdded);
        assert_eq!(noted.note.as_deref(), Some("called the buyer"));
        assert_eq!(noted.occurred_at, at);
    }
    for actor in [buyer(), seller()] {
        assert!(matches!(
            decide(&order, &open, &actor, note(), &deadlines, at),
            Err(DomainError::PermissionDenied { .. })
        ));
    }
    // Agents read it; the parties never do.
    assert!(EventKind::hidden_from(Role::Buyer).contains(&"INTERNAL_NOTE_ADDED"));
    assert!(EventKind::hidden_from(Role::Seller).contains(&"INTERNAL_NOTE_ADDED"));
    assert!(EventKind::hidden_from(Role::Agent).is_empty());
}
