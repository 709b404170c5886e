//! Protobuf <-> domain. Requests are parsed whole: every bad field is reported at once.
//! Protobuf types go no further than `grpc/`.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::{
    clock::to_storage_precision,
    domain::{
        self, CancelVia, DisputeCommand, DisputeId, DisputeState, DomainError, FieldViolation,
        Money, NewDispute, NewOrder, Order, Outcome, PartyId, Reason, Remedy, RequestId,
        Resolution, ReturnStatus, SellerDecision,
    },
    store::{DisputeFilter, HistoryEvent, Position, StreamEvent},
};

/// Collects every violation while fields are parsed.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed
            .map_err(|why| self.0.push(FieldViolation::new(field, why)))
            .ok()
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, DomainError> {
        match value() {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(DomainError::InvalidArgument(self.0)),
        }
    }
}

fn money(field: &str, value: Option<&pb::Money>, v: &mut Violations) -> Option<Money> {
    let Some(value) = value else {
        v.0.push(FieldViolation::new(field, "is required"));
        return None;
    };
    Money::positive(&value.currency_code, value.amount_minor)
        .map_err(|errors| {
            for (sub, why) in errors {
                v.0.push(FieldViolation::new(format!("{field}.{sub}"), why));
            }
        })
        .ok()
}

fn timestamp(value: Option<&Timestamp>) -> Result<DateTime<Utc>, String> {
    let value = value.ok_or("is required")?;
    let nanos = u32::try_from(value.nanos).map_err(|_| "has negative nanos")?;
    DateTime::from_timestamp(value.seconds, nanos)
        .map(to_storage_precision)
        .ok_or_else(|| "is out of range".into())
}

fn enum_value<T>(raw: i32, parse: impl Fn(i32) -> Option<T>) -> Result<T, String> {
    parse(raw).ok_or_else(|| "must be set to one of the enum's values (not UNSPECIFIED)".into())
}

fn bounded_text(text: &str, max: usize) -> Result<String, String> {
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(text.to_owned())
}

pub fn dispute_id(raw: &str) -> Result<DisputeId, DomainError> {
    DisputeId::parse(raw).map_err(|why| DomainError::invalid("dispute_id", why))
}

pub fn order_id(raw: &str) -> Result<PartyId, DomainError> {
    PartyId::parse(raw).map_err(|why| DomainError::invalid("order_id", why))
}

pub fn register_order(
    req: &pb::RegisterOrderRequest,
) -> Result<(NewOrder, RequestId), DomainError> {
    let mut v = Violations::default();
    let order_id = v.check("order_id", PartyId::parse(&req.order_id));
    let buyer_id = v.check("buyer_id", PartyId::parse(&req.buyer_id));
    let seller_id = v.check("seller_id", PartyId::parse(&req.seller_id));
    let amount = money("amount", req.amount.as_ref(), &mut v);
    let protection_ends_at = v.check(
        "protection_ends_at",
        timestamp(req.protection_ends_at.as_ref()),
    );
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    v.finish(|| {
        Some((
            NewOrder {
                order_id: order_id?,
                buyer_id: buyer_id?,
                seller_id: seller_id?,
                amount: amount?,
                protection_ends_at: protection_ends_at?,
            },
            request_id?,
        ))
    })
}

