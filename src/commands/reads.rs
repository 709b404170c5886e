//! Queries, filtered by who may see what: parties their own, the platform everything.

use super::{Commands, Error};
use crate::domain::{
    Actor, Dispute, DisputeFilter, DisputeId, DomainError, Order, PartyId, Resource, Role,
};

/// A page of disputes and whether there may be more.
#[derive(Debug)]
pub struct ListPage {
    pub disputes: Vec<Dispute>,
    /// The last dispute of this page when the page is full.
    pub next_after: Option<DisputeId>,
}

impl Commands {
    pub async fn get_order(&self, actor: &Actor, order_id: &PartyId) -> Result<Order, Error> {
        let order = self
            .store
            .get_order(order_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Order))?;
        order.ensure_visible_to(actor)?;
        Ok(order)
    }

    pub async fn get_dispute(
        &self,
        actor: &Actor,
        dispute_id: DisputeId,
    ) -> Result<Dispute, Error> {
        let dispute = self
            .store
            .get_dispute(dispute_id)
            .await?
            .ok_or(DomainError::NotFound(Resource::Dispute))?;
        dispute.ensure_visible_to(actor)?;
        Ok(dispute)
    }

    /// Lists disputes matching `filter` that `actor` may see. A buyer or seller always
    /// gets only their own: a filter naming another party matches nothing.
    pub async fn list_disputes(
        &self,
        actor: &Actor,
        mut filter: DisputeFilter,
        page_size: usize,
    ) -> Result<ListPage, Error> {
        let own = match actor.role {
            Role::Buyer => Some(&mut filter.buyer_id),
            Role::Seller => Some(&mut filter.seller_id),
            Role::Agent | Role::Service => None,
        };
        if let Some(party) = own {
            if party.as_ref().is_some_and(|id| *id != actor.id) {
                return Ok(ListPage {
                    disputes: vec![],
                    next_after: None,
                });
            }
            *party = Some(actor.id.clone());
        }
        let disputes = self.store.list_disputes(&filter, page_size as i64).await?;
        let next_after = (disputes.len() == page_size)
            .then(|| disputes.last().map(|d| d.dispute_id))
            .flatten();
        Ok(ListPage {
            disputes,
            next_after,
        })
    }
}
