//! The state machine against a reference model: random sequences of every command, by
//! every role (own and someone else's), at moving times, including deadlines and the
//! protection end. After each step the model and the domain must agree on whether the
//! command was allowed and on every state, and the invariants must hold.

use chrono::Duration;
use proptest::prelude::*;

use super::{id, t0, usd};
use crate::domain::*;

const AMOUNT: i64 = 1_000;
const PROTECTION_DAYS: i64 = 30;
const MAX_DISPUTES: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ask {
    Full,
    Partial(i64),
    Return,
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
    Deadline,
    ProtectionEnd,
}

/// The reference model: the spec's tables, written as plainly as possible.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    refund: Option<i64>,
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
}

fn refund_of(ask: Ask) -> i64 {
    match ask {
        Ask::Full | Ask::Return => AMOUNT,
        Ask::Partial(r) => r,
    }
}

fn valid_ask(reason: Reason, ask: Ask) -> bool {
    match ask {
        Ask::Partial(r) => 0 < r && r < AMOUNT,
        Ask::Return => reason != Reason::ItemNotReceived,
        Ask::Full => true,
    }
}

impl Model {
    fn settle(&mut self, refund: i64) {
        self.refund = Some(refund);
    }

    /// Gives the buyer `ask`: a refund resolves now, a return is awaited.
    fn grant(&mut self, ask: Ask, day: i64) {
        let d = self.dispute.as_mut().unwrap();
        if ask == Ask::Return {
            d.state = DisputeState::AwaitingReturnShipment;
            d.ret = Some(ReturnStatus::AwaitingShipment);
            d.agreed = Some(day);
        } else {
            self.end(DisputeState::Resolved);
            self.settle(refund_of(ask));
        }
    }

    fn end(&mut self, state: DisputeState) {
        let d = self.dispute.as_mut().unwrap();
        d.state = state;
        if d.ret.is_some_and(|r| r.is_active()) {
            d.ret = Some(ReturnStatus::Cancelled);
        }
    }

    /// The next model, or `None` if the command must be refused.
    fn step(&self, cmd: &Cmd, actor: &Actor, day: i64) -> Option<Model> {
        use DisputeState::*;
        let mut m = self.clone();
        let own = |role| actor.role == role && (actor.id == "b1" || actor.id == "s1");
        let buyer = own(Role::Buyer);
        let seller = own(Role::Seller);
        let active = self.dispute.as_ref().filter(|d| !d.state.is_terminal());
        let expired = day >= PROTECTION_DAYS;
        match cmd {
            Cmd::Open(reason, ask) => {
                let ok = buyer
                    && valid_ask(*reason, *ask)
                    && !self.closed
                    && self.refund.is_none()
                    && !expired
                    && active.is_none()
                    && self.count < MAX_DISPUTES;
                ok.then(|| {
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
                    });
                    m
                })
            }
            Cmd::Cancel(via) => {
                let d = active?;
                let return_active = d.ret.is_some_and(|r| r.is_active());
                let via_ok = match via {
                    CancelVia::Dispute => !return_active,
                    CancelVia::Return => return_active,
                };
                (buyer && via_ok).then(|| {
                    m.end(Cancelled);
                    if expired {
                        m.settle(0);
                        m.closed = true;
                    }
                    m
                })
            }
            Cmd::Resolve(resolution) => {
                let d = active?;
                let refund = match resolution {
                    Resolution::RefundFull => AMOUNT,
                    Resolution::ReleaseToSeller => 0,
                    Resolution::RefundPartial(money) if money.currency == usd(1).currency => {
                        money.minor
                    }
                    Resolution::RefundPartial(_) => return None,
                };
                let partial_ok = !matches!(resolution, Resolution::RefundPartial(_))
                    || (0 < refund && refund < AMOUNT);
                let who_ok = actor.role == Role::Agent || (seller && refund >= refund_of(d.ask));
                (partial_ok && who_ok).then(|| {
                    m.end(Resolved);
                    m.settle(refund);
                    m
                })
            }
            Cmd::Accept => {
                let d = active.filter(|d| d.state == AwaitingSeller)?;
                seller.then(|| {
                    m.grant(d.ask, day);
                    m
                })
            }
            Cmd::Propose(ask) => {
                let d = active.filter(|d| d.state == AwaitingSeller)?;
                (seller && valid_ask(d.reason, *ask)).then(|| {
                    let md = m.dispute.as_mut().unwrap();
                    md.state = Negotiating;
                    md.proposal = Some(*ask);
                    m
                })
            }
            Cmd::AcceptProposal => {
                let d = active.filter(|d| d.state == Negotiating)?;
                buyer.then(|| {
                    m.grant(d.proposal.unwrap(), day);
                    m
                })
            }
            Cmd::Escalate => {
                let d = active?;
                let ok = (buyer && d.state == Negotiating)
                    || (seller && matches!(d.state, Negotiating | ReturnInTransit));
                ok.then(|| {
                    m.dispute.as_mut().unwrap().state = UnderReview;
                    m
                })
            }
            Cmd::Ship => {
                let d = active.filter(|d| d.state == AwaitingReturnShipment)?;
                let _ = d;
                buyer.then(|| {
                    let md = m.dispute.as_mut().unwrap();
                    md.state = ReturnInTransit;
                    md.ret = Some(ReturnStatus::InTransit);
                    md.shipped = Some(day);
                    m
                })
            }
            Cmd::Confirm => {
                active.filter(|d| d.state == ReturnInTransit)?;
                seller.then(|| {
                    m.dispute.as_mut().unwrap().ret = Some(ReturnStatus::Received);
                    m.end(Resolved);
                    m.settle(AMOUNT);
                    m
                })
            }
            Cmd::Deadline => {
                let d = active?.clone();
                match d.state {
                    AwaitingSeller if day >= d.opened + 5 => m.grant(d.ask, day),
                    Negotiating if day >= d.opened + 15 => {
                        m.dispute.as_mut().unwrap().state = UnderReview
                    }
                    AwaitingReturnShipment if day >= d.agreed? + 10 => {
                        m.end(Resolved);
                        m.settle(0);
                    }
                    ReturnInTransit if day >= d.shipped? + 15 => {
                        m.dispute.as_mut().unwrap().ret = Some(ReturnStatus::Received);
                        m.end(Resolved);
                        m.settle(AMOUNT);
                    }
                    _ => return None,
                }
                Some(m)
            }
            Cmd::ProtectionEnd => {
                (active.is_none() && expired && self.refund.is_none()).then(|| {
                    m.settle(0);
                    m
                })
            }
        }
    }
}