pub fn open_dispute(req: &pb::OpenDisputeRequest) -> Result<(NewDispute, RequestId), DomainError> {
    let mut v = Violations::default();
    let order_id = v.check("order_id", PartyId::parse(&req.order_id));
    let reason = v.check("reason", enum_value(req.reason, reason_from_pb));
    let remedy = remedy(
        "remedy",
        "refund_amount",
        req.remedy,
        req.refund_amount.as_ref(),
        &mut v,
    );
    if let (Some(reason), Some(remedy)) = (reason, remedy)
        && !remedy.allowed_for(reason)
    {
        v.0.push(FieldViolation::new(
            "remedy",
            "RETURN_AND_REFUND is not allowed with ITEM_NOT_RECEIVED: there is nothing to return",
        ));
    }
    let description = v.check(
        "description",
        bounded_text(&req.description, domain::MAX_DESCRIPTION_CHARS),
    );
    if req.evidence_urls.len() > domain::MAX_EVIDENCE_URLS {
        v.0.push(FieldViolation::new(
            "evidence_urls",
            format!("must have at most {} entries", domain::MAX_EVIDENCE_URLS),
        ));
    }
    for (i, url) in req.evidence_urls.iter().enumerate() {
        let field = format!("evidence_urls[{i}]");
        if url.is_empty() {
            v.0.push(FieldViolation::new(field, "must not be empty"));
        } else {
            v.check(&field, bounded_text(url, domain::MAX_EVIDENCE_URL_CHARS));
        }
    }
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    v.finish(|| {
        Some((
            NewDispute {
                order_id: order_id?,
                reason: reason?,
                remedy: remedy?,
                description: description?,
                evidence_urls: req.evidence_urls.clone(),
            },
            request_id?,
        ))
    })
}

/// A remedy and its amount: the amount is required with PARTIAL_REFUND, refused otherwise.
fn remedy(
    field: &str,
    amount_field: &str,
    raw: i32,
    amount: Option<&pb::Money>,
    v: &mut Violations,
) -> Option<Remedy> {
    match pb::Remedy::try_from(raw) {
        Ok(pb::Remedy::PartialRefund) => money(amount_field, amount, v).map(Remedy::PartialRefund),
        Ok(remedy @ (pb::Remedy::FullRefund | pb::Remedy::ReturnAndRefund)) => {
            if amount.is_some() {
                v.0.push(FieldViolation::new(
                    amount_field,
                    format!("must be unset unless {field} is PARTIAL_REFUND"),
                ));
            }
            Some(if remedy == pb::Remedy::FullRefund {
                Remedy::FullRefund
            } else {
                Remedy::ReturnAndRefund
            })
        }
        Ok(pb::Remedy::Unspecified) | Err(_) => v.check(
            field,
            Err("must be FULL_REFUND, PARTIAL_REFUND or RETURN_AND_REFUND".into()),
        ),
    }
}

/// A command on one dispute, its id and the request id.
pub type DisputeRequest = (DisputeId, DisputeCommand, RequestId);

/// Parses the dispute id and request id every dispute command carries, and the rest with
/// `command`, reporting every violation together.
fn dispute_request(
    dispute_id: &str,
    request_id: &str,
    command: impl FnOnce(&mut Violations) -> Option<DisputeCommand>,
) -> Result<DisputeRequest, DomainError> {
    let mut v = Violations::default();
    let dispute_id = v.check("dispute_id", DisputeId::parse(dispute_id));
    let command = command(&mut v);
    let request_id = v.check("request_id", RequestId::parse(request_id));
    v.finish(|| Some((dispute_id?, command?, request_id?)))
}

pub fn cancel_dispute(req: &pb::CancelDisputeRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::Cancel(CancelVia::Dispute))
    })
}

pub fn cancel_return(req: &pb::CancelReturnRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::Cancel(CancelVia::Return))
    })
}

pub fn accept_proposal(req: &pb::AcceptProposalRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::AcceptProposal)
    })
}

pub fn confirm_return_received(
    req: &pb::ConfirmReturnReceivedRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::ConfirmReturnReceived)
    })
}

