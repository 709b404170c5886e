//! Requests → commands: each request is parsed whole into a named, validated command
//! (`TryFrom`), and every bad field is reported at once. Protobuf types go no further than
//! `grpc/`.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::{
    clock::to_storage_precision,
    domain::{
        self, CancelVia, DisputeCommand, DisputeFilter, DisputeId, DisputeState, DomainError,
        FieldViolation, ListOrder, ListPosition, Money, NewDispute, NewOrder, PartyId, Reason,
        Remedy, RequestId, Resolution, SellerDecision, TextKind,
        TextKind::{Free, Line},
    },
};

pub use super::evidence::EvidencePrefixes;
use super::{encode::state_to_pb, tokens};

/// Most field violations listed in one error (README, "Limits").
pub const MAX_VIOLATIONS: usize = 20;

/// Collects every violation while fields are parsed.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed
            .map_err(|why| self.0.push(FieldViolation::new(field, why)))
            .ok()
    }

    /// The command, or every violation — at most [`MAX_VIOLATIONS`] of them, the last
    /// saying how many more there were, so an error is never much larger than its request
    /// (nor than a client's header limit: errors travel in trailers).
    fn finish<T>(mut self, value: impl FnOnce() -> Option<T>) -> Result<T, DomainError> {
        match value() {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => {
                if self.0.len() > MAX_VIOLATIONS {
                    let more = self.0.len() - (MAX_VIOLATIONS - 1);
                    self.0.truncate(MAX_VIOLATIONS - 1);
                    self.0.push(FieldViolation::new(
                        "",
                        format!("{more} more violations not listed"),
                    ));
                }
                Err(DomainError::InvalidArgument(self.0))
            }
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

/// The range of `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z, which PostgreSQL stores whole.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// A timestamp in `google.protobuf.Timestamp`'s own range, nanos in 0..=999,999,999 (so
/// never a leap second), cut to the microseconds PostgreSQL keeps: what is stored is
/// exactly what was parsed, so the same facts sent again compare equal.
fn timestamp(value: Option<&Timestamp>) -> Result<DateTime<Utc>, String> {
    let value = value.ok_or("is required")?;
    if !(0..=999_999_999).contains(&value.nanos) {
        return Err("nanos must be between 0 and 999,999,999".into());
    }
    if !TIMESTAMP_SECONDS.contains(&value.seconds) {
        return Err("must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z".into());
    }
    DateTime::from_timestamp(value.seconds, value.nanos as u32)
        .map(to_storage_precision)
        .ok_or_else(|| "is out of range".into())
}

fn enum_value<T>(raw: i32, parse: impl Fn(i32) -> Option<T>) -> Result<T, String> {
    parse(raw).ok_or_else(|| "must be set to one of the enum's values (not UNSPECIFIED)".into())
}

fn bounded_text(text: &str, max: usize, kind: TextKind) -> Result<String, String> {
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    domain::check_text(text, kind)?;
    Ok(text.to_owned())
}

/// A dispute id alone (the reads).
pub fn dispute_id(raw: &str) -> Result<DisputeId, DomainError> {
    DisputeId::parse(raw).map_err(|why| DomainError::invalid("dispute_id", why))
}

/// An order id alone (the reads).
pub fn order_id(raw: &str) -> Result<PartyId, DomainError> {
    PartyId::parse(raw).map_err(|why| DomainError::invalid("order_id", why))
}

fn register_order(req: &pb::RegisterOrderRequest) -> Result<RegisterOrder, DomainError> {
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
        Some(RegisterOrder {
            order: NewOrder {
                order_id: order_id?,
                buyer_id: buyer_id?,
                seller_id: seller_id?,
                amount: amount?,
                protection_ends_at: protection_ends_at?,
            },
            request_id: request_id?,
        })
    })
}

impl EvidencePrefixes {
    /// Checks a request's `evidence_urls`: how many, and each one's length, characters
    /// and prefix. The URLs when all are fine.
    fn check_all(&self, urls: &[String], v: &mut Violations) -> Option<Vec<String>> {
        let before = v.0.len();
        if urls.len() > domain::MAX_EVIDENCE_URLS {
            // Too many to be worth checking one by one.
            v.0.push(FieldViolation::new(
                "evidence_urls",
                format!("must have at most {} entries", domain::MAX_EVIDENCE_URLS),
            ));
        } else {
            for (i, url) in urls.iter().enumerate() {
                let field = format!("evidence_urls[{i}]");
                if url.is_empty() {
                    v.0.push(FieldViolation::new(field, "must not be empty"));
                } else if let Some(()) = v.check(
                    &field,
                    bounded_text(url, domain::MAX_EVIDENCE_URL_CHARS, Line).map(drop),
                ) {
                    v.check(&field, self.check(url));
                }
            }
        }
        (v.0.len() == before).then(|| urls.to_vec())
    }
}

