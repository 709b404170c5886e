//! The maximum connection age (README, "Scaling"): at the age the server asks the client
//! to go away (GOAWAY, calls under way finish), at age + grace it closes what is left.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dispute_service::{
    client::{self, Retry},
    domain::Role,
    grpc::pb,
};
use hyper_util::rt::TokioIo;
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::helpers::*;

/// What one caller saw.
#[derive(Default)]
struct Calls {
    answered: u64,
    failed: BTreeMap<String, u64>,
    transparent: u64,
    unknown: u64,
}

/// A channel to `app` that counts the TCP connections it makes in `connects`.
async fn counted_channel(app: &TestApp, connects: Arc<AtomicU64>) -> Channel {
    let addr = app.addr;
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            connects.fetch_add(1, Ordering::Relaxed);
            async move { TcpStream::connect(addr).await.map(TokioIo::new) }
        }))
        .await
        .expect("connecting to the test server")
}

/// One RPC through `client::call`, what every Rust caller of the service is told to do.
async fn counted<T, F, Fut>(calls: &mut Calls, attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let (mut transparent, mut unknown) = (0, 0);
    let result = client::call(attempt, |retry, _| match retry {
        Retry::Transparent => transparent += 1,
        Retry::UnknownOutcome => unknown += 1,
    })
    .await;
    calls.transparent += transparent;
    calls.unknown += unknown;
    match result {
        Ok(response) => {
            calls.answered += 1;
            Some(response.into_inner())
        }
        Err(status) => {
            *calls
                .failed
                .entry(format!("{:?}: {}", status.code(), status.message()))
                .or_default() += 1;
            None
        }
    }
}

/// 8 callers, each on a connection of its own, for 5 s against a server whose connections
/// go away every half second: every connection is replaced several times, and not one call
/// fails — nor is any cut while under way (a retry with its request_id would hide that;
/// only calls refused before processing may be sent again). Before the fix, the server
/// (tonic's `max_connection_age_grace`) sent no GOAWAY and closed each connection at age
/// + grace with its call under way, and a call refused as its connection went away was
/// treated as one whose outcome is unknown.
#[sqlx::test]
async fn calls_across_connection_age_goaways_are_never_cut_or_lost(pool: PgPool) {
    const CALLERS: u64 = 8;
    const RUN: Duration = Duration::from_secs(5);
    let app = spawn_app_with(
        pool,
        &[
            "--max-connection-age",
            "500ms",
            "--max-connection-age-grace",
            "1s",
        ],
    )
    .await;
    let connects = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let channel = counted_channel(&app, connects.clone()).await;
        let service = with_token(channel.clone(), Role::Service, "order-service");
        let buyer = with_token(channel, Role::Buyer, "buyer-1");
        let ends = app.now() + chrono::Duration::days(30);
        callers.push(tokio::spawn(async move {
            let mut calls = Calls::default();
            let mut n = 0;
            while started.elapsed() < RUN {
                n += 1;
                let order_id = format!("goaway-{caller}-{n}");
                let register = register_request(&order_id, ends);
                let registered = counted(&mut calls, || {
                    let (mut client, request) = (service.clone(), register.clone());
                    async move { client.register_order(request).await }
                })
                .await;
                if registered.is_none() {
                    continue;
                }
                let open = open_request(&order_id, pb::Remedy::FullRefund);
                let Some(opened) = counted(&mut calls, || {
                    let (mut client, request) = (buyer.clone(), open.clone());
                    async move { client.open_dispute(request).await }
                })
                .await
                else {
                    continue;
                };
                let dispute_id = opened.dispute.unwrap().dispute_id;
                for _ in 0..8 {
                    let get = pb::GetDisputeRequest {
                        dispute_id: dispute_id.clone(),
                    };
                    counted(&mut calls, || {
                        let (mut client, request) = (buyer.clone(), get.clone());
                        async move { client.get_dispute(request).await }
                    })
                    .await;
                }
            }
            calls
        }));
    }
    let mut all = Calls::default();
    for caller in callers {
        let calls = caller.await.unwrap();
        all.answered += calls.answered;
        all.transparent += calls.transparent;
        all.unknown += calls.unknown;
        for (code, n) in calls.failed {
            *all.failed.entry(code).or_default() += n;
        }
    }
    let connections = connects.load(Ordering::Relaxed);
    eprintln!(
        "{} calls answered, {} failed, {} sent again as refused before processing, {} with an unknown outcome; {connections} connections for {CALLERS} callers",
        all.answered,
        all.failed.values().sum::<u64>(),
        all.transparent,
        all.unknown,
    );
    assert!(all.answered > 0);
    assert!(all.failed.is_empty(), "failed calls: {:?}", all.failed);
    assert_eq!(
        all.unknown, 0,
        "calls failed while under way (retried with their request_id)"
    );
    // About two connections per caller per second; at age + grace (tonic's own grace,
    // before the fix) it would be one every 1.5 s, 4 in all.
    assert!(
        connections >= CALLERS * 6,
        "only {connections} connections for {CALLERS} callers in {RUN:?}: no GOAWAY at the age?"
    );
}

/// A stream still open at age + grace is ended (its consumer resumes from its cursor), and
/// the client's channel reconnects for the next call.
#[sqlx::test]
async fn a_stream_still_open_at_age_plus_grace_is_ended(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            "--max-connection-age",
            "1s",
            "--max-connection-age-grace",
            "1s",
        ],
    )
    .await;
    // The connection's lifetime runs from its accept: start counting before it.
    let opened = Instant::now();
    let channel = app.channel().await;
    let mut service = with_token(channel, Role::Service, "order-service");
    let mut stream = service
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("opening a stream")
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived age + grace by far");
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(1900),
        "ended after {lasted:?}, before age + grace"
    );
    // The same channel serves the next call on a new connection.
    service
        .register_order(register_request(
            "after-the-stream",
            app.now() + chrono::Duration::days(30),
        ))
        .await
        .expect("a call after the connection was closed");
}
