//! The operations each scenario repeats. An operation may be several RPCs; each RPC's
//! latency is recorded under its name, the operation's as a whole.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use chrono::Utc;
use dispute_service::{
    client::{self, Retry},
    config::{AsymmetricAlgorithm, AuthConfig, Secret},
    domain::Role,
    grpc::{
        auth,
        pb::{self, dispute_service_client::DisputeServiceClient},
    },
};
use hdrhistogram::Histogram;
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{args::Args, report};

/// Buyers the orders are spread over (and sellers, unless `--sellers` says otherwise).
pub const PARTIES: u64 = 100;
/// The order amount, minor units.
const AMOUNT: i64 = 10_000;

#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Client = DisputeServiceClient<InterceptedService<Channel, Bearer>>;

/// Clients for every actor the scenarios use, over one connection per caller task.
#[derive(Clone)]
pub struct Actors {
    pub service: Client,
    pub agent: Client,
    buyers: Vec<Client>,
    sellers: Vec<Client>,
}

impl Actors {
    pub fn new(channel: Channel, args: &Args) -> anyhow::Result<Self> {
        let client = |role, sub: &str| client(&channel, args, role, sub);
        Ok(Self {
            service: client(Role::Service, "loadgen")?,
            agent: client(Role::Agent, "loadgen-agent")?,
            buyers: (0..PARTIES)
                .map(|i| client(Role::Buyer, &buyer(i)))
                .collect::<Result<_, _>>()?,
            sellers: (0..args.sellers)
                .map(|i| client(Role::Seller, &seller(i)))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn buyer(&self, n: u64) -> Client {
        self.buyers[(n % PARTIES) as usize].clone()
    }

    /// The seller of order `n`, and its client.
    pub fn seller(&self, n: u64) -> Client {
        self.sellers[(n % self.sellers.len() as u64) as usize].clone()
    }

    /// The seller id of order `n`.
    pub fn seller_id(&self, n: u64) -> String {
        seller(n % self.sellers.len() as u64)
    }
}

/// A client on `channel` whose calls carry a token for `role` and `sub`.
pub fn client(channel: &Channel, args: &Args, role: Role, sub: &str) -> anyhow::Result<Client> {
    let config = AuthConfig {
        jwt_hs256_secret: Some(Secret::new(args.secret.clone())),
        jwt_public_key_file: None,
        jwt_jwks_file: None,
        jwt_algorithm: AsymmetricAlgorithm::Rs256,
        jwt_issuer: args.issuer.clone(),
        jwt_audience: args.audience.clone(),
        jwt_keys_refresh: Duration::from_secs(60),
        jwt_keys_min_refresh: Duration::from_secs(5),
        jwt_max_lifetime: Duration::from_secs(24 * 3600),
    };
    let token = auth::mint_hs256(&config, role, sub, Duration::from_secs(24 * 3600))?;
    let value = format!("Bearer {token}").parse()?;
    Ok(DisputeServiceClient::with_interceptor(
        channel.clone(),
        Bearer(value),
    ))
}

pub fn buyer(n: u64) -> String {
    format!("lg-b{}", n % PARTIES)
}

fn seller(n: u64) -> String {
    format!("lg-s{n}")
}

/// Latencies of one caller task: per RPC, and per operation.
pub struct Recorder {
    pub rpcs: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    /// Calls sent again after a transport failure that left their outcome unknown, by RPC
    /// and code.
    pub retried: BTreeMap<String, u64>,
    /// Calls sent again because they were refused before processing (their connection was
    /// going away), by RPC and code: what grpc-go and grpcio do by themselves.
    pub transparent: BTreeMap<String, u64>,
    pub recording: bool,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            rpcs: BTreeMap::new(),
            errors: BTreeMap::new(),
            retried: BTreeMap::new(),
            transparent: BTreeMap::new(),
            recording: false,
        }
    }

    /// Times one RPC; a failure is counted by code and ends the operation. The call goes
    /// through `dispute_service::client::call`, what every Rust client of the service is
    /// told to do (README, "Scaling"): a call refused before processing (its connection
    /// was going away) is sent again at once; one whose outcome is unknown is sent again as
    /// it was — every write carries its request_id, so a retry is answered with the first
    /// reply and never applied twice (README, "Idempotency").
    pub async fn time<T, F, Fut>(&mut self, rpc: &'static str, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let recording = self.recording;
        let (retried, transparent) = (&mut self.retried, &mut self.transparent);
        let result = client::call(call, |retry, status| {
            if !recording {
                return;
            }
            let counts = match retry {
                Retry::Transparent => &mut *transparent,
                Retry::UnknownOutcome => &mut *retried,
            };
            *counts
                .entry(format!("{rpc}:{:?}", status.code()))
                .or_default() += 1;
        })
        .await;
        if self.recording {
            match &result {
                Ok(_) => {
                    let us = started.elapsed().as_micros().max(1) as u64;
                    let _ = self
                        .rpcs
                        .entry(rpc)
                        .or_insert_with(report::histogram)
                        .record(us);
                }
                Err(status) => {
                    *self
                        .errors
                        .entry(format!("{rpc}:{:?}", status.code()))
                        .or_default() += 1;
                }
            }
        }
        result.map(tonic::Response::into_inner)
    }
}

/// A call `Recorder::time` can repeat: `client.method(request)` on fresh clones.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let (client, request) = ($client.clone(), $request);
        move || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.$method(request).await }
        }
    }};
}

/// Unique order ids for this run.
pub struct Ids {
    run: String,
    next: AtomicU64,
}

