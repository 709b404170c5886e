//! The commands that change orders and disputes.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::{Commands, Error};
use crate::{
    domain::{
        self, Actor, Change, DisputeCommand, DisputeId, DomainError, NewDispute, NewOrder, Order,
        PartyId, Registration, Resource, Settlement,
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
        now: DateTime<Utc>,
    ) -> Result<RegisterOutcome, Error> {
        let existing = store::lock_order(&mut *conn, &new.order_id).await?;
        match domain::register(existing.as_ref(), new)? {
            Registration::Unchanged => Ok(RegisterOutcome {
                order: existing.expect("unchanged means it exists"),
                created: false,
            }),
            Registration::Created(order) => {
                match store::insert_order(conn, &order, now).await {
                    // Registered concurrently by another call: that call decides.
                    Err(StoreError::Constraint { constraint, .. })
                        if constraint == "orders_pkey" =>
                    {
                        Err(DomainError::AlreadyExists {
                            reason: "ORDER_ALREADY_EXISTS",
                            message: "an order with this id was registered concurrently; retry to compare its facts",
                        })?
                    }
                    other => other?,
                }
                Ok(RegisterOutcome {
                    order,
                    created: true,
                })
            }
        }
    }

    pub async fn open_dispute(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        new: NewDispute,
        now: DateTime<Utc>,
    ) -> Result<Change, Error> {
        let order = store::lock_order(&mut *conn, &new.order_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Order))?;
        let active = store::active_dispute_id(&mut *conn, &order.order_id)
            .await?
            .is_some();
        let change = domain::open(
            &order,
            active,
            new,
            actor,
            self.max_disputes_per_order,
            DisputeId::new(),
            now,
        )?;
        store::insert_dispute(&mut *conn, &change.dispute).await?;
        persist(conn, &change, actor).await?;
        Ok(change)
    }

    /// Runs `command` on an existing dispute: lock its order, let the domain decide,
    /// write the result.
    pub async fn execute(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        dispute_id: DisputeId,
        command: DisputeCommand,
        now: DateTime<Utc>,
    ) -> Result<Change, Error> {
        let (order, dispute) = store::lock_dispute(&mut *conn, dispute_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Dispute))?;
        let change = domain::decide(&order, &dispute, actor, command, now)?;
        apply(conn, &change, actor).await?;
        Ok(change)
    }

    /// ExtendProtection: moves the order's protection end later. The active dispute, if
    /// any, records it in its history.
    pub async fn extend_protection(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        order_id: &PartyId,
        new_end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Order, Error> {
        let order = store::lock_order(&mut *conn, order_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Order))?;
        let extended = domain::extend_protection(&order, actor, new_end)?;
        store::update_order(&mut *conn, &extended, now).await?;
        if let Some(dispute_id) = store::active_dispute_id(&mut *conn, order_id).await? {
            let payload = json!({
                "version": 1,
                "order_id": order_id.as_str(),
                "previous_protection_ends_at": order.protection_ends_at,
                "protection_ends_at": extended.protection_ends_at,
            });
            store::append_event(conn, dispute_id, "PROTECTION_EXTENDED", actor, now, payload)
                .await?;
        }
        Ok(extended)
    }
}

/// What the payments service needs to move the money, with no second call.
pub(super) fn settlement_json(order: &Order, settlement: &Settlement) -> serde_json::Value {
    json!({
        "order_id": order.order_id.as_str(),
        "buyer_id": order.buyer_id.as_str(),
        "seller_id": order.seller_id.as_str(),
        "currency_code": order.amount.currency.as_str(),
        "amount_minor": order.amount.minor,
        "refunded_to_buyer_minor": settlement.refund_minor(),
        "released_to_seller_minor": settlement.release_minor(),
        "funds_state": settlement.funds_state().as_str(),
        "settled_at": settlement.settled_at,
    })
}

/// Writes a change to an existing dispute.
pub(super) async fn apply(
    conn: &mut PgConnection,
    change: &Change,
    actor: &Actor,
) -> Result<(), Error> {
    store::update_dispute(&mut *conn, &change.dispute).await?;
    persist(conn, change, actor).await
}

/// Writes what every change shares: the order, the ledger entry if it settled, and the
/// history event. The dispute row itself is inserted or updated by the caller.
async fn persist(conn: &mut PgConnection, change: &Change, actor: &Actor) -> Result<(), Error> {
    let Change {
        order,
        dispute,
        settlement,
        event,
        note,
    } = change;
    store::update_order(&mut *conn, order, dispute.updated_at).await?;
    if let Some(settlement) = settlement {
        store::insert_settlement(
            &mut *conn,
            order,
            settlement,
            Some(dispute.dispute_id),
            actor,
        )
        .await?;
    }
    let payload = json!({
        "version": 1,
        "order_id": order.order_id.as_str(),
        "state": store::state_name(dispute.state),
        "outcome": dispute.outcome.map(store::outcome_name),
        "return_status": dispute.item_return.as_ref().map(|r| store::return_status_name(r.status)),
        "proposal": dispute.proposal.as_ref().map(|p| {
            let (remedy, currency_code, refund_minor) = store::remedy_columns(p.remedy);
            json!({ "remedy": remedy, "currency_code": currency_code, "refund_minor": refund_minor, "message": p.message })
        }),
        "note": note,
        "settlement": settlement.map(|s| settlement_json(order, &s)),
    });
    store::append_event(
        conn,
        dispute.dispute_id,
        event.as_str(),
        actor,
        dispute.updated_at,
        payload,
    )
    .await?;
    Ok(())
}
