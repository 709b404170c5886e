//! The event catalogue (payloads, version 1) and the two ways to read events: a
//! dispute's history and the resumable stream (the event log the relay fills).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Commands, Error};
use crate::{
    domain::{
        Actor, Change, Cursor, DisputeId, EventKind, HistoryEvent, Order, Settlement, StreamEvent,
    },
    store::{self, NewEvent},
};

/// Version of every payload below; bumped when a payload changes incompatibly (2: amounts
/// became strings of digits).
const PAYLOAD_VERSION: u32 = 2;

/// An amount of minor units in a payload: a string of digits, because consumers read
/// payloads as `google.protobuf.Struct`, whose numbers are doubles and cannot hold every
/// int64 exactly.
fn minor(amount: i64) -> String {
    amount.to_string()
}

pub(super) fn order_registered(order: &Order, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        event_type: "ORDER_REGISTERED",
        occurred_at: now,
        payload: json!({
            "version": PAYLOAD_VERSION,
            "order_id": order.order_id.as_str(),
            "buyer_id": order.buyer_id.as_str(),
            "seller_id": order.seller_id.as_str(),
            "currency_code": order.amount.currency.as_str(),
            "amount_minor": minor(order.amount.minor),
            "protection_ends_at": order.protection_ends_at,
        }),
    }
}

/// A dispute changed (or a message was posted): its reason, state, outcome, return,
/// proposal and replacement afterwards, whether this change `ended` it (gave it its
/// outcome: the store's record counts the ending then), the order's protection end, and
/// the actor's note (a message's text) and evidence if any.
pub(super) fn dispute_changed(change: &Change, ended: bool) -> NewEvent {
    let dispute = &change.dispute;
    NewEvent {
        event_type: change.event.as_str(),
        occurred_at: change.occurred_at,
        payload: json!({
            "version": PAYLOAD_VERSION,
            "order_id": change.order.order_id.as_str(),
            "dispute_id": dispute.dispute_id.to_string(),
            "buyer_id": dispute.buyer_id.as_str(),
            "seller_id": dispute.seller_id.as_str(),
            "reason": store::reason_name(dispute.reason),
            "state": store::state_name(dispute.state),
            "outcome": dispute.outcome.map(store::outcome_name),
            "ended": ended,
            "return_status": dispute.item_return.as_ref().map(|r| store::return_status_name(r.status)),
            "proposal": dispute.proposal.as_ref().map(|p| {
                let (remedy, currency_code, refund_minor) = store::remedy_columns(p.remedy);
                json!({ "remedy": remedy, "currency_code": currency_code, "refund_minor": refund_minor.map(minor), "message": p.message })
            }),
            "note": change.note,
            "replacement": dispute.replacement.as_ref().map(|r| json!({
                "agreed_at": r.agreed_at,
                "carrier": r.carrier,
                "tracking_number": r.tracking_number,
                "shipped_at": r.shipped_at,
            })),
            "protection_ends_at": change.order.protection_ends_at,
            "evidence_urls": change.evidence_urls,
        }),
    }
}

/// The funds were settled: everything the payments service needs to move the money.
pub(super) fn funds_settled(
    order: &Order,
    settlement: &Settlement,
    dispute_id: Option<DisputeId>,
    cause: &str,
) -> NewEvent {
    NewEvent {
        event_type: "FUNDS_SETTLED",
        occurred_at: settlement.settled_at,
        payload: json!({
            "version": PAYLOAD_VERSION,
            "cause": cause,
            "order_id": order.order_id.as_str(),
            "dispute_id": dispute_id.map(|id| id.to_string()),
            "buyer_id": order.buyer_id.as_str(),
            "seller_id": order.seller_id.as_str(),
            "currency_code": order.amount.currency.as_str(),
            "amount_minor": minor(order.amount.minor),
            "refunded_to_buyer_minor": minor(settlement.refund_minor()),
            "released_to_seller_minor": minor(settlement.release_minor()),
            "funds_state": settlement.funds_state().as_str(),
            "settled_at": settlement.settled_at,
        }),
    }
}

pub(super) fn protection_extended(before: &Order, after: &Order, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        event_type: "PROTECTION_EXTENDED",
        occurred_at: now,
        payload: json!({
            "version": PAYLOAD_VERSION,
            "order_id": after.order_id.as_str(),
            "previous_protection_ends_at": before.protection_ends_at,
            "protection_ends_at": after.protection_ends_at,
        }),
    }
}

impl Commands {
    /// A page of a dispute's history, visible by the same rule as the dispute, without
    /// the entries the actor's role does not see.
    pub async fn history(
        &self,
        actor: &Actor,
        dispute_id: DisputeId,
        after_seq: i32,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, Error> {
        self.get_dispute(actor, dispute_id).await?;
        Ok(self
            .store
            .history(
                dispute_id,
                after_seq,
                limit as i64,
                &EventKind::hidden_from(actor.role),
            )
            .await?)
    }

    /// Where the stream ends now, as far as the relay noted: new events come after it.
    pub async fn stream_tail(&self) -> Result<Cursor, Error> {
        Ok(self.store.stream_tail().await?)
    }

    /// Where a stream asked to start after `after` starts: there, or at the oldest event
    /// kept in every partition when `None`.
    pub async fn stream_start(&self, after: Option<Cursor>) -> Result<Cursor, Error> {
        match after {
            Some(after) => Ok(after),
            None => Ok(self.store.stream_marks().await?),
        }
    }

    /// The committed events after `after`, a run of consecutive positions in each
    /// partition. Refuses a cursor whose following events retention has already deleted;
    /// a live stream asks on every read too, so a consumer slower than the retention is
    /// told instead of silently skipping what was deleted under it.
    pub async fn stream(&self, after: &Cursor, limit: usize) -> Result<Vec<StreamEvent>, Error> {
        self.store
            .stream_events(after, limit as i64)
            .await?
            .ok_or(Error::CursorExpired)
    }
}
