//! The state machine against a reference model: random sequences of every command, by
//! every role (own and someone else's), at moving times, including deadlines and the
//! protection end. After each step the model and the domain must agree on whether the
//! command was allowed, on the reason when it was refused, and on every state, and the
//! invariants must hold. The model is written from the rules, with its own predicates.

use chrono::Duration;
use proptest::prelude::*;

use super::{id, t0, usd};
use crate::domain::*;

const AMOUNT: i64 = 1_000;
const PROTECTION_DAYS: i64 = 30;
/// The default replacement deadlines and delivery window, in days.
const REPLACEMENT_SHIPMENT_DAYS: i64 = 10;
const REPLACEMENT_RECEIPT_DAYS: i64 = 30;
const REPLACEMENT_DELIVERY_DAYS: i64 = 30;
const MAX_DISPUTES: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ask {
    Full,
    Partial(i64),
    Return,
    Replacement,
}

#[derive(Debug, Clone)]
enum Cmd {
    Open(Reason, Ask),
    Cancel(CancelVia),
    Resolve(Resolution),
    Accept,
    Propose(Ask),
    AcceptProposal,
    Escalate,
    Ship,
    Confirm,
    ShipReplacement,
    ConfirmReplacement,
    Message,
    Deadline,
    ProtectionEnd,
}

/// The reference model: the spec's tables, written as plainly as possible.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    refund: Option<i64>,
    /// The day buyer protection ends (a replacement's shipment moves it out).
    protection: i64,
    closed: bool,
    count: i32,
    dispute: Option<ModelDispute>,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelDispute {
    state: DisputeState,
    reason: Reason,
    ask: Ask,
    ret: Option<ReturnStatus>,
    proposal: Option<Ask>,
    opened: i64,
    agreed: Option<i64>,
    shipped: Option<i64>,
    replacement_agreed: Option<i64>,
    replacement_shipped: Option<i64>,
}

fn refund_of(ask: Ask) -> i64 {
    match ask {
        // A replacement stands for the whole item.
        Ask::Full | Ask::Return | Ask::Replacement => AMOUNT,
        Ask::Partial(r) => r,
    }
}

fn valid_ask(reason: Reason, ask: Ask) -> bool {
    match ask {
        Ask::Partial(r) => 0 < r && r < AMOUNT,
        Ask::Return => reason != Reason::ItemNotReceived,
        Ask::Full | Ask::Replacement => true,
    }
}

/// Why the model refuses a command: the reason the API reports (`ErrorInfo.reason`), or
/// `MOOT` when nothing is due (the worker finds nothing to do).
type Refusal = &'static str;

const MOOT: Refusal = "MOOT";

/// The model's own words for "terminal" and "the return is under way", not the domain's.
fn ended(state: DisputeState) -> bool {
    matches!(state, DisputeState::Cancelled | DisputeState::Resolved)
}

fn return_under_way(ret: Option<ReturnStatus>) -> bool {
    matches!(
        ret,
        Some(ReturnStatus::Requested | ReturnStatus::AwaitingShipment | ReturnStatus::InTransit)
    )
}

impl Model {
    fn settle(&mut self, refund: i64) {
        self.refund = Some(refund);
    }

    /// Gives the buyer `ask`: a refund resolves now, a return or a replacement is awaited.
    fn grant(&mut self, ask: Ask, day: i64) {
        let d = self.dispute.as_mut().unwrap();
        if ask == Ask::Return {
            d.state = DisputeState::AwaitingReturnShipment;
            d.ret = Some(ReturnStatus::AwaitingShipment);
            d.agreed = Some(day);
        } else if ask == Ask::Replacement {
            d.state = DisputeState::AwaitingReplacementShipment;
            d.replacement_agreed = Some(day);
        } else {
            self.end(DisputeState::Resolved);
            self.settle(refund_of(ask));
        }
    }

    fn end(&mut self, state: DisputeState) {
        let d = self.dispute.as_mut().unwrap();
        d.state = state;
        if return_under_way(d.ret) {
            d.ret = Some(ReturnStatus::Cancelled);
        }
    }