pub fn respond_to_dispute(
    req: &pb::RespondToDisputeRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let decision = match pb::SellerDecision::try_from(req.decision) {
            Ok(pb::SellerDecision::Accept) => {
                if req.counter_remedy != 0
                    || req.counter_refund_amount.is_some()
                    || !req.message.is_empty()
                {
                    v.0.push(FieldViolation::new(
                        "counter_remedy",
                        "must be unset with ACCEPT, as must counter_refund_amount and message",
                    ));
                }
                Some(SellerDecision::Accept)
            }
            Ok(pb::SellerDecision::Propose) => {
                let remedy = remedy(
                    "counter_remedy",
                    "counter_refund_amount",
                    req.counter_remedy,
                    req.counter_refund_amount.as_ref(),
                    v,
                );
                let message = v.check(
                    "message",
                    bounded_text(&req.message, domain::MAX_NOTE_CHARS),
                );
                Some(SellerDecision::Propose {
                    remedy: remedy?,
                    message: message?,
                })
            }
            Ok(pb::SellerDecision::Unspecified) | Err(_) => {
                v.check("decision", Err("must be ACCEPT or PROPOSE".into()))
            }
        };
        decision.map(DisputeCommand::Respond)
    })
}

pub fn escalate_dispute(req: &pb::EscalateDisputeRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let reason = v.check("reason", required_text(&req.reason, domain::MAX_NOTE_CHARS));
        Some(DisputeCommand::Escalate { reason: reason? })
    })
}

pub fn submit_return_shipment(
    req: &pb::SubmitReturnShipmentRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let carrier = v.check("carrier", required_text(&req.carrier, 64));
        let tracking_number = v.check("tracking_number", required_text(&req.tracking_number, 128));
        Some(DisputeCommand::SubmitReturnShipment {
            carrier: carrier?,
            tracking_number: tracking_number?,
        })
    })
}

pub fn extend_protection(
    req: &pb::ExtendProtectionRequest,
) -> Result<(PartyId, DateTime<Utc>, RequestId), DomainError> {
    let mut v = Violations::default();
    let order_id = v.check("order_id", PartyId::parse(&req.order_id));
    let new_end = v.check("new_end", timestamp(req.new_end.as_ref()));
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    v.finish(|| Some((order_id?, new_end?, request_id?)))
}

fn required_text(text: &str, max: usize) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("is required".into());
    }
    bounded_text(text, max)
}

pub fn resolve_funds(req: &pb::ResolveFundsRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let resolution = match pb::ResolveOutcome::try_from(req.outcome) {
            Ok(pb::ResolveOutcome::RefundPartial) => {
                money("refund_amount", req.refund_amount.as_ref(), v).map(Resolution::RefundPartial)
            }
            Ok(
                outcome @ (pb::ResolveOutcome::RefundFull | pb::ResolveOutcome::ReleaseToSeller),
            ) => {
                if req.refund_amount.is_some() {
                    v.0.push(FieldViolation::new(
                        "refund_amount",
                        "must be unset unless the outcome is REFUND_PARTIAL",
                    ));
                }
                Some(if outcome == pb::ResolveOutcome::RefundFull {
                    Resolution::RefundFull
                } else {
                    Resolution::ReleaseToSeller
                })
            }
            Ok(pb::ResolveOutcome::Unspecified) | Err(_) => v.check(
                "outcome",
                Err("must be REFUND_FULL, REFUND_PARTIAL or RELEASE_TO_SELLER".into()),
            ),
        };
        let note = v.check("note", bounded_text(&req.note, domain::MAX_NOTE_CHARS));
        Some(DisputeCommand::Resolve {
            resolution: resolution?,
            note: note?,
        })
    })
}

/// Default and largest page sizes of lists.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
const PAGE_TOKEN_PREFIX: &str = "v1:";

pub fn list_disputes(req: &pb::ListDisputesRequest) -> Result<(DisputeFilter, usize), DomainError> {
    let mut v = Violations::default();
    let page_size = v.check("page_size", page_size(req.page_size));
    let after = match req.page_token.as_str() {
        "" => None,
        token => v.check(
            "page_token",
            parse_page_token(token, |s| DisputeId::parse(s).ok()),
        ),
    };
    let optional_id = |field: &str, raw: &str, v: &mut Violations| {
        (!raw.is_empty())
            .then(|| v.check(field, PartyId::parse(raw).map(|id| id.as_str().to_owned())))
            .flatten()
    };
    let order_id = optional_id("order_id", &req.order_id, &mut v);
    let buyer_id = optional_id("buyer_id", &req.buyer_id, &mut v);
    let seller_id = optional_id("seller_id", &req.seller_id, &mut v);
    let state = match req.state {
        0 => None,
        raw => v.check("state", enum_value(raw, state_from_pb)),
    };
    v.finish(|| {
        Some((
            DisputeFilter {
                order_id,
                buyer_id,
                seller_id,
                state,
                after,
            },
            page_size?,
        ))
    })
}