fn remedy_of(ask: Ask) -> Remedy {
    match ask {
        Ask::Full => Remedy::FullRefund,
        Ask::Partial(r) => Remedy::PartialRefund(usd(r)),
        Ask::Return => Remedy::ReturnAndRefund,
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
        Some(d) => decide(order, d, actor, command, now).map(|c| Some(c.into())),
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
        Cmd::Accept | Cmd::Propose(_) | Cmd::Confirm => Actor::new(Role::Seller, "s1"),
        Cmd::Resolve(_) if coin => Actor::new(Role::Seller, "s1"),
        Cmd::Resolve(_) => Actor::new(Role::Agent, "staff"),
        Cmd::Escalate if coin => Actor::new(Role::Seller, "s1"),
        _ => Actor::new(Role::Buyer, "b1"),
    }
}

fn is_system(cmd: &Cmd) -> bool {
    matches!(cmd, Cmd::Deadline | Cmd::ProtectionEnd)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_domain_agrees_with_the_reference_model(
        steps in prop::collection::vec((arb_cmd(), prop::option::weighted(0.3, arb_actor()), any::<bool>(), 0i64..4), 1..60),
    ) {
        let Ok(Registration::Created(mut order)) = register(None, NewOrder {
            order_id: id("o1"), buyer_id: id("b1"), seller_id: id("s1"), amount: usd(AMOUNT),
            protection_ends_at: t0() + Duration::days(PROTECTION_DAYS),
        }) else { panic!() };
        let mut disputes: Vec<Dispute> = Vec::new();
        let mut model = Model { refund: None, closed: false, count: 0, dispute: None };
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
            let change = match (&expected, got) {
                (Some(_), Ok(Some(change))) => change,
                (None, Err(_) | Ok(None)) => continue,
                (expected, got) => {
                    prop_assert!(false, "{cmd:?} by {actor:?} on day {day}: model {expected:?}, domain {got:?}");
                    unreachable!()
                }
            };
            let next = expected.unwrap();
            // Invariants.
            if let Some(before) = disputes.last().filter(|_| !matches!(cmd, Cmd::Open(..) | Cmd::ProtectionEnd)) {
                prop_assert!(!before.state.is_terminal(), "a terminal dispute changed");
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
            if let (Some(d), Some(md)) = (disputes.last(), &model.dispute) {
                prop_assert_eq!(d.state, md.state);
                prop_assert_eq!(d.item_return.as_ref().map(|r| r.status), md.ret);
                prop_assert_eq!(d.proposal.as_ref().map(|p| p.remedy), md.proposal.map(remedy_of));
            }
            prop_assert!(disputes.iter().filter(|d| !d.state.is_terminal()).count() <= 1);
        }
    }
}