    /// The checks a workflow step makes, in the order the README gives: the role may act
    /// at all, the dispute is the actor's to see, it is still open, it is in `states`.
    fn workflow(
        &self,
        actor: &Actor,
        roles: &[Role],
        states: &[DisputeState],
    ) -> Result<&ModelDispute, Refusal> {
        let d = self.dispute.as_ref().ok_or(MOOT)?;
        if !roles.contains(&actor.role) {
            return Err("ROLE_NOT_ALLOWED");
        }
        if !sees(actor) {
            return Err("NOT_FOUND");
        }
        if ended(d.state) {
            return Err("DISPUTE_CLOSED");
        }
        if !states.contains(&d.state) {
            return Err("INVALID_DISPUTE_STATE");
        }
        Ok(d)
    }

    /// The next model, or why the command must be refused.
    fn step(&self, cmd: &Cmd, actor: &Actor, day: i64) -> Result<Model, Refusal> {
        use DisputeState::*;
        let mut m = self.clone();
        let is = |role, id| actor.role == role && actor.id == id;
        let expired = day >= self.protection;
        match cmd {
            Cmd::Open(reason, ask) => {
                if actor.role != Role::Buyer {
                    return Err("ONLY_BUYER_CAN_OPEN");
                }
                if !is(Role::Buyer, "b1") {
                    return Err("NOT_FOUND");
                }
                if !valid_ask(*reason, *ask) {
                    return Err("INVALID_ARGUMENT");
                }
                let refusal = if self.closed {
                    Some("DISPUTES_CLOSED")
                } else if self.refund.is_some() {
                    Some("FUNDS_SETTLED")
                } else if expired {
                    Some("PROTECTION_EXPIRED")
                } else if self.dispute.as_ref().is_some_and(|d| !ended(d.state)) {
                    Some("DISPUTE_ALREADY_OPEN")
                } else if self.count >= MAX_DISPUTES {
                    Some("DISPUTE_LIMIT_REACHED")
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    return Err(refusal);
                }
                m.count += 1;
                m.dispute = Some(ModelDispute {
                    state: AwaitingSeller,
                    reason: *reason,
                    ask: *ask,
                    ret: (*ask == Ask::Return).then_some(ReturnStatus::Requested),
                    proposal: None,
                    opened: day,
                    agreed: None,
                    shipped: None,
                    replacement_agreed: None,
                    replacement_shipped: None,
                });
                Ok(m)
            }
            Cmd::Cancel(via) => {
                let d = self.dispute.as_ref().ok_or(MOOT)?;
                if actor.role != Role::Buyer {
                    return Err("ONLY_BUYER_CAN_CANCEL");
                }
                if !sees(actor) {
                    return Err("NOT_FOUND");
                }
                if ended(d.state) {
                    return Err("DISPUTE_CLOSED");
                }
                match via {
                    CancelVia::Dispute if return_under_way(d.ret) => {
                        return Err("RETURN_IN_PROGRESS");
                    }
                    CancelVia::Return if d.ret.is_none() => return Err("NO_RETURN"),
                    CancelVia::Return if !return_under_way(d.ret) => {
                        return Err("RETURN_ALREADY_RECEIVED");
                    }
                    _ => {}
                }
                m.end(Cancelled);
                if expired {
                    m.settle(0);
                    m.closed = true;
                }
                Ok(m)
            }
            Cmd::Resolve(resolution) => {
                let d = self.dispute.as_ref().ok_or(MOOT)?;
                if !matches!(actor.role, Role::Agent | Role::Seller) {
                    return Err("RESOLVE_NOT_ALLOWED");
                }
                if !sees(actor) {
                    return Err("NOT_FOUND");
                }
                // Every transition's own checks first (README, "Error reasons").
                if ended(d.state) {
                    return Err("DISPUTE_CLOSED");
                }
                let refund = match resolution {
                    Resolution::RefundFull => AMOUNT,
                    Resolution::ReleaseToSeller => 0,
                    Resolution::RefundPartial(money)
                        if money.currency == usd(1).currency
                            && 0 < money.minor
                            && money.minor < AMOUNT =>
                    {
                        money.minor
                    }
                    Resolution::RefundPartial(_) => return Err("INVALID_ARGUMENT"),
                };
                if actor.role == Role::Seller && refund < refund_of(d.ask) {
                    return Err("SELLER_CANNOT_REDUCE_REFUND");
                }
                m.end(Resolved);
                m.settle(refund);
                Ok(m)
            }
            Cmd::Accept => {
                let d = self.workflow(actor, &[Role::Seller], &[AwaitingSeller])?;
                m.grant(d.ask, day);
                Ok(m)
            }
            Cmd::Propose(ask) => {
                let d = self.workflow(actor, &[Role::Seller], &[AwaitingSeller])?;
                if !valid_ask(d.reason, *ask) {
                    return Err("INVALID_ARGUMENT");
                }
                let md = m.dispute.as_mut().unwrap();
                md.state = Negotiating;
                md.proposal = Some(*ask);
                Ok(m)
            }
            Cmd::AcceptProposal => {
                let d = self.workflow(actor, &[Role::Buyer], &[Negotiating])?;
                m.grant(d.proposal.unwrap(), day);
                Ok(m)
            }
            Cmd::Escalate => {
                let states: &[DisputeState] = if actor.role == Role::Seller {
                    &[Negotiating, ReturnInTransit]
                } else {
                    &[
                        Negotiating,
                        AwaitingReplacementShipment,
                        ReplacementInTransit,
                    ]
                };
                self.workflow(actor, &[Role::Buyer, Role::Seller], states)?;
                m.dispute.as_mut().unwrap().state = UnderReview;
                Ok(m)
            }
            Cmd::Ship => {
                self.workflow(actor, &[Role::Buyer], &[AwaitingReturnShipment])?;
                let md = m.dispute.as_mut().unwrap();
                md.state = ReturnInTransit;
                md.ret = Some(ReturnStatus::InTransit);
                md.shipped = Some(day);
                Ok(m)
            }
            Cmd::Confirm => {
                self.workflow(actor, &[Role::Seller], &[ReturnInTransit])?;
                m.dispute.as_mut().unwrap().ret = Some(ReturnStatus::Received);
                m.end(Resolved);
                m.settle(AMOUNT);
                Ok(m)
            }
            Cmd::ShipReplacement => {
                self.workflow(actor, &[Role::Seller], &[AwaitingReplacementShipment])?;
                let md = m.dispute.as_mut().unwrap();
                md.state = ReplacementInTransit;
                md.replacement_shipped = Some(day);
                m.protection = m.protection.max(day + REPLACEMENT_DELIVERY_DAYS);
                Ok(m)
            }
            Cmd::ConfirmReplacement => {
                self.workflow(actor, &[Role::Buyer], &[ReplacementInTransit])?;
                m.end(Resolved);
                m.settle(0);
                Ok(m)
            }
            Cmd::Message => {
                let open = [
                    AwaitingSeller,
                    Negotiating,
                    AwaitingReturnShipment,
                    ReturnInTransit,
                    UnderReview,
                    AwaitingReplacementShipment,
                    ReplacementInTransit,
                ];
                self.workflow(actor, &[Role::Buyer, Role::Seller, Role::Agent], &open)?;
                Ok(m)
            }
            Cmd::Deadline => {
                let d = self.dispute.clone().ok_or(MOOT)?;
                match d.state {
                    AwaitingSeller if day >= d.opened + 5 => m.grant(d.ask, day),
                    Negotiating if day >= d.opened + 15 => {
                        m.dispute.as_mut().unwrap().state = UnderReview
                    }
                    AwaitingReturnShipment if day >= d.agreed.ok_or(MOOT)? + 10 => {
                        m.end(Resolved);
                        m.settle(0);
                    }
                    ReturnInTransit if day >= d.shipped.ok_or(MOOT)? + 15 => {
                        m.dispute.as_mut().unwrap().ret = Some(ReturnStatus::Received);
                        m.end(Resolved);
                        m.settle(AMOUNT);
                    }
                    AwaitingReplacementShipment
                        if day >= d.replacement_agreed.ok_or(MOOT)? + REPLACEMENT_SHIPMENT_DAYS =>
                    {
                        m.end(Resolved);
                        m.settle(AMOUNT);
                    }
                    ReplacementInTransit
                        if day >= d.replacement_shipped.ok_or(MOOT)? + REPLACEMENT_RECEIPT_DAYS =>
                    {
                        m.end(Resolved);
                        m.settle(0);
                    }
                    _ => return Err(MOOT),
                }
                Ok(m)
            }
            Cmd::ProtectionEnd => {
                let active = self.dispute.as_ref().is_some_and(|d| !ended(d.state));
                if active || !expired || self.refund.is_some() {
                    return Err(MOOT);
                }
                m.settle(0);
                Ok(m)
            }
        }
    }
}

