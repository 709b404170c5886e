//! Deadlines, applied one per transaction as the `system` service actor through the
//! same domain transitions and writes as the RPCs.

use super::{Commands, Error, Origin, events, writes};
use crate::{
    domain::{self, Deadlines, DisputeId, PartyId},
    store::{self, StoreError},
};

impl Commands {
    /// Applies the dispute's deadline if it is (still) due. `false` when another replica
    /// holds the order or the deadline became moot.
    pub async fn apply_deadline(
        &self,
        dispute_id: DisputeId,
        deadlines: &Deadlines,
    ) -> Result<bool, Error> {
        let mut tx = self.store.begin().await?;
        let now = self.now();
        let Some(order_id) = store::order_of(&mut tx, dispute_id).await? else {
            return Ok(false);
        };
        let Some(order) = store::try_lock_order(&mut tx, &order_id).await? else {
            return Ok(false);
        };
        let Some(dispute) = store::fetch_dispute(&mut *tx, dispute_id).await? else {
            return Ok(false);
        };
        let Some(change) = domain::apply_deadline(&order, &dispute, deadlines, now)? else {
            return Ok(false);
        };
        writes::apply(&mut tx, &change, &Origin::system()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(%dispute_id, event = change.event.as_str(), "deadline applied");
        Ok(true)
    }

    /// Releases the order's funds to the seller if its protection has ended with the funds
    /// held and no dispute active.
    pub async fn release_if_protection_ended(&self, order_id: &PartyId) -> Result<bool, Error> {
        let mut tx = self.store.begin().await?;
        let now = self.now();
        let Some(order) = store::try_lock_order(&mut tx, order_id).await? else {
            return Ok(false);
        };
        if store::active_dispute_id(&mut tx, order_id).await?.is_some() {
            return Ok(false);
        }
        let Some((order, settlement)) = domain::release_at_protection_end(&order, now) else {
            return Ok(false);
        };
        let system = Origin::system();
        store::update_order(&mut tx, &order, now).await?;
        store::insert_settlement(&mut tx, &order, &settlement, None, &system.actor).await?;
        store::record_event(
            &mut tx,
            events::funds_settled(&order, &settlement, None, "PROTECTION_ENDED", &system),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(%order_id, "protection ended; funds released to the seller");
        Ok(true)
    }
}
