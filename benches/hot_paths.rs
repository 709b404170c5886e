//! The pure work on every request's path, without I/O: parsing a request, verifying a
//! token, the domain's decision, encoding the answer. `cargo bench --bench hot_paths`.

use std::{hint::black_box, time::Duration};

use chrono::{TimeZone, Utc};
use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use dispute_service::{
    config::{Cli, Command},
    domain::{self, Actor, DisputeId, NewOrder, PartyId, Registration, Role},
    grpc::{
        auth::{self, Authenticator},
        encode::dispute_to_pb,
        parse::{EvidencePrefixes, OpenDispute},
        pb,
    },
};
use prost::Message;

fn evidence() -> EvidencePrefixes {
    EvidencePrefixes::new(vec!["s3://".into(), "https://cdn.example".into()]).unwrap()
}

fn open_request() -> pb::OpenDisputeRequest {
    pb::OpenDisputeRequest {
        order_id: "order-1001".into(),
        reason: pb::DisputeReason::NotAsDescribed as i32,
        remedy: pb::Remedy::PartialRefund as i32,
        refund_amount: Some(pb::Money {
            currency_code: "USD".into(),
            amount_minor: 1_500,
        }),
        description: "the colour is not the one in the listing".into(),
        evidence_urls: vec!["s3://evidence/1.jpg".into(), "s3://evidence/2.jpg".into()],
        request_id: "01a218a2-80c4-7226-9eb1-3ae75d3633c8".into(),
    }
}

fn hot_paths(c: &mut Criterion) {
    let request = open_request();
    let bytes = request.encode_to_vec();
    c.bench_function("decode + parse OpenDisputeRequest", |b| {
        b.iter(|| {
            let decoded = pb::OpenDisputeRequest::decode(black_box(bytes.as_slice())).unwrap();
            OpenDispute::parse(&decoded, &evidence())
                .map(|_| ())
                .unwrap()
        })
    });

    let Command::Serve(config) = Cli::parse_from([
        "dispute-service",
        "serve",
        "--database-url",
        "postgres://unused",
        "--jwt-hs256-secret",
        "bench-secret-0123456789abcdef0123",
    ])
    .command
    else {
        unreachable!()
    };
    let authenticator = Authenticator::from_config(&config.auth).unwrap();
    let token = auth::mint_hs256(
        &config.auth,
        Role::Buyer,
        "buyer-1",
        Duration::from_secs(3600),
    )
    .unwrap();
    let header = format!("Bearer {token}");
    c.bench_function("verify an HS256 token", |b| {
        b.iter(|| {
            authenticator
                .authenticate(Some(black_box(&header)))
                .unwrap()
        })
    });

    let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let id = |s: &str| PartyId::parse(s).unwrap();
    let Ok(Registration::Created(order)) = domain::register(
        None,
        NewOrder {
            order_id: id("order-1001"),
            buyer_id: id("buyer-1"),
            seller_id: id("seller-1"),
            amount: domain::Money::positive("USD", 4_999).unwrap(),
            protection_ends_at: now + chrono::Duration::days(30),
        },
    ) else {
        unreachable!()
    };
    let new = OpenDispute::parse(&request, &evidence()).unwrap().dispute;
    let buyer = Actor::new(Role::Buyer, "buyer-1");
    c.bench_function("domain: open a dispute", |b| {
        b.iter(|| {
            domain::open(
                black_box(&order),
                false,
                new.clone(),
                &buyer,
                3,
                DisputeId::new(),
                now,
            )
            .unwrap()
        })
    });

    let change = domain::open(&order, false, new, &buyer, 3, DisputeId::new(), now).unwrap();
    c.bench_function("encode a Dispute (protobuf)", |b| {
        b.iter(|| dispute_to_pb(black_box(&change.dispute), None).encode_to_vec())
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