/// Whether `actor` may see the order's dispute: the parties their own, staff everything.
fn sees(actor: &Actor) -> bool {
    match actor.role {
        Role::Buyer => actor.id == "b1",
        Role::Seller => actor.id == "s1",
        Role::Agent | Role::Service => true,
    }
}

/// The reason the API would report for a domain refusal, or `MOOT` for nothing to do.
fn reason_of(result: &Result<Option<Step>, DomainError>) -> Option<Refusal> {
    match result {
        Ok(Some(_)) => None,
        Ok(None) => Some(MOOT),
        Err(DomainError::InvalidArgument(_)) => Some("INVALID_ARGUMENT"),
        Err(DomainError::NotFound(_)) => Some("NOT_FOUND"),
        Err(DomainError::PermissionDenied { reason, .. })
        | Err(DomainError::AlreadyExists { reason, .. }) => Some(reason),
        Err(DomainError::FailedPrecondition(precondition)) => Some(precondition.reason()),
    }
}

fn remedy_of(ask: Ask) -> Remedy {
    match ask {
        Ask::Full => Remedy::FullRefund,
        Ask::Partial(r) => Remedy::PartialRefund(usd(r)),
        Ask::Return => Remedy::ReturnAndRefund,
        Ask::Replacement => Remedy::Replacement,
    }
}

