//! Every request type: decoded from arbitrary bytes, then parsed and validated as the
//! service does. Nothing may panic; whatever parses must satisfy the rules the parser
//! promises (checked by the parser's own types).
#![no_main]

use dispute_service::grpc::{
    parse::{
        DisputeRequest, EvidencePrefixes, ExtendProtection, ListDisputeEvents, ListDisputes,
        OpenDispute, RegisterOrder, SellerStatsRequest,
    },
    pb,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `body` as `$request` and parses it into `$command`.
macro_rules! parse {
    ($body:expr, $request:ty => $command:ty) => {
        if let Ok(request) = <$request>::decode($body) {
            let _ = <$command>::try_from(&request);
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 17 {
        0 => parse!(body, pb::RegisterOrderRequest => RegisterOrder),
        1 => {
            if let Ok(request) = pb::OpenDisputeRequest::decode(body) {
                let evidence = EvidencePrefixes::new(vec!["s3://".into(), "https://cdn.example".into()]).unwrap();
                let _ = OpenDispute::parse(&request, &evidence);
            }
        }
        2 => parse!(body, pb::CancelDisputeRequest => DisputeRequest),
        3 => parse!(body, pb::CancelReturnRequest => DisputeRequest),
        4 => parse!(body, pb::ResolveFundsRequest => DisputeRequest),
        5 => parse!(body, pb::RespondToDisputeRequest => DisputeRequest),
        6 => parse!(body, pb::AcceptProposalRequest => DisputeRequest),
        7 => parse!(body, pb::EscalateDisputeRequest => DisputeRequest),
        8 => parse!(body, pb::SubmitReturnShipmentRequest => DisputeRequest),
        9 => parse!(body, pb::ConfirmReturnReceivedRequest => DisputeRequest),
        10 => parse!(body, pb::ExtendProtectionRequest => ExtendProtection),
        11 => {
            if let Ok(request) = pb::ListDisputesRequest::decode(body) {
                let _ = ListDisputes::parse(&request, |_, _, _| None);
            }
        }
        12 => parse!(body, pb::SubmitReplacementShipmentRequest => DisputeRequest),
        13 => parse!(body, pb::ConfirmReplacementReceivedRequest => DisputeRequest),
        14 => {
            if let Ok(request) = pb::PostDisputeMessageRequest::decode(body) {
                let evidence = EvidencePrefixes::new(vec!["s3://".into(), "https://cdn.example".into()]).unwrap();
                let _ = DisputeRequest::post_message(&request, &evidence);
            }
        }
        15 => parse!(body, pb::GetSellerDisputeStatsRequest => SellerStatsRequest),
        _ => {
            if let Ok(request) = pb::ListDisputeEventsRequest::decode(body) {
                let _ = ListDisputeEvents::parse(&request, |_, _| None);
            }
        }
    }
});
