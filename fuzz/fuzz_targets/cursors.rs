//! Page tokens and stream cursors: any string a client sends where the service expects
//! one it issued. Nothing may panic; a cursor that parses must print back to itself.
#![no_main]

use dispute_service::grpc::{
    parse::{ListDisputeEvents, ListDisputes},
    pb,
    tokens::{cursor, parse_cursor},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(Some(position)) = parse_cursor(&text) {
        assert_eq!(parse_cursor(&cursor(position)), Ok(Some(position)));
    }
    let _ = ListDisputes::try_from(&pb::ListDisputesRequest {
        buyer_id: "buyer-1".into(),
        page_token: text.clone(),
        ..Default::default()
    });
    let _ = ListDisputeEvents::try_from(&pb::ListDisputeEventsRequest {
        dispute_id: "01a218a2-80c4-7226-9eb1-3ae75d3633c8".into(),
        page_token: text,
        page_size: 10,
    });
});