impl OpenDispute {
    /// Parses OpenDispute; evidence must point where `evidence` allows.
    pub fn parse(
        req: &pb::OpenDisputeRequest,
        evidence: &EvidencePrefixes,
    ) -> Result<Self, DomainError> {
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
            bounded_text(&req.description, domain::MAX_DESCRIPTION_CHARS, Free),
        );
        let evidence_urls = evidence.check_all(&req.evidence_urls, &mut v);
        let request_id = v.check("request_id", RequestId::parse(&req.request_id));
        v.finish(|| {
            Some(OpenDispute {
                dispute: NewDispute {
                    order_id: order_id?,
                    reason: reason?,
                    remedy: remedy?,
                    description: description?,
                    evidence_urls: evidence_urls?,
                },
                request_id: request_id?,
            })
        })
    }
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
        Ok(
            remedy @ (pb::Remedy::FullRefund
            | pb::Remedy::ReturnAndRefund
            | pb::Remedy::Replacement),
        ) => {
            if amount.is_some() {
                v.0.push(FieldViolation::new(
                    amount_field,
                    format!("must be unset unless {field} is PARTIAL_REFUND"),
                ));
            }
            Some(match remedy {
                pb::Remedy::FullRefund => Remedy::FullRefund,
                pb::Remedy::ReturnAndRefund => Remedy::ReturnAndRefund,
                _ => Remedy::Replacement,
            })
        }
        Ok(pb::Remedy::Unspecified) | Err(_) => v.check(
            field,
            Err("must be FULL_REFUND, PARTIAL_REFUND, RETURN_AND_REFUND or REPLACEMENT".into()),
        ),
    }
}

/// A command on one dispute, its id and the request id.
pub struct DisputeRequest {
    pub dispute_id: DisputeId,
    pub command: DisputeCommand,
    pub request_id: RequestId,
}

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
    v.finish(|| {
        Some(DisputeRequest {
            dispute_id: dispute_id?,
            command: command?,
            request_id: request_id?,
        })
    })
}

fn cancel_dispute(req: &pb::CancelDisputeRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::Cancel(CancelVia::Dispute))
    })
}

fn cancel_return(req: &pb::CancelReturnRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::Cancel(CancelVia::Return))
    })
}

fn accept_proposal(req: &pb::AcceptProposalRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::AcceptProposal)
    })
}

fn confirm_return_received(
    req: &pb::ConfirmReturnReceivedRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::ConfirmReturnReceived)
    })
}

fn respond_to_dispute(req: &pb::RespondToDisputeRequest) -> Result<DisputeRequest, DomainError> {
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
                // A counter-offer is explained: the buyer decides on it from this.
                let message = v.check(
                    "message",
                    required_text(&req.message, domain::MAX_NOTE_CHARS, Free),
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

fn escalate_dispute(req: &pb::EscalateDisputeRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let reason = v.check(
            "reason",
            required_text(&req.reason, domain::MAX_NOTE_CHARS, Free),
        );
        Some(DisputeCommand::Escalate { reason: reason? })
    })
}

/// A shipment's carrier and tracking number (a return's or a replacement's).
fn shipment(carrier: &str, tracking_number: &str, v: &mut Violations) -> Option<(String, String)> {
    let carrier = v.check(
        "carrier",
        required_text(carrier, domain::MAX_CARRIER_CHARS, Line),
    );
    let tracking_number = v.check(
        "tracking_number",
        required_text(tracking_number, domain::MAX_TRACKING_CHARS, Line),
    );
    Some((carrier?, tracking_number?))
}

fn submit_return_shipment(
    req: &pb::SubmitReturnShipmentRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let (carrier, tracking_number) = shipment(&req.carrier, &req.tracking_number, v)?;
        Some(DisputeCommand::SubmitReturnShipment {
            carrier,
            tracking_number,
        })
    })
}

fn submit_replacement_shipment(
    req: &pb::SubmitReplacementShipmentRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let (carrier, tracking_number) = shipment(&req.carrier, &req.tracking_number, v)?;
        Some(DisputeCommand::SubmitReplacementShipment {
            carrier,
            tracking_number,
        })
    })
}

fn confirm_replacement_received(
    req: &pb::ConfirmReplacementReceivedRequest,
) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |_| {
        Some(DisputeCommand::ConfirmReplacementReceived)
    })
}

