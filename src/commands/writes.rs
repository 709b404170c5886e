//! The commands that change orders and disputes. Each is one transaction, top to bottom:
//! lock the order, claim the key (or return the saved reply), let the domain decide,
//! write, finish (save the reply, commit, report).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tracing::Instrument;

use super::{
    Commands, Done, Error, Origin, events,
    idempotency::{NextAction, RequestKey, saved_reply},
};
use crate::{
    domain::{
        self, Change, Dispute, DisputeCommand, DisputeId, DomainError, NewDispute, NewOrder, Order,
        PartyId, Registered, Registration, Resource,
    },
    store::{self, IdempotencyKey, StoreError},
};

impl Commands {
    /// RegisterOrder: the order as registered (the same facts again change nothing).
    pub async fn register_order(&self, new: NewOrder, request: RequestKey) -> Result<Order, Error> {
        async {
            let mut tx = self.store.begin().await?;
            let locked =
                store::lock_order(&mut tx, &new.order_id, request.key(), self.now()).await?;
            let (now, claimed) = match self.claim(&mut tx, request, locked.claimed).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let existing = locked.order;
            let stored = existing.as_ref().zip(locked.registered_protection_ends_at);
            let stored = stored.map(|(order, protection_ends_at)| Registered {
                order,
                protection_ends_at,
            });
            let order = match domain::register(stored, new.clone())? {
                Registration::Unchanged => existing,
                Registration::Created(order) => {
                    let saved = saved_reply(&order)?;
                    let event = events::order_registered(&order, claimed.origin(), now);
                    if store::insert_order(&mut tx, &order, event, claimed.key(), &saved).await? {
                        let done = Done::OrderRegistered {
                            order_id: order.order_id.clone(),
                            created: true,
                        };
                        return self.commit(tx, claimed.completed(), order, done).await;
                    }
                    // Registered meanwhile by a concurrent call: compare with what it wrote.
                    let registered = store::relock_order(&mut tx, &new.order_id).await?;
                    let stored = registered.as_ref().map(|(order, end)| Registered {
                        order,
                        protection_ends_at: *end,
                    });
                    return match domain::register(stored, new)? {
                        Registration::Unchanged => {
                            let (order, _) = registered.ok_or_else(vanished)?;
                            let done = Done::OrderRegistered {
                                order_id: order.order_id.clone(),
                                created: false,
                            };
                            self.finish(tx, claimed, order, done).await
                        }
                        Registration::Created(_) => Err(vanished().into()),
                    };
                }
            };
            let order = order.ok_or_else(vanished)?;
            let done = Done::OrderRegistered {
                order_id: order.order_id.clone(),
                created: false,
            };
            self.finish(tx, claimed, order, done).await
        }
        .instrument(store::transaction_span())
        .await
    }

    /// OpenDispute: the new dispute.
    pub async fn open_dispute(
        &self,
        new: NewDispute,
        request: RequestKey,
    ) -> Result<Dispute, Error> {
        async {
            let mut tx = self.store.begin().await?;
            let locked =
                store::lock_order(&mut tx, &new.order_id, request.key(), self.now()).await?;
            let order = locked.order.ok_or(DomainError::NotFound(Resource::Order))?;
            // Someone else's order is a missing one, whatever the key says.
            order.ensure_visible_to(&request.key().actor)?;
            let (now, claimed) = match self.claim(&mut tx, request, locked.claimed).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let change = domain::open(
                &order,
                locked.active_dispute.is_some(),
                new,
                &claimed.origin().actor,
                self.max_disputes_per_order,
                DisputeId::new(),
                now,
            )?;
            // One statement writes it all and saves the reply with the key.
            let dispute = change.dispute.clone();
            let saved = saved_reply(&dispute)?;
            let event = events::dispute_changed(&change, claimed.origin());
            store::insert_opened(&mut tx, &change, event, claimed.key(), &saved).await?;
            self.commit(
                tx,
                claimed.completed(),
                dispute,
                Done::DisputeChanged(Box::new(change)),
            )
            .await
        }
        .instrument(store::transaction_span())
        .await
    }

    /// Every command on an existing dispute: lock it and its order, let the domain decide,
    /// write the result. The dispute and its order afterwards.
    pub async fn execute(
        &self,
        dispute_id: DisputeId,
        command: DisputeCommand,
        request: RequestKey,
    ) -> Result<(Dispute, Order), Error> {
        async {
            let mut tx = self.store.begin().await?;
            let store::LockedDispute {
                order,
                dispute,
                claimed,
            } = store::lock_dispute(&mut tx, dispute_id, request.key(), self.now())
                .await?
                .ok_or(DomainError::NotFound(Resource::Dispute))?;
            // Someone else's dispute is a missing one, whatever the key says.
            dispute.ensure_visible_to(&request.key().actor)?;
            let (now, claimed) = match self.claim(&mut tx, request, claimed).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let change = domain::decide(
                &order,
                &dispute,
                &claimed.origin().actor,
                command,
                &self.deadlines,
                now,
            )?;
            let reply = (change.dispute.clone(), change.order.clone());
            let saved = saved_reply(&reply)?;
            apply(
                &mut tx,
                &change,
                claimed.origin(),
                Some((claimed.key(), &saved)),
            )
            .await?;
            let done = Done::DisputeChanged(Box::new(change));
            self.commit(tx, claimed.completed(), reply, done).await
        }
        .instrument(store::transaction_span())
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
        async {
            let mut tx = self.store.begin().await?;
            let locked = store::lock_order(&mut tx, order_id, request.key(), self.now()).await?;
            let order = locked.order.ok_or(DomainError::NotFound(Resource::Order))?;
            order.ensure_visible_to(&request.key().actor)?;
            let (now, claimed) = match self.claim(&mut tx, request, locked.claimed).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let extended = domain::extend_protection(&order, &claimed.origin().actor, new_end)?;
            let saved = saved_reply(&extended)?;
            let event = events::protection_extended(
                &order,
                &extended,
                locked.active_dispute,
                claimed.origin(),
                now,
            );
            store::update_protection(&mut tx, &extended, event, claimed.key(), &saved).await?;
            let done = Done::ProtectionExtended(extended.clone());
            self.commit(tx, claimed.completed(), extended, done).await
        }
        .instrument(store::transaction_span())
        .await
    }
}

fn vanished() -> StoreError {
    StoreError::Corrupt("a registered order vanished".into())
}

/// Writes a change to an existing dispute, with its events (the dispute's, and the
/// settlement's when it settled the funds) and, for an RPC, the reply saved with its key:
/// one statement.
pub(super) async fn apply(
    conn: &mut PgConnection,
    change: &Change,
    origin: &Origin,
    key: Option<(&IdempotencyKey, &serde_json::Value)>,
) -> Result<(), Error> {
    let mut events = vec![events::dispute_changed(change, origin)];
    if let Some(settlement) = &change.settlement {
        let dispute_id = Some(change.dispute.dispute_id);
        events.push(events::funds_settled(
            &change.order,
            settlement,
            dispute_id,
            change.event.as_str(),
            origin,
        ));
    }
    store::write_change(conn, change, &origin.actor, &events, key).await?;
    Ok(())
}
