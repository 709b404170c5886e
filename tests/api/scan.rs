//! The worker's SQL scan and the domain's `Deadlines::due` name the same disputes: on
//! generated disputes in every state, whose deadlines fall on both sides of "now" (and
//! exactly on it), the scan finds every dispute the domain says is due and no other.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use dispute_service::{
    commands::CANDIDATE_PARTITIONS,
    domain::Deadlines,
    grpc::pb::{self, Remedy},
    store::Store,
};
use sqlx::PgPool;

use crate::helpers::*;

/// Where a generated dispute ends up, and the time its clock (opening, agreement or
/// shipment) reads.
#[derive(Debug, Clone, Copy)]
enum Target {
    AwaitingSeller,
    Negotiating,
    ReturnAgreed,
    ReturnShipped,
    ReplacementAgreed,
    ReplacementShipped,
    /// Escalated: no deadline at all.
    UnderReview,
    /// Cancelled: never due again.
    Cancelled,
}

const TARGETS: [Target; 8] = [
    Target::AwaitingSeller,
    Target::Negotiating,
    Target::ReturnAgreed,
    Target::ReturnShipped,
    Target::ReplacementAgreed,
    Target::ReplacementShipped,
    Target::UnderReview,
    Target::Cancelled,
];

/// The rule's days for the deadline a target waits on (README, "Deadlines").
fn rule(target: Target) -> Duration {
    match target {
        Target::AwaitingSeller => Duration::days(5),
        Target::Negotiating | Target::UnderReview | Target::Cancelled => Duration::days(15),
        Target::ReturnAgreed | Target::ReplacementAgreed => Duration::days(10),
        Target::ReturnShipped => Duration::days(15),
        Target::ReplacementShipped => Duration::days(30),
    }
}

/// One step of the script: at `at`, do `step` to dispute `index`.
#[derive(Debug, Clone, Copy)]
struct Step {
    at: DateTime<Utc>,
    index: usize,
    step: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Open,
    Agree,
    Propose,
    Ship,
    Escalate,
    Cancel,
}

#[sqlx::test]
async fn the_scan_finds_exactly_the_disputes_the_domain_says_are_due(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let now = app.now() + Duration::days(40);
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    // Each target with a due time on each side of now, exactly now and a microsecond
    // after, plus random ones within three days of it.
    let mut disputes = Vec::new();
    for target in TARGETS {
        for offset in [
            Duration::zero(),
            Duration::microseconds(1),
            -Duration::microseconds(1),
        ] {
            disputes.push((target, offset));
        }
        for _ in 0..6 {
            let micros = dice.roll(6 * 86_400_000_000) as i64 - 3 * 86_400_000_000;
            disputes.push((target, Duration::microseconds(micros)));
        }
    }
    let mut steps = Vec::new();
    for (index, &(target, offset)) in disputes.iter().enumerate() {
        // The clock the deadline counts from reads `clock`.
        let clock = now + offset - rule(target);
        let hour = Duration::hours(1);
        let mut at = |step, at| steps.push(Step { at, index, step });
        match target {
            Target::AwaitingSeller => at(Action::Open, clock),
            Target::Negotiating => {
                at(Action::Open, clock);
                at(Action::Propose, clock + hour);
            }
            Target::UnderReview => {
                at(Action::Open, clock);
                at(Action::Propose, clock + hour);
                at(Action::Escalate, clock + hour * 2);
            }
            Target::Cancelled => {
                at(Action::Open, clock);
                at(Action::Cancel, clock + hour);
            }
            Target::ReturnAgreed | Target::ReplacementAgreed => {
                at(Action::Open, clock - hour);
                at(Action::Agree, clock);
            }
            Target::ReturnShipped | Target::ReplacementShipped => {
                at(Action::Open, clock - hour * 2);
                at(Action::Agree, clock - hour);
                at(Action::Ship, clock);
            }
        }
    }
    steps.sort_by_key(|s| (s.at, s.index, s.step));
    assert!(
        steps[0].at >= app.now(),
        "the script starts after the clock"
    );

    let (mut service, mut buyer, mut seller) =
        (app.service().await, app.buyer().await, app.seller().await);
    let mut ids = vec![String::new(); disputes.len()];
    for Step { at, index, step } in steps {
        app.clock.advance(at - app.now());
        let target = disputes[index].0;
        let order_id = format!("order-{index}");
        let id = ids[index].clone();
        match step {
            Action::Open => {
                service
                    .register_order(register_request(&order_id, now + Duration::days(60)))
                    .await
                    .unwrap();
                let remedy = match target {
                    Target::ReturnAgreed | Target::ReturnShipped => Remedy::ReturnAndRefund,
                    Target::ReplacementAgreed | Target::ReplacementShipped => Remedy::Replacement,
                    _ => Remedy::FullRefund,
                };
                let opened = buyer
                    .open_dispute(open_request(&order_id, remedy))
                    .await
                    .unwrap();
                ids[index] = opened.into_inner().dispute.unwrap().dispute_id;
            }
            Action::Agree => drop(seller.respond_to_dispute(accept(&id)).await.unwrap()),
            Action::Propose => drop(
                seller
                    .respond_to_dispute(propose(&id, Remedy::PartialRefund, Some(5_000)))
                    .await
                    .unwrap(),
            ),
            Action::Escalate => drop(buyer.escalate_dispute(escalate(&id)).await.unwrap()),
            Action::Cancel => drop(buyer.cancel_dispute(cancel_request(&id)).await.unwrap()),
            Action::Ship => match target {
                Target::ReturnShipped => {
                    drop(buyer.submit_return_shipment(ship(&id)).await.unwrap())
                }
                _ => drop(
                    seller
                        .submit_replacement_shipment(ship_replacement(&id))
                        .await
                        .unwrap(),
                ),
            },
        }
    }
    app.clock.advance(now - app.now());

    // What the domain says: the countdown every GetDispute shows comes from `Deadlines::due`.
    let mut agent = app.agent().await;
    let mut due = BTreeSet::new();
    for (index, id) in ids.iter().enumerate() {
        let dispute = agent
            .get_dispute(pb::GetDisputeRequest {
                dispute_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .dispute
            .unwrap();
        let (target, offset) = disputes[index];
        match (target, dispute.next_deadline) {
            (Target::UnderReview | Target::Cancelled, deadline) => {
                assert_eq!(deadline, None, "{target:?}")
            }
            (_, Some(deadline)) => {
                // The generator's own arithmetic agrees with the domain's.
                assert_eq!(
                    from_timestamp(&deadline.due_at.unwrap()),
                    now + offset,
                    "{target:?}"
                );
                if offset <= Duration::zero() {
                    due.insert(id.clone());
                }
            }
            (_, None) => panic!("{target:?} has no deadline"),
        }
    }
    // What the scan finds, partition by partition: each due dispute in exactly one.
    let store = Store::new(pool);
    let mut found = BTreeSet::new();
    let mut scanned = 0;
    for partition in 0..CANDIDATE_PARTITIONS {
        let due = store
            .due_disputes(&Deadlines::default().cutoffs(now), now, partition, 100_000)
            .await
            .unwrap();
        scanned += due.len();
        found.extend(due.into_iter().map(|due| due.id.0.to_string()));
    }
    assert_eq!(scanned, found.len(), "a dispute found in two partitions");
    assert!(
        due.len() > 20 && due.len() < ids.len() - 20,
        "{} due",
        due.len()
    );
    assert_eq!(found, due, "the scan and the domain disagree");
}