fn add_internal_note(req: &pb::AddInternalNoteRequest) -> Result<DisputeRequest, DomainError> {
    dispute_request(&req.dispute_id, &req.request_id, |v| {
        let text = v.check(
            "text",
            required_text(&req.text, domain::MAX_MESSAGE_CHARS, Free),
        );
        Some(DisputeCommand::AddInternalNote { text: text? })
    })
}

impl DisputeRequest {
    /// Parses PostDisputeMessage; evidence must point where `evidence` allows.
    pub fn post_message(
        req: &pb::PostDisputeMessageRequest,
        evidence: &EvidencePrefixes,
    ) -> Result<Self, DomainError> {
        dispute_request(&req.dispute_id, &req.request_id, |v| {
            let text = v.check(
                "text",
                required_text(&req.text, domain::MAX_MESSAGE_CHARS, Free),
            );
            let evidence_urls = evidence.check_all(&req.evidence_urls, v);
            Some(DisputeCommand::PostMessage {
                text: text?,
                evidence_urls: evidence_urls?,
            })
        })
    }
}

fn extend_protection(req: &pb::ExtendProtectionRequest) -> Result<ExtendProtection, DomainError> {
    let mut v = Violations::default();
    let order_id = v.check("order_id", PartyId::parse(&req.order_id));
    let new_end = v.check("new_end", timestamp(req.new_end.as_ref()));
    let request_id = v.check("request_id", RequestId::parse(&req.request_id));
    v.finish(|| {
        Some(ExtendProtection {
            order_id: order_id?,
            new_end: new_end?,
            request_id: request_id?,
        })
    })
}

fn required_text(text: &str, max: usize, kind: TextKind) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("is required".into());
    }
    bounded_text(text, max, kind)
}

fn resolve_funds(req: &pb::ResolveFundsRequest) -> Result<DisputeRequest, DomainError> {
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
        let note = v.check(
            "note",
            bounded_text(&req.note, domain::MAX_NOTE_CHARS, Free),
        );
        Some(DisputeCommand::Resolve {
            resolution: resolution?,
            note: note?,
        })
    })
}

impl ListDisputes {
    /// Parses ListDisputes. `open` gives the position a page token stands for, given the
    /// filter it must have been issued for (`None`: not such a token); it is asked only
    /// when the filter itself is valid.
    pub fn parse(
        req: &pb::ListDisputesRequest,
        open: impl FnOnce(&DisputeFilter, bool, &str) -> Option<ListPosition>,
    ) -> Result<Self, DomainError> {
        let mut v = Violations::default();
        let page_size = v.check("page_size", tokens::page_size(req.page_size));
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
        let mut states = Vec::new();
        for (i, &raw) in req.states.iter().enumerate() {
            if let Some(state) = v.check(&format!("states[{i}]"), enum_value(raw, state_from_pb)) {
                states.push(state);
            }
        }
        // Both given: a dispute must be in both.
        let states = match (state, req.states.is_empty()) {
            (None, true) => None,
            (None, false) => Some(states),
            (Some(state), true) => Some(vec![state]),
            (Some(state), false) => Some(states.into_iter().filter(|s| *s == state).collect()),
        };
        let order = match pb::ListOrder::try_from(req.order_by) {
            Ok(pb::ListOrder::Unspecified | pb::ListOrder::CreatedDesc) => ListOrder::Created,
            Ok(pb::ListOrder::UpdatedDesc) => ListOrder::Updated,
            Err(_) => {
                v.0.push(FieldViolation::new(
                    "order_by",
                    "must be one of the enum's values",
                ));
                ListOrder::Created
            }
        };
        let filter_valid = v.0.iter().all(|violation| violation.field == "page_size");
        let mut filter = DisputeFilter {
            order_id,
            buyer_id,
            seller_id,
            states,
            order,
            after: None,
        };
        if !req.page_token.is_empty() {
            let opened = filter_valid
                .then(|| open(&filter, req.needs_my_action, &req.page_token))
                .flatten();
            if opened.is_none() {
                v.0.push(FieldViolation::new(
                    "page_token",
                    "is not a page token this service issued for this caller and filter",
                ));
            }
            filter.after = opened;
        }
        v.finish(|| {
            Some(ListDisputes {
                filter,
                needs_my_action: req.needs_my_action,
                page_size: page_size?,
            })
        })
    }
}

