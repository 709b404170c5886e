//! Queries, filtered by who may see what: parties their own, the platform everything.

use super::{Commands, Error};
use crate::domain::{
    Actor, Dispute, DisputeFilter, DisputeId, DisputeState, DomainError, ListPosition, Order,
    PartyId, Resource, Role, SellerStats, StatsWindow, ensure_may_read_record,
};

/// A page of disputes and whether there may be more.
#[derive(Debug)]
pub struct ListPage {
    pub disputes: Vec<Dispute>,
    /// The last dispute of this page when the page is full.
    pub next_after: Option<ListPosition>,
    /// How many disputes match in all, when that is cheap to know.
    pub total: Option<i64>,
}

impl Commands {
    /// The key page tokens and cursors are signed with when none is configured: made by a
    /// migration and kept in the database, the same for every replica.
    pub async fn page_token_key(&self) -> Result<Vec<u8>, Error> {
        Ok(self.store.page_token_key().await?)
    }

    /// A store's dispute record over `window`, ending now: its seller's own, or any
    /// store's for an agent.
    pub async fn seller_stats(
        &self,
        actor: &Actor,
        seller_id: &PartyId,
        window: StatsWindow,
    ) -> Result<SellerStats, Error> {
        ensure_may_read_record(actor, seller_id)?;
        let now = self.now();
        Ok(self
            .store
            .seller_stats(seller_id, window.start(now), now)
            .await?)
    }

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
    /// gets only their own: a filter naming another party matches nothing. With
    /// `needs_my_action`, only disputes whose next move is the actor's role's.
    pub async fn list_disputes(
        &self,
        actor: &Actor,
        mut filter: DisputeFilter,
        needs_my_action: bool,
        page_size: usize,
    ) -> Result<ListPage, Error> {
        let own = match actor.role {
            Role::Buyer => Some(&mut filter.buyer_id),
            Role::Seller => Some(&mut filter.seller_id),
            Role::Agent | Role::Service => None,
        };
        let nothing = ListPage {
            disputes: vec![],
            next_after: None,
            total: Some(0),
        };
        if let Some(party) = own {
            if party.as_ref().is_some_and(|id| *id != actor.id) {
                return Ok(nothing);
            }
            *party = Some(actor.id.clone());
        }
        if needs_my_action {
            let mine = DisputeState::ALL
                .into_iter()
                .filter(|state| state.waits_for() == Some(actor.role));
            let states = match filter.states.take() {
                Some(asked) => mine.filter(|state| asked.contains(state)).collect(),
                None => mine.collect(),
            };
            filter.states = Some(states);
        }
        if filter.states.as_ref().is_some_and(Vec::is_empty) {
            return Ok(nothing);
        }
        let disputes = self.store.list_disputes(&filter, page_size as i64).await?;
        let next_after = (disputes.len() == page_size)
            .then(|| {
                disputes.last().map(|d| ListPosition {
                    updated_at: d.updated_at,
                    dispute_id: d.dispute_id,
                })
            })
            .flatten();
        filter.after = None;
        let total = self.store.count_disputes(&filter).await?;
        Ok(ListPage {
            disputes,
            next_after,
            total,
        })
    }
}
