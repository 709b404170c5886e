//! `loadgen`: drives a running dispute-service with one scenario at a fixed concurrency and
//! reports throughput, latency quantiles (HDR histogram), errors by code and CPU per
//! operation of the server and of PostgreSQL (from /proc). Exits non-zero on any error:
//! every scenario is written so that none is expected. See the README, "Benchmarks".

mod args;
mod procstat;
mod report;
mod scenario;

use std::{
    collections::{BTreeMap, HashMap},
    io::IsTerminal,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use dispute_service::{domain::Role, grpc::pb};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use args::{Args, Scenario};
use report::{Quantiles, Summary};
use scenario::{Actors, Ids, Recorder};

/// The run's phases, shared with every task.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;
/// Most connections the callers share (HTTP/2 multiplexes the rest).
const MAX_CONNECTIONS: usize = 16;
/// Concurrency used to create the data set of the read scenarios.
const SETUP_CONCURRENCY: u64 = 16;
/// How long the stream must be quiet for its last cursor to count as the tail.
const TAIL_QUIET: Duration = Duration::from_millis(300);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary).unwrap());
            } else {
                print!("{}", summary.text());
            }
            if summary.unexpected_errors > 0 || summary.operations == 0 {
                eprintln!(
                    "loadgen: {} operations, unexpected errors {:?}",
                    summary.operations, summary.errors
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(addr.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// What every caller task shares.
struct Shared {
    phase: AtomicU8,
    ids: Arc<Ids>,
    /// Operations left to measure in `--count` mode.
    remaining: Option<AtomicU64>,
    measured: AtomicU64,
    /// What `read`, `list` and `mixed` read (disputes) and `dispute` disputes (orders):
    /// each item's number and id.
    dataset: Vec<(u64, String)>,
    /// Orders of the data set `dispute` has taken.
    taken: AtomicU64,
}

/// One operation of the scenario.
async fn operation(
    args: &Args,
    actors: &Actors,
    shared: &Shared,
    n: u64,
    rec: &mut Recorder,
) -> Result<(), tonic::Status> {
    let pick = |n: u64| {
        shared.dataset[(n % shared.dataset.len() as u64) as usize]
            .1
            .clone()
    };
    match args.scenario {
        Scenario::Dispute => {
            let taken = shared.taken.fetch_add(1, Ordering::Relaxed) as usize;
            let Some((n, _)) = shared.dataset.get(taken) else {
                return Err(tonic::Status::resource_exhausted(
                    "every order of the data set is disputed: raise --dataset",
                ));
            };
            scenario::open_dispute(actors, &shared.ids, *n, pb::Remedy::FullRefund, rec)
                .await
                .map(drop)
        }
        Scenario::Open | Scenario::Watch => {
            scenario::open(actors, &shared.ids, n, pb::Remedy::FullRefund, rec)
                .await
                .map(drop)
        }
        Scenario::Lifecycle => scenario::lifecycle(actors, &shared.ids, n, rec).await,
        Scenario::Read => scenario::read(actors, pick(n), rec).await,
        Scenario::List => scenario::list(actors, n, rec).await,
        Scenario::Mixed if n.is_multiple_of(10) => {
            scenario::open(actors, &shared.ids, n, pb::Remedy::FullRefund, rec)
                .await
                .map(drop)
        }
        Scenario::Mixed => scenario::read(actors, pick(n), rec).await,
        Scenario::Stats => scenario::stats(actors, &args.stats_seller, rec).await,
    }
}

/// Creates `size` disputes for the read scenarios, or registers `size` orders for
/// `dispute` (not measured).
async fn dataset(
    actors: &Actors,
    ids: &Arc<Ids>,
    size: u64,
    orders_only: bool,
) -> anyhow::Result<Vec<(u64, String)>> {
    let made = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(AtomicU64::new(size));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_CONCURRENCY {
        let (actors, ids, made, left) = (actors.clone(), ids.clone(), made.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let n = ids.next();
                let id = if orders_only {
                    scenario::register(&actors, &ids, n, &mut rec).await?;
                    ids.order(n)
                } else {
                    scenario::open(&actors, &ids, n, pb::Remedy::FullRefund, &mut rec).await?
                };
                made.lock().unwrap().push((n, id));
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await?.context("creating the data set")?;
    }
    let made = made.lock().unwrap().clone();
    Ok(made)
}

/// `command` started by `sh -c`, with the measurement window's length in seconds in
/// `LOADGEN_SECONDS`.
fn shell(command: &str, args: &Args) -> anyhow::Result<std::process::Child> {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env(
            "LOADGEN_SECONDS",
            args.duration.as_secs().max(1).to_string(),
        )
        .spawn()
        .with_context(|| format!("starting {command:?}"))
}

/// Waits for `child` (the `flag`'s command) to exit, successfully.
async fn finished(mut child: std::process::Child, flag: &str) -> anyhow::Result<()> {
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    anyhow::ensure!(status.success(), "{flag} exited with {status}");
    Ok(())
}

/// The cursor of the newest event: read the stream until it is quiet for a moment.
async fn tail_cursor(actors: &Actors) -> anyhow::Result<String> {
    let mut service = actors.service.clone();
    let mut stream = service
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .context("opening a WatchEvents stream")?
        .into_inner();
    let mut cursor = String::new();
    while let Ok(Some(message)) = tokio::time::timeout(TAIL_QUIET, stream.next()).await {
        if let Some(event) = message?.event {
            cursor = event.cursor;
        }
    }
    Ok(cursor)
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    let mut channels = Vec::new();
    for _ in 0..(args.concurrency as usize).min(MAX_CONNECTIONS) {
        channels.push(connect(&args.addr).await?);
    }
    let actors: Vec<Actors> = channels
        .iter()
        .map(|channel| Actors::new(channel.clone(), args))
        .collect::<Result<_, _>>()?;
    let ids = Arc::new(Ids::new());
    let dataset = match args.scenario {
        Scenario::Read | Scenario::List | Scenario::Mixed | Scenario::Dispute => {
            let orders_only = args.scenario == Scenario::Dispute;
            dataset(
                &actors[0],
                &ids,
                u64::from(args.dataset.max(1)),
                orders_only,
            )
            .await?
        }
        _ => Vec::new(),
    };
    if let Some(command) = &args.settle {
        finished(shell(command, args)?, "--settle").await?;
    }
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        ids,
        remaining: args.count.map(AtomicU64::new),
        measured: AtomicU64::new(0),
        dataset,
        taken: AtomicU64::new(0),
    });

    // Watchers (watch scenario): delivery lag of events that occurred while measuring.
    let lag = Arc::new(Mutex::new(report::histogram()));
    let measure_from = Arc::new(Mutex::new(chrono::Utc::now() + chrono::Duration::days(1)));
    let mut watchers = Vec::new();
    if args.scenario == Scenario::Watch {
        // Consumers resume near the tail, as real ones do from their saved cursors.
        let tail = tail_cursor(&actors[0]).await?;
        for i in 0..args.watchers {
            // Each consumer is a caller of its own on a connection of its own, as
            // separate services are (a server bounds the streams one caller, and one
            // connection, may hold).
            let channel = connect(&args.addr).await?;
            let mut service =
                scenario::client(&channel, args, Role::Service, &format!("lg-watcher-{i}"))?;
            let (shared, lag, from) = (shared.clone(), lag.clone(), measure_from.clone());
            let mut stream = service
                .watch_events(pb::WatchEventsRequest {
                    after_cursor: tail.clone(),
                })
                .await
                .context("opening a WatchEvents stream")?
                .into_inner();
            watchers.push(tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    if shared.phase.load(Ordering::Relaxed) == STOP {
                        return;
                    }
                    let Some(at) = message.event.and_then(|e| e.occurred_at) else {
                        continue;
                    };
                    let occurred = chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32)
                        .unwrap_or_default();
                    if occurred >= *from.lock().unwrap() {
                        let us = (chrono::Utc::now() - occurred)
                            .num_microseconds()
                            .unwrap_or(0);
                        let _ = lag.lock().unwrap().record(us.max(1) as u64);
                    }
                }
            }));
        }
    }

    let mut workers = Vec::new();
    for task in 0..args.concurrency {
        let actors = actors[task as usize % actors.len()].clone();
        let (shared, args) = (shared.clone(), args.clone());
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            let mut operations = report::histogram();
            loop {
                let phase = shared.phase.load(Ordering::Relaxed);
                if phase == STOP {
                    break;
                }
                if let Some(remaining) = &shared.remaining
                    && phase == MEASURE
                    && remaining
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_err()
                {
                    break;
                }
                // `dispute` ends when every order of its data set is disputed.
                if args.scenario == Scenario::Dispute
                    && shared.taken.load(Ordering::Relaxed) as usize >= shared.dataset.len()
                {
                    break;
                }
                rec.recording = phase == MEASURE;
                let n = shared.ids.next();
                let started = Instant::now();
                let result = operation(&args, &actors, &shared, n, &mut rec).await;
                if rec.recording
                    && shared.phase.load(Ordering::Relaxed) == MEASURE
                    && result.is_ok()
                {
                    let _ = operations.record(started.elapsed().as_micros().max(1) as u64);
                    shared.measured.fetch_add(1, Ordering::Relaxed);
                }
            }
            (rec, operations)
        }));
    }

    tokio::time::sleep(args.warmup).await;
    let server_pids: Vec<u32> = match args.server_pid {
        Some(pid) => vec![pid],
        None => procstat::by_name("dispute-service").into_keys().collect(),
    };
    let server_before: HashMap<u32, u64> = server_pids
        .iter()
        .filter_map(|pid| Some((*pid, procstat::ticks_of(*pid)?)))
        .collect();
    let postgres = || match args.postgres_pid {
        Some(pid) => procstat::tree(pid),
        None => procstat::by_name("postgres"),
    };
    let postgres_before = postgres();
    *measure_from.lock().unwrap() = chrono::Utc::now();
    let during = match &args.during {
        Some(command) => Some(shell(command, args)?),
        None => None,
    };
    let started = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    let progress = std::io::stderr().is_terminal();
    loop {
        let elapsed = started.elapsed();
        let done = match &shared.remaining {
            Some(remaining) => remaining.load(Ordering::Relaxed) == 0,
            None => elapsed >= args.duration,
        };
        if done || workers.iter().all(|w| w.is_finished()) {
            break;
        }
        if progress {
            let measured = shared.measured.load(Ordering::Relaxed);
            eprint!(
                "\r{:>6.1} s  {measured:>9} operations  {:>8.0} op/s ",
                elapsed.as_secs_f64(),
                report::throughput(measured, elapsed)
            );
        }
        let step = match &shared.remaining {
            Some(_) => Duration::from_millis(20),
            None => PROGRESS_EVERY.min(args.duration.saturating_sub(elapsed)),
        };
        tokio::time::sleep(step.max(Duration::from_millis(1))).await;
    }
    // Operations under way when the window closes still finish; they are not counted.
    let window = started.elapsed();
    let server_after: HashMap<u32, u64> = server_pids
        .iter()
        .filter_map(|pid| Some((*pid, procstat::ticks_of(*pid)?)))
        .collect();
    let postgres_after = postgres();
    if let Some(during) = during {
        finished(during, "--during").await?;
    }
    shared.phase.store(STOP, Ordering::Relaxed);
    if progress {
        eprintln!();
    }
    let server_rss = server_pids
        .iter()
        .filter_map(|pid| procstat::rss_kib(*pid))
        .sum();

    let mut rpcs: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut retried: BTreeMap<String, u64> = BTreeMap::new();
    let mut transparent_retries: BTreeMap<String, u64> = BTreeMap::new();
    let mut operations = report::histogram();
    for worker in workers {
        let (rec, ops) = worker.await?;
        operations.add(&ops)?;
        for (rpc, h) in rec.rpcs {
            rpcs.entry(rpc).or_insert_with(report::histogram).add(&h)?;
        }
        for (code, n) in rec.errors {
            *errors.entry(code).or_default() += n;
        }
        for (code, n) in rec.retried {
            *retried.entry(code).or_default() += n;
        }
        for (code, n) in rec.transparent {
            *transparent_retries.entry(code).or_default() += n;
        }
    }
    for watcher in watchers {
        watcher.abort();
    }
    let count = operations.len();
    let ticks = procstat::ticks_per_second();
    let unexpected_errors = errors.values().sum();
    Ok(Summary {
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        concurrency: args.concurrency as usize,
        seconds: window.as_secs_f64(),
        operations: count,
        operations_per_second: report::throughput(count, window),
        latency: Quantiles::of(&operations),
        rpc_latency: rpcs
            .iter()
            .map(|(rpc, h)| ((*rpc).to_owned(), Quantiles::of(h)))
            .collect(),
        errors,
        unexpected_errors,
        retried,
        transparent_retries,
        server_cpu_us_per_op: (!server_before.is_empty())
            .then(|| {
                report::cpu_per_op(procstat::used(&server_before, &server_after), ticks, count)
            })
            .flatten(),
        postgres_cpu_us_per_op: (!postgres_before.is_empty())
            .then(|| {
                report::cpu_per_op(
                    procstat::used(&postgres_before, &postgres_after),
                    ticks,
                    count,
                )
            })
            .flatten(),
        server_rss_kib: (!server_pids.is_empty()).then_some(server_rss),
        delivery_lag: (args.scenario == Scenario::Watch)
            .then(|| Quantiles::of(&lag.lock().unwrap())),
    })
}