impl Ids {
    pub fn new() -> Self {
        Self {
            run: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(),
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn order(&self, n: u64) -> String {
        format!("lg-{}-{n}", self.run)
    }
}

fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RegisterOrder then OpenDispute with `remedy`; the new dispute's id.
pub async fn open(
    actors: &Actors,
    ids: &Ids,
    n: u64,
    remedy: pb::Remedy,
    rec: &mut Recorder,
) -> Result<String, Status> {
    register(actors, ids, n, rec).await?;
    open_dispute(actors, ids, n, remedy, rec).await
}

/// RegisterOrder of order `n`.
pub async fn register(
    actors: &Actors,
    ids: &Ids,
    n: u64,
    rec: &mut Recorder,
) -> Result<(), Status> {
    let order_id = ids.order(n);
    let ends = Utc::now() + chrono::Duration::days(30);
    let register = pb::RegisterOrderRequest {
        order_id: order_id.clone(),
        buyer_id: buyer(n),
        seller_id: actors.seller_id(n),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            amount_minor: AMOUNT,
        }),
        protection_ends_at: Some(prost_types::Timestamp {
            seconds: ends.timestamp(),
            nanos: 0,
        }),
        request_id: request_id(),
    };
    rec.time(
        "RegisterOrder",
        rpc!(actors.service, register_order, register),
    )
    .await?;
    Ok(())
}

/// OpenDispute with `remedy` on order `n` (registered), by its buyer; the new dispute's id.
pub async fn open_dispute(
    actors: &Actors,
    ids: &Ids,
    n: u64,
    remedy: pb::Remedy,
    rec: &mut Recorder,
) -> Result<String, Status> {
    let open = pb::OpenDisputeRequest {
        order_id: ids.order(n),
        reason: pb::DisputeReason::NotAsDescribed as i32,
        remedy: remedy as i32,
        refund_amount: (remedy == pb::Remedy::PartialRefund).then(|| pb::Money {
            currency_code: "USD".into(),
            amount_minor: AMOUNT / 4,
        }),
        description: "load test".into(),
        evidence_urls: vec![],
        request_id: request_id(),
    };
    let dispute = rec
        .time("OpenDispute", rpc!(actors.buyer(n), open_dispute, open))
        .await?;
    Ok(dispute.dispute.map(|d| d.dispute_id).unwrap_or_default())
}

/// Open, then one of three endings: the buyer cancels, an agent splits the funds, or the
/// whole return path (seller accepts, buyer ships, seller confirms).
pub async fn lifecycle(
    actors: &Actors,
    ids: &Ids,
    n: u64,
    rec: &mut Recorder,
) -> Result<(), Status> {
    match n % 3 {
        0 => {
            let id = open(actors, ids, n, pb::Remedy::FullRefund, rec).await?;
            let cancel = pb::CancelDisputeRequest {
                dispute_id: id,
                request_id: request_id(),
            };
            rec.time(
                "CancelDispute",
                rpc!(actors.buyer(n), cancel_dispute, cancel),
            )
            .await?;
        }
        1 => {
            let id = open(actors, ids, n, pb::Remedy::PartialRefund, rec).await?;
            let ruling = pb::ResolveFundsRequest {
                dispute_id: id,
                outcome: pb::ResolveOutcome::RefundPartial as i32,
                refund_amount: Some(pb::Money {
                    currency_code: "USD".into(),
                    amount_minor: AMOUNT / 2,
                }),
                note: "load test ruling".into(),
                request_id: request_id(),
            };
            rec.time("ResolveFunds", rpc!(actors.agent, resolve_funds, ruling))
                .await?;
        }
        _ => {
            let id = open(actors, ids, n, pb::Remedy::ReturnAndRefund, rec).await?;
            let (buyer, seller) = (actors.buyer(n), actors.seller(n));
            let accept = pb::RespondToDisputeRequest {
                dispute_id: id.clone(),
                decision: pb::SellerDecision::Accept as i32,
                request_id: request_id(),
                ..Default::default()
            };
            rec.time("RespondToDispute", rpc!(seller, respond_to_dispute, accept))
                .await?;
            let ship = pb::SubmitReturnShipmentRequest {
                dispute_id: id.clone(),
                carrier: "UPS".into(),
                tracking_number: format!("1Z{n}"),
                request_id: request_id(),
            };
            rec.time(
                "SubmitReturnShipment",
                rpc!(buyer, submit_return_shipment, ship),
            )
            .await?;
            let confirm = pb::ConfirmReturnReceivedRequest {
                dispute_id: id,
                request_id: request_id(),
            };
            rec.time(
                "ConfirmReturnReceived",
                rpc!(seller, confirm_return_received, confirm),
            )
            .await?;
        }
    }
    Ok(())
}

pub async fn read(actors: &Actors, dispute_id: String, rec: &mut Recorder) -> Result<(), Status> {
    rec.time(
        "GetDispute",
        rpc!(
            actors.agent,
            get_dispute,
            pb::GetDisputeRequest { dispute_id }
        ),
    )
    .await?;
    Ok(())
}

/// A store's dispute record over the default window, as an agent.
pub async fn stats(actors: &Actors, seller_id: &str, rec: &mut Recorder) -> Result<(), Status> {
    let request = pb::GetSellerDisputeStatsRequest {
        seller_id: seller_id.to_owned(),
        window: None,
    };
    rec.time(
        "GetSellerDisputeStats",
        rpc!(actors.agent, get_seller_dispute_stats, request),
    )
    .await?;
    Ok(())
}

pub async fn list(actors: &Actors, n: u64, rec: &mut Recorder) -> Result<(), Status> {
    let request = pb::ListDisputesRequest {
        buyer_id: buyer(n),
        page_size: 50,
        ..Default::default()
    };
    rec.time(
        "ListDisputes",
        rpc!(actors.buyer(n), list_disputes, request),
    )
    .await?;
    Ok(())
}
