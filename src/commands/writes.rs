//! The commands that change orders and disputes.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::{Commands, Error};
use crate::{
    domain::{
        self, Actor, CancelVia, Change, DisputeId, DomainError, NewDispute, NewOrder, Order,
        Registration, Resolution, Resource,
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
                    // Registered concurrently by another call: compare with what it wrote.
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
        let active = store::has_active_dispute(&mut *conn, &order.order_id).await?;
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

    pub async fn cancel(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        dispute_id: DisputeId,
        via: CancelVia,
        now: DateTime<Utc>,
    ) -> Result<Change, Error> {
        let (order, dispute) = load_locked(&mut *conn, dispute_id).await?;
        let change = domain::cancel(&order, &dispute, actor, via, now)?;
        store::update_dispute(&mut *conn, &change.dispute).await?;
        persist(conn, &change, actor).await?;
        Ok(change)
    }

    pub async fn resolve(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        dispute_id: DisputeId,
        resolution: Resolution,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<Change, Error> {
        let (order, dispute) = load_locked(&mut *conn, dispute_id).await?;
        let change = domain::resolve(&order, &dispute, actor, resolution, note, now)?;
        store::update_dispute(&mut *conn, &change.dispute).await?;
        persist(conn, &change, actor).await?;
        Ok(change)
    }
}

async fn load_locked(
    conn: &mut PgConnection,
    dispute_id: DisputeId,
) -> Result<(Order, domain::Dispute), Error> {
    Ok(store::lock_dispute(conn, dispute_id)
        .await?
        .ok_or(DomainError::NotFound(Resource::Dispute))?)
}

/// Writes what every change shares: the order, the ledger entry if it settled, and the
/// history event. The dispute row itself is inserted or updated by the caller.
async fn persist(conn: &mut PgConnection, change: &Change, actor: &Actor) -> Result<(), Error> {
    let Change {
        order,
        dispute,
        settlement,
        event,
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
        "state": format!("{:?}", dispute.state),
        "outcome": dispute.outcome.map(|o| format!("{o:?}")),
        "settlement": settlement.map(|s| json!({
            "currency_code": order.amount.currency.as_str(),
            "amount_minor": order.amount.minor,
            "refunded_to_buyer_minor": s.refund_minor(),
            "released_to_seller_minor": s.release_minor(),
            "buyer_id": order.buyer_id.as_str(),
            "seller_id": order.seller_id.as_str(),
        })),
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