impl ListDisputeEvents {
    /// Parses ListDisputeEvents. `open` gives the sequence number a page token stands for,
    /// given the dispute it must have been issued for (`None`: not such a token).
    pub fn parse(
        req: &pb::ListDisputeEventsRequest,
        open: impl FnOnce(DisputeId, &str) -> Option<i32>,
    ) -> Result<Self, DomainError> {
        let mut v = Violations::default();
        let dispute_id = v.check("dispute_id", DisputeId::parse(&req.dispute_id));
        let page_size = v.check("page_size", tokens::page_size(req.page_size));
        let after_seq = match (req.page_token.as_str(), dispute_id) {
            ("", _) => Some(0),
            (token, Some(dispute_id)) => v.check(
                "page_token",
                open(dispute_id, token).ok_or_else(|| {
                    "is not a page token this service issued for this caller and dispute".to_owned()
                }),
            ),
            (_, None) => None,
        };
        v.finish(|| {
            Some(ListDisputeEvents {
                dispute_id: dispute_id?,
                after_seq: after_seq?,
                page_size: page_size?,
            })
        })
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

/// RegisterOrder, parsed.
pub struct RegisterOrder {
    pub order: NewOrder,
    pub request_id: RequestId,
}

/// OpenDispute, parsed.
pub struct OpenDispute {
    pub dispute: NewDispute,
    pub request_id: RequestId,
}

/// GetSellerDisputeStats, parsed.
pub struct SellerStatsRequest {
    pub seller_id: PartyId,
    pub window: domain::StatsWindow,
}

impl TryFrom<&pb::GetSellerDisputeStatsRequest> for SellerStatsRequest {
    type Error = DomainError;

    fn try_from(req: &pb::GetSellerDisputeStatsRequest) -> Result<Self, DomainError> {
        let mut v = Violations::default();
        let seller_id = v.check("seller_id", PartyId::parse(&req.seller_id));
        let window = v.check("window", stats_window(req.window.as_ref()));
        v.finish(|| {
            Some(SellerStatsRequest {
                seller_id: seller_id?,
                window: window?,
            })
        })
    }
}

/// A stats window: unset for the default, else a whole number of days.
fn stats_window(window: Option<&prost_types::Duration>) -> Result<domain::StatsWindow, String> {
    const DAY: i64 = 24 * 3600;
    let Some(window) = window else {
        return Ok(domain::StatsWindow::default());
    };
    let days = (window.nanos == 0 && window.seconds > 0 && window.seconds % DAY == 0)
        .then(|| u32::try_from(window.seconds / DAY).ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "must be whole days (a multiple of 86400s), 1 to {} days",
                domain::MAX_WINDOW_DAYS
            )
        })?;
    domain::StatsWindow::of_days(days)
}

/// ExtendProtection, parsed.
pub struct ExtendProtection {
    pub order_id: PartyId,
    pub new_end: DateTime<Utc>,
    pub request_id: RequestId,
}

/// ListDisputes, parsed: the filter (with the page token's position), whether only the
/// caller's moves are asked for, and the page size.
pub struct ListDisputes {
    pub filter: DisputeFilter,
    pub needs_my_action: bool,
    pub page_size: usize,
}

/// ListDisputeEvents, parsed: the history after `after_seq`.
pub struct ListDisputeEvents {
    pub dispute_id: DisputeId,
    pub after_seq: i32,
    pub page_size: usize,
}

/// `impl TryFrom<&Request> for Command` by the parsing function above.
macro_rules! parsed_by {
    ($($request:ty => $command:ty: $parse:ident;)+) => {$(
        impl TryFrom<&$request> for $command {
            type Error = DomainError;

            fn try_from(request: &$request) -> Result<Self, DomainError> {
                $parse(request)
            }
        }
    )+};
}

parsed_by! {
    pb::RegisterOrderRequest => RegisterOrder: register_order;
    pb::CancelDisputeRequest => DisputeRequest: cancel_dispute;
    pb::CancelReturnRequest => DisputeRequest: cancel_return;
    pb::ResolveFundsRequest => DisputeRequest: resolve_funds;
    pb::RespondToDisputeRequest => DisputeRequest: respond_to_dispute;
    pb::AcceptProposalRequest => DisputeRequest: accept_proposal;
    pb::EscalateDisputeRequest => DisputeRequest: escalate_dispute;
    pb::SubmitReturnShipmentRequest => DisputeRequest: submit_return_shipment;
    pb::ConfirmReturnReceivedRequest => DisputeRequest: confirm_return_received;
    pb::SubmitReplacementShipmentRequest => DisputeRequest: submit_replacement_shipment;
    pb::AddInternalNoteRequest => DisputeRequest: add_internal_note;
    pb::ConfirmReplacementReceivedRequest => DisputeRequest: confirm_replacement_received;
    pb::ExtendProtectionRequest => ExtendProtection: extend_protection;
}
