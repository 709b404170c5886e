//! The commands that change orders and disputes.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Commands, Error, KeyClaim, Origin, events};
use crate::{
    domain::{
        self, Change, DisputeCommand, DisputeId, DomainError, NewDispute, NewOrder, Order, PartyId,
        Registration, Resource,
    },
    store::{self, StoreError},
};

/// What RegisterOrder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub order: Order,
    pub created: bool,
}

impl Commands {
    pub async fn register_order(
        &self,
        conn: &mut PgConnection,
        new: NewOrder,
        claim: KeyClaim,
    ) -> Result<RegisterOutcome, Error> {
        let existing = store::lock_order(&mut *conn, &new.order_id).await?;
        let now = claim.claim(&mut *conn).await?;
        let order = match domain::register(existing.as_ref(), new.clone())? {
            Registration::Unchanged => existing,
            Registration::Created(order) => {
                if store::insert_order(&mut *conn, &order, now).await? {
                    let event = events::order_registered(&order, claim.origin(), now);
                    store::record_event(conn, event).await?;
                    return Ok(RegisterOutcome {
                        order,
                        created: true,
                    });
                }
                // Registered meanwhile by a concurrent call: compare with what it wrote.
                let registered = store::lock_order(&mut *conn, &new.order_id).await?;
                match domain::register(registered.as_ref(), new)? {
                    Registration::Unchanged => registered,
                    Registration::Created(_) => None,
                }
            }
        };
        let order =
            order.ok_or_else(|| StoreError::Corrupt("a registered order vanished".into()))?;
        Ok(RegisterOutcome {
            order,
            created: false,
        })
    }

    pub async fn open_dispute(
        &self,
        conn: &mut PgConnection,
        new: NewDispute,
        claim: KeyClaim,
    ) -> Result<Change, Error> {
        let order = store::lock_order(&mut *conn, &new.order_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Order))?;
        let now = claim.claim(&mut *conn).await?;
        let active = store::active_dispute_id(&mut *conn, &order.order_id)
            .await?
            .is_some();
        let change = domain::open(
            &order,
            active,
            new,
            &claim.origin().actor,
            self.max_disputes_per_order,
            DisputeId::new(),
            now,
        )?;
        store::insert_dispute(&mut *conn, &change.dispute).await?;
        persist(conn, &change, claim.origin()).await?;
        Ok(change)
    }

    /// Runs `command` on an existing dispute: lock its order, let the domain decide,
    /// write the result.
    pub async fn execute(
        &self,
        conn: &mut PgConnection,
        dispute_id: DisputeId,
        command: DisputeCommand,
        claim: KeyClaim,
    ) -> Result<Change, Error> {
        let (order, dispute) = store::lock_dispute(&mut *conn, dispute_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Dispute))?;
        let now = claim.claim(&mut *conn).await?;
        let change = domain::decide(&order, &dispute, &claim.origin().actor, command, now)?;
        apply(conn, &change, claim.origin()).await?;
        Ok(change)
    }

    /// ExtendProtection: moves the order's protection end later. The active dispute, if
    /// any, records it in its history.
    pub async fn extend_protection(
        &self,
        conn: &mut PgConnection,
        order_id: &PartyId,
        new_end: DateTime<Utc>,
        claim: KeyClaim,
    ) -> Result<Order, Error> {
        let order = store::lock_order(&mut *conn, order_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Order))?;
        let now = claim.claim(&mut *conn).await?;
        let extended = domain::extend_protection(&order, &claim.origin().actor, new_end)?;
        store::update_order(&mut *conn, &extended, now).await?;
        let active = store::active_dispute_id(&mut *conn, order_id).await?;
        let event = events::protection_extended(&order, &extended, active, claim.origin(), now);
        store::record_event(conn, event).await?;
        Ok(extended)
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