/// What a step of the domain produced: the order, the dispute it touched (none for the
/// protection end) and the settlement it made.
#[derive(Debug)]
struct Step {
    order: Order,
    dispute: Option<Dispute>,
    settlement: Option<Settlement>,
}

impl From<Change> for Step {
    fn from(change: Change) -> Self {
        Step {
            order: change.order,
            dispute: Some(change.dispute),
            settlement: change.settlement,
        }
    }
}

/// Runs `cmd` on the domain; `Ok(None)` when it is moot.
fn run(
    order: &Order,
    disputes: &[Dispute],
    cmd: &Cmd,
    actor: &Actor,
    day: i64,
) -> Result<Option<Step>, DomainError> {
    let now = t0() + Duration::days(day);
    let last = disputes.last();
    let active = last.filter(|d| !d.state.is_terminal());
    let on_last = |command| match last {
        Some(d) => {
            decide(order, d, actor, command, &Deadlines::default(), now).map(|c| Some(c.into()))
        }
        None => Ok(None),
    };
    match cmd.clone() {
        Cmd::Open(reason, ask) => {
            let new = NewDispute {
                order_id: id("o1"),
                reason,
                remedy: remedy_of(ask),
                description: String::new(),
                evidence_urls: vec![],
            };
            open(
                order,
                active.is_some(),
                new,
                actor,
                MAX_DISPUTES,
                DisputeId::new(),
                now,
            )
            .map(|c| Some(c.into()))
        }
        Cmd::Cancel(via) => on_last(DisputeCommand::Cancel(via)),
        Cmd::Resolve(resolution) => on_last(DisputeCommand::Resolve {
            resolution,
            note: "ruling".into(),
        }),
        Cmd::Accept => on_last(DisputeCommand::Respond(SellerDecision::Accept)),
        Cmd::Propose(ask) => on_last(DisputeCommand::Respond(SellerDecision::Propose {
            remedy: remedy_of(ask),
            message: "offer".into(),
        })),
        Cmd::AcceptProposal => on_last(DisputeCommand::AcceptProposal),
        Cmd::Escalate => on_last(DisputeCommand::Escalate {
            reason: "disagree".into(),
        }),
        Cmd::Ship => on_last(DisputeCommand::SubmitReturnShipment {
            carrier: "ups".into(),
            tracking_number: "1Z".into(),
        }),
        Cmd::Confirm => on_last(DisputeCommand::ConfirmReturnReceived),
        Cmd::ShipReplacement => on_last(DisputeCommand::SubmitReplacementShipment {
            carrier: "dhl".into(),
            tracking_number: "JD1".into(),
        }),
        Cmd::ConfirmReplacement => on_last(DisputeCommand::ConfirmReplacementReceived),
        Cmd::Message => on_last(DisputeCommand::PostMessage {
            text: "hello".into(),
            evidence_urls: vec![],
        }),
        Cmd::Deadline => match last {
            Some(d) => Ok(apply_deadline(order, d, &Deadlines::default(), now)?.map(Step::from)),
            None => Ok(None),
        },
        Cmd::ProtectionEnd => {
            if active.is_some() {
                return Ok(None);
            }
            Ok(
                release_at_protection_end(order, now).map(|(order, settlement)| Step {
                    order,
                    dispute: None,
                    settlement: Some(settlement),
                }),
            )
        }
    }
}

