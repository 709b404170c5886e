//! Domain → protobuf: orders, disputes, history entries and stream events. Event payloads
//! become `google.protobuf.Struct`s; their amounts are strings of digits (a Struct number is
//! a double, which cannot hold every int64).

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::{pb, tokens::Tokens};
use crate::domain::{
    self, Consequence, Cursor, DeadlineKind, DisputeState, HistoryEvent, Money, NextDeadline,
    Order, Outcome, Reason, Remedy, ReturnStatus, StreamEvent,
};

fn json_to_pb(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        // Amounts are integers well inside f64's exact range (< 2^53).
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(struct_to_pb(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn struct_to_pb(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

fn payload_to_pb(payload: &serde_json::Value) -> Option<prost_types::Struct> {
    payload.as_object().map(struct_to_pb)
}

pub fn history_event_to_pb(event: &HistoryEvent) -> pb::DisputeEvent {
    pb::DisputeEvent {
        dispute_id: event.dispute_id.to_string(),
        sequence: event.seq,
        kind: event.kind.clone(),
        actor_role: event.actor.role.as_str().to_owned(),
        actor_id: event.actor.id.clone(),
        occurred_at: Some(timestamp_to_pb(event.occurred_at)),
        payload: payload_to_pb(&event.payload),
        trace_id: event.trace_id.clone().unwrap_or_default(),
    }
}

/// An event of a stream, with the stream's cursor once it is taken.
pub fn stream_event_to_pb(event: &StreamEvent, cursor: &Cursor, tokens: &Tokens) -> pb::Event {
    pb::Event {
        cursor: tokens.cursor(cursor),
        order_sequence: event.order_sequence,
        event_id: event.event_id.to_string(),
        r#type: event.event_type.clone(),
        order_id: event.order_id.clone(),
        dispute_id: event
            .dispute_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        dispute_sequence: event.dispute_seq.unwrap_or_default(),
        actor_role: event.actor.role.as_str().to_owned(),
        actor_id: event.actor.id.clone(),
        occurred_at: Some(timestamp_to_pb(event.occurred_at)),
        payload: payload_to_pb(&event.payload),
        trace_id: event.trace_id.clone().unwrap_or_default(),
    }
}

pub(super) fn state_to_pb(state: DisputeState) -> pb::DisputeState {
    match state {
        DisputeState::AwaitingSeller => pb::DisputeState::AwaitingSeller,
        DisputeState::Negotiating => pb::DisputeState::Negotiating,
        DisputeState::AwaitingReturnShipment => pb::DisputeState::AwaitingReturnShipment,
        DisputeState::ReturnInTransit => pb::DisputeState::ReturnInTransit,
        DisputeState::UnderReview => pb::DisputeState::UnderReview,
        DisputeState::Cancelled => pb::DisputeState::Cancelled,
        DisputeState::Resolved => pb::DisputeState::Resolved,
        DisputeState::AwaitingReplacementShipment => pb::DisputeState::AwaitingReplacementShipment,
        DisputeState::ReplacementInTransit => pb::DisputeState::ReplacementInTransit,
    }
}

pub(super) fn timestamp_to_pb(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn money_to_pb(money: Money) -> pb::Money {
    pb::Money {
        currency_code: money.currency.as_str().to_owned(),
        amount_minor: money.minor,
    }
}

pub fn order_to_pb(order: &Order) -> pb::Order {
    let funds_state = match order.funds_state() {
        domain::FundsState::Held => pb::FundsState::Held,
        domain::FundsState::ReleasedToSeller => pb::FundsState::ReleasedToSeller,
        domain::FundsState::RefundedToBuyer => pb::FundsState::RefundedToBuyer,
        domain::FundsState::Split => pb::FundsState::Split,
    };
    let part = |minor| Some(money_to_pb(Money::new(order.amount.currency, minor)));
    pb::Order {
        order_id: order.order_id.to_string(),
        buyer_id: order.buyer_id.to_string(),
        seller_id: order.seller_id.to_string(),
        amount: Some(money_to_pb(order.amount)),
        protection_ends_at: Some(timestamp_to_pb(order.protection_ends_at)),
        funds_state: funds_state as i32,
        refunded_to_buyer: order.settlement.and_then(|s| part(s.refund_minor())),
        released_to_seller: order.settlement.and_then(|s| part(s.release_minor())),
        settled_at: order.settlement.map(|s| timestamp_to_pb(s.settled_at)),
        disputes_closed: order.disputes_closed,
        dispute_count: order.dispute_count,
    }
}

fn remedy_to_pb(remedy: Remedy) -> (pb::Remedy, Option<pb::Money>) {
    match remedy {
        Remedy::FullRefund => (pb::Remedy::FullRefund, None),
        Remedy::PartialRefund(refund) => (pb::Remedy::PartialRefund, Some(money_to_pb(refund))),
        Remedy::ReturnAndRefund => (pb::Remedy::ReturnAndRefund, None),
        Remedy::Replacement => (pb::Remedy::Replacement, None),
    }
}

/// A dispute with its next deadline (`Deadlines::next`; the caller knows the deadlines).
pub fn dispute_to_pb(dispute: &domain::Dispute, next: Option<NextDeadline>) -> pb::Dispute {
    let (remedy, refund_amount) = remedy_to_pb(dispute.remedy);
    let proposal = dispute.proposal.as_ref().map(|proposal| {
        let (remedy, refund_amount) = remedy_to_pb(proposal.remedy);
        pb::Proposal {
            remedy: remedy as i32,
            refund_amount,
            message: proposal.message.clone(),
        }
    });
    let reason = match dispute.reason {
        Reason::ItemNotReceived => pb::DisputeReason::ItemNotReceived,
        Reason::NotAsDescribed => pb::DisputeReason::NotAsDescribed,
        Reason::QualityIssue => pb::DisputeReason::QualityIssue,
    };
    let outcome =
        dispute
            .outcome
            .map_or(pb::DisputeOutcome::Unspecified, |outcome| match outcome {
                Outcome::CancelledByBuyer => pb::DisputeOutcome::CancelledByBuyer,
                Outcome::ResolvedBuyerFavour => pb::DisputeOutcome::ResolvedBuyerFavour,
                Outcome::ResolvedPartial => pb::DisputeOutcome::ResolvedPartial,
                Outcome::ResolvedSellerFavour => pb::DisputeOutcome::ResolvedSellerFavour,
            });
    let item_return = dispute.item_return.as_ref().map(|r| pb::ItemReturn {
        status: match r.status {
            ReturnStatus::Requested => pb::ReturnStatus::Requested,
            ReturnStatus::AwaitingShipment => pb::ReturnStatus::AwaitingShipment,
            ReturnStatus::InTransit => pb::ReturnStatus::InTransit,
            ReturnStatus::Received => pb::ReturnStatus::Received,
            ReturnStatus::Cancelled => pb::ReturnStatus::Cancelled,
        } as i32,
        carrier: r.carrier.clone().unwrap_or_default(),
        tracking_number: r.tracking_number.clone().unwrap_or_default(),
    });
    let replacement = dispute
        .replacement
        .as_ref()
        .map(|replacement| pb::ItemShipment {
            carrier: replacement.carrier.clone().unwrap_or_default(),
            tracking_number: replacement.tracking_number.clone().unwrap_or_default(),
            shipped_at: replacement.shipped_at.map(timestamp_to_pb),
        });
    pb::Dispute {
        dispute_id: dispute.dispute_id.to_string(),
        order_id: dispute.order_id.to_string(),
        buyer_id: dispute.buyer_id.to_string(),
        seller_id: dispute.seller_id.to_string(),
        reason: reason as i32,
        remedy: remedy as i32,
        refund_amount,
        description: dispute.description.clone(),
        evidence_urls: dispute.evidence_urls.clone(),
        state: state_to_pb(dispute.state) as i32,
        outcome: outcome as i32,
        item_return,
        protection_ends_at: Some(timestamp_to_pb(dispute.protection_ends_at)),
        created_at: Some(timestamp_to_pb(dispute.created_at)),
        updated_at: Some(timestamp_to_pb(dispute.updated_at)),
        proposal,
        next_deadline: next.map(next_deadline_to_pb),
        replacement,
    }
}

fn duration_to_pb(d: chrono::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: d.subsec_nanos(),
    }
}

pub fn seller_stats_to_pb(stats: &domain::SellerStats) -> pb::GetSellerDisputeStatsResponse {
    pb::GetSellerDisputeStatsResponse {
        seller_id: stats.seller_id.to_string(),
        window_start: Some(timestamp_to_pb(stats.window_start)),
        window_end: Some(timestamp_to_pb(stats.window_end)),
        orders_registered: stats.orders_registered,
        disputes_opened: stats.opened.total(),
        disputes_by_reason: Some(pb::DisputesByReason {
            item_not_received: stats.opened.item_not_received,
            not_as_described: stats.opened.not_as_described,
            quality_issue: stats.opened.quality_issue,
        }),
        dispute_rate: stats.dispute_rate(),
        outcomes: Some(pb::DisputeOutcomes {
            cancelled_by_buyer: stats.ended.cancelled_by_buyer,
            resolved_buyer_favour: stats.ended.resolved_buyer_favour,
            resolved_partial: stats.ended.resolved_partial,
            resolved_seller_favour: stats.ended.resolved_seller_favour,
        }),
        open_disputes: stats.open_now,
        first_responses: stats.first_responses,
        median_first_response: stats.median_first_response.map(duration_to_pb),
    }
}

fn next_deadline_to_pb(next: NextDeadline) -> pb::Deadline {
    let kind = match next.kind {
        DeadlineKind::SellerResponse => pb::DeadlineKind::SellerResponse,
        DeadlineKind::Negotiation => pb::DeadlineKind::Negotiation,
        DeadlineKind::ReturnShipment => pb::DeadlineKind::ReturnShipment,
        DeadlineKind::ReturnReceipt => pb::DeadlineKind::ReturnReceipt,
        DeadlineKind::ReplacementShipment => pb::DeadlineKind::ReplacementShipment,
        DeadlineKind::ReplacementReceipt => pb::DeadlineKind::ReplacementReceipt,
    };
    let consequence = match next.consequence {
        Consequence::GrantBuyerRemedy => pb::DeadlineConsequence::GrantBuyerRemedy,
        Consequence::RefundBuyer => pb::DeadlineConsequence::RefundBuyer,
        Consequence::ReleaseToSeller => pb::DeadlineConsequence::ReleaseToSeller,
        Consequence::Escalate => pb::DeadlineConsequence::Escalate,
    };
    pb::Deadline {
        kind: kind as i32,
        due_at: Some(timestamp_to_pb(next.due_at)),
        consequence: consequence as i32,
    }
}
