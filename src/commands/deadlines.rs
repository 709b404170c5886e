//! Deadlines, applied one per transaction as the `system` service actor through the
//! same pipeline as the RPCs ([`Commands::run`], no key; a row another replica holds is
//! skipped). Each attempt is a span of its own (a child of the worker's pass); its trace
//! id is the one written to the history.

use tracing::{Instrument, field::Empty};

use super::{
    Commands, Done, Error, events,
    pipeline::{Caller, Decision, Target, dispute_changes, order_changes},
};
use crate::domain::{self, DisputeId, PartyId};

impl Commands {
    /// Applies the dispute's deadline if it is (still) due. `false` when another replica
    /// holds the order or the deadline became moot.
    pub async fn apply_deadline(&self, dispute_id: DisputeId) -> Result<bool, Error> {
        let span = tracing::info_span!(
            "deadline",
            otel.name = "apply deadline",
            dispute.id = %dispute_id,
            order.id = Empty,
            deadline.kind = Empty,
        );
        let target = Target::Dispute(dispute_id);
        let applied = self.run(target, Caller::System, |locked, _, now| {
            let (Some(order), Some(dispute)) = (&locked.order, &locked.dispute) else {
                return Ok(Decision::Skip);
            };
            Ok(
                match domain::apply_deadline(order, dispute, &self.deadlines, now)? {
                    Some(change) => Decision::Write(
                        Box::new(dispute_changes(&change, Some((order, dispute)))),
                        (),
                        Done::DeadlineApplied(Box::new(change)),
                    ),
                    None => Decision::Skip,
                },
            )
        });
        Ok(applied.instrument(span).await?.is_some())
    }

    /// Releases the order's funds to the seller if its protection has ended with the funds
    /// held and no dispute active.
    pub async fn release_if_protection_ended(&self, order_id: &PartyId) -> Result<bool, Error> {
        let span = tracing::info_span!(
            "deadline",
            otel.name = "release at protection end",
            order.id = %order_id,
            deadline.kind = "PROTECTION_END",
        );
        let target = Target::Order(order_id);
        let released = self.run(target, Caller::System, |locked, _, now| {
            let Some(order) = &locked.order else {
                return Ok(Decision::Skip);
            };
            if locked.active_dispute.is_some() {
                return Ok(Decision::Skip);
            }
            let Some((order, settlement)) = domain::release_at_protection_end(order, now) else {
                return Ok(Decision::Skip);
            };
            let event = events::funds_settled(&order, &settlement, None, "PROTECTION_ENDED");
            let changes = Box::new(order_changes(order.clone(), true, None, event));
            Ok(Decision::Write(
                changes,
                (),
                Done::ProtectionEnded(order, settlement),
            ))
        });
        Ok(released.instrument(span).await?.is_some())
    }
}
