//! The load generator's flags.

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// RegisterOrder then OpenDispute.
    Open,
    /// OpenDispute alone, each on an order registered before measuring (`--dataset` of
    /// them: the database floor's write, `scripts/bench-floor`).
    Dispute,
    /// Open, then cancel, an agent's ruling, or the whole return path.
    Lifecycle,
    /// GetDispute of a random dispute.
    Read,
    /// ListDisputes of a random buyer, as that buyer.
    List,
    /// 90% reads, 10% open.
    Mixed,
    /// `--watchers` WatchEvents consumers while writers open disputes: delivery lag.
    Watch,
    /// GetSellerDisputeStats of `--stats-seller`, as an agent (seed the store first:
    /// scripts/bench-stats).
    Stats,
}

/// Drives dispute-service with a scenario and reports throughput, latency quantiles,
/// errors by code and CPU per operation (server and PostgreSQL, from /proc).
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen")]
pub struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "open")]
    pub scenario: Scenario,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Measure this many operations instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// How long to run before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// The server's HS256 secret, to mint tokens.
    #[arg(long, env = "DISPUTE_JWT_HS256_SECRET", hide_env_values = true)]
    pub secret: String,
    #[arg(long, default_value = "dispute-dev")]
    pub issuer: String,
    #[arg(long, default_value = "dispute-service")]
    pub audience: String,
    /// Disputes created before `read`, `list` and `mixed` start; orders registered before
    /// `dispute` starts (each operation takes one, so more than it will run).
    #[arg(long, default_value_t = 1_000)]
    pub dataset: u32,
    /// Sellers the orders are spread over (1: every order is one store's, the hot-row
    /// case of the store record).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub sellers: u64,
    /// WatchEvents consumers in the `watch` scenario.
    #[arg(long, default_value_t = 100)]
    pub watchers: u32,
    /// The store whose record the `stats` scenario reads.
    #[arg(long, default_value = "bench-store")]
    pub stats_seller: String,
    /// The server's process id (default: every process named dispute-service).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The postmaster whose processes' CPU is counted as PostgreSQL's (default: every
    /// process named postgres on the machine).
    #[arg(long)]
    pub postgres_pid: Option<u32>,
    /// A shell command run once the data set is made, before the warm-up, and waited for
    /// (e.g. a VACUUM, so that cleaning up after the set-up is not measured).
    #[arg(long)]
    pub settle: Option<String>,
    /// A shell command to run while measuring (started when the measurement begins, with
    /// the window's length in seconds in `LOADGEN_SECONDS`, and waited for at its end),
    /// e.g. a profiler: `--during 'perf record -a -o run.data -- sleep "$LOADGEN_SECONDS"'`.
    #[arg(long)]
    pub during: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut all = vec!["loadgen", "--secret", "s"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
    }

    #[test]
    fn defaults_are_a_ten_second_open_run_at_concurrency_sixteen() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.scenario, Scenario::Open);
        assert_eq!(args.concurrency, 16);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.warmup, Duration::from_secs(2));
        assert_eq!(args.count, None);
        assert!(!args.json);
    }

    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--addr",
            "http://10.0.0.1:50051",
            "--scenario",
            "mixed",
            "--concurrency",
            "64",
            "--duration",
            "5m",
            "--warmup",
            "500ms",
            "--count",
            "1000",
            "--dataset",
            "50",
            "--watchers",
            "400",
            "--server-pid",
            "42",
            "--postgres-pid",
            "7",
            "--json",
        ])
        .unwrap();
        assert_eq!(args.scenario, Scenario::Mixed);
        assert_eq!(args.concurrency, 64);
        assert_eq!(args.duration, Duration::from_secs(300));
        assert_eq!(args.warmup, Duration::from_millis(500));
        assert_eq!(args.count, Some(1000));
        assert_eq!((args.dataset, args.watchers), (50, 400));
        assert_eq!((args.server_pid, args.postgres_pid), (Some(42), Some(7)));
        assert!(args.json);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--count", "0"]).is_err());
        assert!(parse(&["--scenario", "dance"]).is_err());
        assert!(parse(&["--duration", "forever"]).is_err());
        if std::env::var_os("DISPUTE_JWT_HS256_SECRET").is_none() {
            assert!(
                Args::try_parse_from(["loadgen"]).is_err(),
                "the secret is required"
            );
        }
    }
}