fn arb_ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        Just(Ask::Full),
        Just(Ask::Return),
        Just(Ask::Replacement),
        (-1i64..1_100).prop_map(Ask::Partial)
    ]
}

fn arb_cmd() -> impl Strategy<Value = Cmd> {
    let reason = prop_oneof![
        Just(Reason::ItemNotReceived),
        Just(Reason::NotAsDescribed),
        Just(Reason::QualityIssue)
    ];
    let resolution = prop_oneof![
        Just(Resolution::RefundFull),
        Just(Resolution::ReleaseToSeller),
        (-1i64..1_100).prop_map(|r| Resolution::RefundPartial(usd(r))),
        Just(Resolution::RefundPartial(Money::new(
            Currency::parse("EUR").unwrap(),
            5
        ))),
    ];
    prop_oneof![
        2 => (reason, arb_ask()).prop_map(|(r, a)| Cmd::Open(r, a)),
        1 => Just(Cmd::Cancel(CancelVia::Dispute)),
        1 => Just(Cmd::Cancel(CancelVia::Return)),
        1 => resolution.prop_map(Cmd::Resolve),
        1 => Just(Cmd::Accept),
        1 => arb_ask().prop_map(Cmd::Propose),
        1 => Just(Cmd::AcceptProposal),
        1 => Just(Cmd::Escalate),
        1 => Just(Cmd::Ship),
        1 => Just(Cmd::Confirm),
        1 => Just(Cmd::ShipReplacement),
        1 => Just(Cmd::ConfirmReplacement),
        1 => Just(Cmd::Message),
        1 => Just(Cmd::Deadline),
        1 => Just(Cmd::ProtectionEnd),
    ]
}

fn arb_actor() -> impl Strategy<Value = Actor> {
    (0..4usize, 0..4u8).prop_map(|(role, who)| {
        let role = Role::ALL[role];
        let own = who != 0; // mostly the parties themselves
        let id = match (role, own) {
            (Role::Buyer, true) => "b1",
            (Role::Seller, true) => "s1",
            (Role::Agent | Role::Service, _) => "staff",
            (_, false) => "stranger",
        };
        Actor::new(role, id)
    })
}

/// The party a command is meant for, so random runs reach deep states often.
fn natural_actor(cmd: &Cmd, coin: bool) -> Actor {
    match cmd {
        Cmd::Accept | Cmd::Propose(_) | Cmd::Confirm | Cmd::ShipReplacement => {
            Actor::new(Role::Seller, "s1")
        }
        Cmd::Message if coin => Actor::new(Role::Seller, "s1"),
        Cmd::Resolve(_) if coin => Actor::new(Role::Seller, "s1"),
        Cmd::Resolve(_) => Actor::new(Role::Agent, "staff"),
        Cmd::Escalate if coin => Actor::new(Role::Seller, "s1"),
        _ => Actor::new(Role::Buyer, "b1"),
    }
}

