//! Deadlines, applied one per transaction as the `system` service actor through the
//! same domain transitions and writes as the RPCs. Each attempt is a span of its own
//! (a child of the worker's pass); its trace id is the one written to the history.

use tracing::{Instrument, field::Empty};

use super::{Commands, Error, Origin, events, writes};
use crate::{
    domain::{self, DisputeId, PartyId},
    store,
};

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
        let Some(change) = in_span(&span, self.decide_deadline(dispute_id)).await? else {
            return Ok(false);
        };
        span.in_scope(|| {
            span.record("order.id", change.order.order_id.as_str());
            span.record("deadline.kind", change.event.as_str());
            self.metrics.dispute_changed(&change);
            tracing::info!(%dispute_id, event = change.event.as_str(), "deadline applied");
        });
        Ok(true)
    }

    /// The transaction of [`Commands::apply_deadline`]: the change it committed, if any.
    async fn decide_deadline(
        &self,
        dispute_id: DisputeId,
    ) -> Result<Option<domain::Change>, Error> {
        let mut tx = self.store.begin().await?;
        let now = self.now();
        let Some((order, dispute)) = store::try_lock_dispute(&mut tx, dispute_id).await? else {
            return Ok(None);
        };
        let Some(change) = domain::apply_deadline(&order, &dispute, &self.deadlines, now)? else {
            return Ok(None);
        };
        writes::apply(&mut tx, &change, &Origin::system(), None).await?;
        store::commit(tx).await?;
        Ok(Some(change))
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
        let Some((order, settlement)) = in_span(&span, self.release_transaction(order_id)).await?
        else {
            return Ok(false);
        };
        span.in_scope(|| {
            self.metrics.protection_ended(&order, &settlement);
            tracing::info!(%order_id, "protection ended; funds released to the seller");
        });
        Ok(true)
    }

    /// The transaction of [`Commands::release_if_protection_ended`]: the settled order.
    async fn release_transaction(
        &self,
        order_id: &PartyId,
    ) -> Result<Option<(domain::Order, domain::Settlement)>, Error> {
        let mut tx = self.store.begin().await?;
        let now = self.now();
        let Some(order) = store::try_lock_order(&mut tx, order_id).await? else {
            return Ok(None);
        };
        if store::active_dispute_id(&mut tx, order_id).await?.is_some() {
            return Ok(None);
        }
        let Some((order, settlement)) = domain::release_at_protection_end(&order, now) else {
            return Ok(None);
        };
        let system = Origin::system();
        store::update_order(&mut tx, &order, now).await?;
        store::insert_settlement(&mut tx, &order, &settlement, None, &system.actor).await?;
        store::record_event(
            &mut tx,
            events::funds_settled(&order, &settlement, None, "PROTECTION_ENDED", &system),
        )
        .await?;
        store::commit(tx).await?;
        Ok(Some((order, settlement)))
    }
}

/// Runs a deadline's `transaction` inside the deadline's `span`, with a transaction span of
/// its own under it.
async fn in_span<T>(
    span: &tracing::Span,
    transaction: impl std::future::Future<Output = Result<Option<T>, Error>>,
) -> Result<Option<T>, Error> {
    transaction
        .instrument(span.in_scope(store::transaction_span))
        .instrument(span.clone())
        .await
}
