//! The commands that change orders and disputes: each names its target and its decision;
//! [`Commands::run`] does the rest (lock, key, write, commit, report).

use chrono::{DateTime, Utc};

use super::{
    Commands, Done, Error, events,
    idempotency::RequestKey,
    pipeline::{Caller, Decision, Target, dispute_changes, new_order_changes, order_changes},
};
use crate::{
    domain::{
        self, Dispute, DisputeCommand, DisputeId, NewDispute, NewOrder, Order, PartyId, Registered,
        Registration,
    },
    store::StoreError,
};

impl Commands {
    /// RegisterOrder: the order as registered (the same facts again change nothing).
    pub async fn register_order(&self, new: NewOrder, request: RequestKey) -> Result<Order, Error> {
        let target = Target::NewOrder(&new.order_id);
        self.request(target, request, |locked, _, now| {
            let stored = locked
                .order
                .as_ref()
                .zip(locked.registered_protection_ends_at);
            let stored = stored.map(|(order, protection_ends_at)| Registered {
                order,
                protection_ends_at,
            });
            let order_id = new.order_id.clone();
            Ok(match domain::register(stored, new.clone())? {
                Registration::Created(order) => {
                    let event = events::order_registered(&order, now);
                    let done = Done::OrderRegistered {
                        order_id,
                        created: true,
                    };
                    Decision::Write(
                        Box::new(new_order_changes(order.clone(), event)),
                        order,
                        done,
                    )
                }
                Registration::Unchanged => {
                    let order = locked.order.clone().ok_or_else(vanished)?;
                    let done = Done::OrderRegistered {
                        order_id,
                        created: false,
                    };
                    Decision::Unchanged(order, done)
                }
            })
        })
        .await
    }

    /// OpenDispute: the new dispute.
    pub async fn open_dispute(
        &self,
        new: NewDispute,
        request: RequestKey,
    ) -> Result<Dispute, Error> {
        let target = Target::Order(&new.order_id);
        self.request(target, request, |locked, origin, now| {
            let order = locked.order.as_ref().ok_or_else(vanished)?;
            let change = domain::open(
                order,
                locked.active_dispute.is_some(),
                new.clone(),
                &origin.actor,
                self.max_disputes_per_order,
                DisputeId::new(),
                now,
            )?;
            let changes = Box::new(dispute_changes(&change, None));
            let dispute = change.dispute.clone();
            Ok(Decision::Write(
                changes,
                dispute,
                Done::DisputeChanged(Box::new(change)),
            ))
        })
        .await
    }

    /// Every command on an existing dispute: the domain decides on the dispute and its
    /// order. The dispute and its order afterwards.
    pub async fn execute(
        &self,
        dispute_id: DisputeId,
        command: DisputeCommand,
        request: RequestKey,
    ) -> Result<(Dispute, Order), Error> {
        let target = Target::Dispute(dispute_id);
        self.request(target, request, |locked, origin, now| {
            let (order, dispute) = (locked.order.as_ref())
                .zip(locked.dispute.as_ref())
                .ok_or_else(vanished)?;
            let change = domain::decide(
                order,
                dispute,
                &origin.actor,
                command.clone(),
                &self.deadlines,
                now,
            )?;
            let changes = Box::new(dispute_changes(&change, Some((order, dispute))));
            let reply = (change.dispute.clone(), change.order.clone());
            Ok(Decision::Write(
                changes,
                reply,
                Done::DisputeChanged(Box::new(change)),
            ))
        })
        .await
    }

    /// ExtendProtection: moves the order's protection end later. The active dispute, if
    /// any, records it in its history. The order afterwards.
    pub async fn extend_protection(
        &self,
        order_id: &PartyId,
        new_end: DateTime<Utc>,
        request: RequestKey,
    ) -> Result<Order, Error> {
        self.request(Target::Order(order_id), request, |locked, origin, now| {
            let order = locked.order.as_ref().ok_or_else(vanished)?;
            let extended = domain::extend_protection(order, &origin.actor, new_end)?;
            let event = events::protection_extended(order, &extended, now);
            let changes = Box::new(order_changes(
                extended.clone(),
                false,
                locked.active_dispute,
                event,
            ));
            let done = Done::ProtectionExtended(extended.clone());
            Ok(Decision::Write(changes, extended, done))
        })
        .await
    }

    /// Runs an RPC's command: it always answers (or fails).
    async fn request<T>(
        &self,
        target: Target<'_>,
        request: RequestKey,
        decide: impl Fn(
            &super::pipeline::Locked,
            &super::Origin,
            DateTime<Utc>,
        ) -> Result<Decision<T>, Error>,
    ) -> Result<T, Error>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.run(target, Caller::Request(request), decide)
            .await?
            .ok_or_else(|| vanished().into())
    }
}

/// What the lock statement found is not what its target promised: a bug.
fn vanished() -> StoreError {
    StoreError::Corrupt("a locked row is missing".into())
}