/// Days between steps: mostly a few, sometimes weeks, so the long deadlines (a
/// replacement's 30 days in transit) are reached with the dispute still open.
fn arb_days() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0i64..4, 1 => 5i64..40]
}

fn is_system(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Deadline | Cmd::ProtectionEnd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_domain_agrees_with_the_reference_model(
        steps in prop::collection::vec((arb_cmd(), prop::option::weighted(0.3, arb_actor()), any::<bool>(), arb_days()), 1..60),
    ) {
        let Ok(Registration::Created(mut order)) = register(None, NewOrder {
            order_id: id("o1"), buyer_id: id("b1"), seller_id: id("s1"), amount: usd(AMOUNT),
            protection_ends_at: t0() + Duration::days(PROTECTION_DAYS),
        }) else { panic!() };
        let mut disputes: Vec<Dispute> = Vec::new();
        let mut model = Model { refund: None, protection: PROTECTION_DAYS, closed: false, count: 0, dispute: None };
        let mut day = 0;
        for (cmd, actor, coin, dt) in steps {
            day += dt;
            let actor = match actor {
                _ if is_system(&cmd) => Actor::system(),
                Some(actor) => actor,
                None => natural_actor(&cmd, coin),
            };
            let expected = model.step(&cmd, &actor, day);
            let got = run(&order, &disputes, &cmd, &actor, day);
            prop_assert_eq!(
                expected.as_ref().err().copied(),
                reason_of(&got),
                "{:?} by {:?} on day {}: model {:?}, domain {:?}", cmd, actor, day, expected, got
            );
            let (Ok(next), Ok(Some(change))) = (expected, got) else { continue };
            // Invariants.
            if let Some(before) = disputes.last().filter(|_| !matches!(cmd, Cmd::Open(..) | Cmd::ProtectionEnd)) {
                prop_assert!(!ended(before.state), "a terminal dispute changed");
            }
            if matches!(cmd, Cmd::Cancel(_)) {
                prop_assert_eq!((actor.role, actor.id.as_str()), (Role::Buyer, "b1"), "only the buyer cancels");
            }
            if order.settlement.is_some() {
                prop_assert_eq!(change.order.settlement, order.settlement, "a settled order changed");
                prop_assert!(change.settlement.is_none(), "settled twice");
            }
            if let Some(s) = change.order.settlement {
                prop_assert!(s.refund_minor() >= 0 && s.release_minor() >= 0);
                prop_assert_eq!(s.refund_minor() + s.release_minor(), AMOUNT, "money conserved");
            }
            // Agreement.
            order = change.order;
            match (cmd, change.dispute) {
                (Cmd::Open(..), Some(dispute)) => disputes.push(dispute),
                (_, Some(dispute)) => *disputes.last_mut().unwrap() = dispute,
                (_, None) => {}
            }
            model = next;
            prop_assert_eq!(order.settlement.map(|s| s.refund_minor()), model.refund);
            prop_assert_eq!(order.disputes_closed, model.closed);
            prop_assert_eq!(order.dispute_count, model.count);
            prop_assert_eq!(order.protection_ends_at, t0() + Duration::days(model.protection));
            if let (Some(d), Some(md)) = (disputes.last(), &model.dispute) {
                prop_assert_eq!(d.state, md.state);
                prop_assert_eq!(d.item_return.as_ref().map(|r| r.status), md.ret);
                prop_assert_eq!(d.proposal.as_ref().map(|p| p.remedy), md.proposal.map(remedy_of));
                prop_assert_eq!(
                    d.replacement.as_ref().map(|r| (r.agreed_at, r.shipped_at)),
                    md.replacement_agreed.map(|a| (
                        t0() + Duration::days(a),
                        md.replacement_shipped.map(|s| t0() + Duration::days(s)),
                    ))
                );
            }
            prop_assert!(disputes.iter().filter(|d| !ended(d.state)).count() <= 1);
        }
    }
}
