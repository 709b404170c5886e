//! The database spelling of domain enums. Unknown spellings are corrupt rows.

use crate::domain::{Currency, DisputeState, Money, Outcome, Reason, Remedy, ReturnStatus};

use super::StoreError;

macro_rules! spelling {
    ($ty:ty, $to:ident, $from:ident, { $($variant:path => $text:literal),+ $(,)? }) => {
        pub fn $to(value: $ty) -> &'static str {
            match value { $($variant => $text),+ }
        }
        pub fn $from(text: &str) -> Result<$ty, StoreError> {
            match text {
                $($text => Ok($variant),)+
                other => Err(StoreError::Corrupt(format!("unknown {} {other:?}", stringify!($ty)))),
            }
        }
    };
}

spelling!(Reason, reason_str, parse_reason, {
    Reason::ItemNotReceived => "ITEM_NOT_RECEIVED",
    Reason::NotAsDescribed => "NOT_AS_DESCRIBED",
    Reason::QualityIssue => "QUALITY_ISSUE",
});

spelling!(DisputeState, state_str, parse_state, {
    DisputeState::AwaitingSeller => "AWAITING_SELLER",
    DisputeState::Negotiating => "NEGOTIATING",
    DisputeState::AwaitingReturnShipment => "AWAITING_RETURN_SHIPMENT",
    DisputeState::ReturnInTransit => "RETURN_IN_TRANSIT",
    DisputeState::UnderReview => "UNDER_REVIEW",
    DisputeState::Cancelled => "CANCELLED",
    DisputeState::Resolved => "RESOLVED",
    DisputeState::AwaitingReplacementShipment => "AWAITING_REPLACEMENT_SHIPMENT",
    DisputeState::ReplacementInTransit => "REPLACEMENT_IN_TRANSIT",
});

spelling!(Outcome, outcome_str, parse_outcome, {
    Outcome::CancelledByBuyer => "CANCELLED_BY_BUYER",
    Outcome::ResolvedBuyerFavour => "RESOLVED_BUYER_FAVOUR",
    Outcome::ResolvedPartial => "RESOLVED_PARTIAL",
    Outcome::ResolvedSellerFavour => "RESOLVED_SELLER_FAVOUR",
});

spelling!(ReturnStatus, return_status_str, parse_return_status, {
    ReturnStatus::Requested => "REQUESTED",
    ReturnStatus::AwaitingShipment => "AWAITING_SHIPMENT",
    ReturnStatus::InTransit => "IN_TRANSIT",
    ReturnStatus::Received => "RECEIVED",
    ReturnStatus::Cancelled => "CANCELLED",
});

/// A remedy as its three columns: kind, and the refund's currency and amount when partial.
pub fn remedy_columns(remedy: Remedy) -> (&'static str, Option<String>, Option<i64>) {
    match remedy {
        Remedy::FullRefund => ("FULL_REFUND", None, None),
        Remedy::PartialRefund(refund) => (
            "PARTIAL_REFUND",
            Some(refund.currency.as_str().to_owned()),
            Some(refund.minor),
        ),
        Remedy::ReturnAndRefund => ("RETURN_AND_REFUND", None, None),
        Remedy::Replacement => ("REPLACEMENT", None, None),
    }
}

pub fn parse_remedy(
    kind: &str,
    currency: Option<&str>,
    minor: Option<i64>,
) -> Result<Remedy, StoreError> {
    match (kind, currency, minor) {
        ("FULL_REFUND", None, None) => Ok(Remedy::FullRefund),
        ("RETURN_AND_REFUND", None, None) => Ok(Remedy::ReturnAndRefund),
        ("REPLACEMENT", None, None) => Ok(Remedy::Replacement),
        ("PARTIAL_REFUND", Some(currency), Some(minor)) => {
            let currency = Currency::parse(currency).map_err(StoreError::Corrupt)?;
            Ok(Remedy::PartialRefund(Money::new(currency, minor)))
        }
        (kind, _, _) => Err(StoreError::Corrupt(format!(
            "remedy {kind} with inconsistent amount"
        ))),
    }
}