/// An opaque page token for the last item of a page.
pub fn page_token(last: &impl std::fmt::Display) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last}"))
}

/// The last item of the previous page, from a token [`page_token`] made.
fn parse_page_token<T>(token: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, String> {
    use base64::Engine;
    let invalid = || "is not a token this service issued".to_string();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(parse)
        .ok_or_else(invalid)
}

fn page_size(raw: i32) -> Result<usize, String> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err("must not be negative".to_string()),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

pub fn list_dispute_events(
    req: &pb::ListDisputeEventsRequest,
) -> Result<(DisputeId, i32, usize), DomainError> {
    let mut v = Violations::default();
    let dispute_id = v.check("dispute_id", DisputeId::parse(&req.dispute_id));
    let page_size = v.check("page_size", page_size(req.page_size));
    let after = match req.page_token.as_str() {
        "" => Some(0),
        token => v.check(
            "page_token",
            parse_page_token(token, |s| s.parse::<i32>().ok()),
        ),
    };
    v.finish(|| Some((dispute_id?, after?, page_size?)))
}

const CURSOR_PREFIX: &str = "c1:";

/// The stream cursor of a position: opaque to consumers.
pub fn cursor(position: Position) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{CURSOR_PREFIX}{}:{}", position.tx_id, position.id))
}

/// `None` for an empty cursor (start from the oldest event kept).
pub fn parse_cursor(raw: &str) -> Result<Option<Position>, DomainError> {
    use base64::Engine;
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || DomainError::invalid("after_cursor", "is not a cursor this service issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (tx_id, id) = text
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(invalid)?;
    match (tx_id.parse(), id.parse()) {
        (Ok(tx_id), Ok(id)) => Ok(Some(Position { tx_id, id })),
        _ => Err(invalid()),
    }
}

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

pub fn stream_event_to_pb(event: &StreamEvent) -> pb::Event {
    pb::Event {
        cursor: cursor(event.position),
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

fn reason_from_pb(raw: i32) -> Option<Reason> {
    match pb::DisputeReason::try_from(raw).ok()? {
        pb::DisputeReason::ItemNotReceived => Some(Reason::ItemNotReceived),
        pb::DisputeReason::NotAsDescribed => Some(Reason::NotAsDescribed),
        pb::DisputeReason::QualityIssue => Some(Reason::QualityIssue),
        pb::DisputeReason::Unspecified => None,
    }
}

fn state_from_pb(raw: i32) -> Option<DisputeState> {
    DisputeState::ALL
        .into_iter()
        .find(|state| state_to_pb(*state) as i32 == raw)
}

fn state_to_pb(state: DisputeState) -> pb::DisputeState {
    match state {
        DisputeState::AwaitingSeller => pb::DisputeState::AwaitingSeller,
        DisputeState::Negotiating => pb::DisputeState::Negotiating,
        DisputeState::AwaitingReturnShipment => pb::DisputeState::AwaitingReturnShipment,
        DisputeState::ReturnInTransit => pb::DisputeState::ReturnInTransit,
        DisputeState::UnderReview => pb::DisputeState::UnderReview,
        DisputeState::Cancelled => pb::DisputeState::Cancelled,
        DisputeState::Resolved => pb::DisputeState::Resolved,
    }
}

fn timestamp_to_pb(t: DateTime<Utc>) -> Timestamp {
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
    }
}

pub fn dispute_to_pb(dispute: &domain::Dispute) -> pb::Dispute {
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
    }
}
