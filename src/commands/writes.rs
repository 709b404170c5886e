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
        PartyId, Registration, Resource,
    },
    store::{self, StoreError},
};

impl Commands {
    /// RegisterOrder: the order as registered (the same facts again change nothing).
    pub async fn register_order(&self, new: NewOrder, request: RequestKey) -> Result<Order, Error> {
        async {
            let mut tx = self.store.begin().await?;
            let existing = store::lock_order(&mut tx, &new.order_id).await?;
            let (now, claimed) = match self.claim(&mut tx, request).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let (order, created) = match domain::register(existing.as_ref(), new.clone())? {
                Registration::Unchanged => (existing, false),
                Registration::Created(order) => {
                    if store::insert_order(&mut tx, &order, now).await? {
                        let event = events::order_registered(&order, claimed.origin(), now);
                        store::record_event(&mut tx, event).await?;
                        (Some(order), true)
                    } else {
                        // Registered meanwhile by a concurrent call: compare with what it wrote.
                        let registered = store::lock_order(&mut tx, &new.order_id).await?;
                        match domain::register(registered.as_ref(), new)? {
                            Registration::Unchanged => (registered, false),
                            Registration::Created(_) => (None, false),
                        }
                    }
                }
            };
            let order =
                order.ok_or_else(|| StoreError::Corrupt("a registered order vanished".into()))?;
            let done = Done::OrderRegistered {
                order_id: order.order_id.clone(),
                created,
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
            let order = store::lock_order(&mut tx, &new.order_id)
                .await?
                .ok_or(DomainError::NotFound(Resource::Order))?;
            let (now, claimed) = match self.claim(&mut tx, request).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let active = store::active_dispute_id(&mut tx, &order.order_id)
                .await?
                .is_some();
            let change = domain::open(
                &order,
                active,
                new,
                &claimed.origin().actor,
                self.max_disputes_per_order,
                DisputeId::new(),
                now,
            )?;
            // One statement writes it all and saves the reply with the key.
            let dispute = change.dispute.clone();
            let saved = saved_reply(&dispute)?;
            let origin = claimed.origin().clone();
            let (key, completed) = claimed.completing();
            let event = events::dispute_changed(&change, &origin);
            store::insert_opened(&mut tx, &change, event, &key, &saved).await?;
            self.commit(
                tx,
                completed,
                dispute,
                Done::DisputeChanged(Box::new(change)),
            )
            .await
        }
        .instrument(store::transaction_span())
        .await
    }

    /// Every command on an existing dispute: lock its order, let the domain decide, write
    /// the result. The dispute and its order afterwards.
    pub async fn execute(
        &self,
        dispute_id: DisputeId,
        command: DisputeCommand,
        request: RequestKey,
    ) -> Result<(Dispute, Order), Error> {
        async {
            let mut tx = self.store.begin().await?;
            let (order, dispute) = store::lock_dispute(&mut tx, dispute_id)
                .await?
                .ok_or(DomainError::NotFound(Resource::Dispute))?;
            let (now, claimed) = match self.claim(&mut tx, request).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let change = domain::decide(&order, &dispute, &claimed.origin().actor, command, now)?;
            apply(&mut tx, &change, claimed.origin()).await?;
            let reply = (change.dispute.clone(), change.order.clone());
            self.finish(tx, claimed, reply, Done::DisputeChanged(Box::new(change)))
                .await
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
            let order = store::lock_order(&mut tx, order_id)
                .await?
                .ok_or(DomainError::NotFound(Resource::Order))?;
            let (now, claimed) = match self.claim(&mut tx, request).await? {
                NextAction::Start { now, claimed } => (now, claimed),
                NextAction::Return(saved) => return Ok(saved),
            };
            let extended = domain::extend_protection(&order, &claimed.origin().actor, new_end)?;
            store::update_order(&mut tx, &extended, now).await?;
            let active = store::active_dispute_id(&mut tx, order_id).await?;
            let event =
                events::protection_extended(&order, &extended, active, claimed.origin(), now);
            store::record_event(&mut tx, event).await?;
            let done = Done::ProtectionExtended(extended.clone());
            self.finish(tx, claimed, extended, done).await
        }
        .instrument(store::transaction_span())
        .await
    }
}

/// Writes a change to an existing dispute.
pub(super) async fn apply(
    conn: &mut PgConnection,
    change: &Change,
    origin: &Origin,
) -> Result<(), Error> {
    store::update_dispute(&mut *conn, &change.dispute).await?;
    persist(conn, change, origin).await
}

/// Writes what every change shares: the order, the ledger entry and its event if it
/// settled, and the dispute's event. The dispute row itself is inserted or updated by the
/// caller.
async fn persist(conn: &mut PgConnection, change: &Change, origin: &Origin) -> Result<(), Error> {
    let Change {
        order,
        dispute,
        settlement,
        ..
    } = change;
    store::update_order(&mut *conn, order, dispute.updated_at).await?;
    store::record_event(&mut *conn, events::dispute_changed(change, origin)).await?;
    if let Some(settlement) = settlement {
        let dispute_id = Some(dispute.dispute_id);
        store::insert_settlement(&mut *conn, order, settlement, dispute_id, &origin.actor).await?;
        let event =
            events::funds_settled(order, settlement, dispute_id, change.event.as_str(), origin);
        store::record_event(conn, event).await?;
    }
    Ok(())
}
