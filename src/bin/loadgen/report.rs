//! What a run measured, and how it is printed: throughput, latency quantiles from an HDR
//! histogram, errors by code, and CPU per call of the server and of PostgreSQL.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Latency quantiles, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Quantiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// The summary of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub concurrency: usize,
    /// The measured window (after warm-up).
    pub seconds: f64,
    /// Operations completed in the window (an operation may be several RPCs).
    pub operations: u64,
    pub operations_per_second: f64,
    pub latency: Quantiles,
    /// Per RPC within operations.
    pub rpc_latency: BTreeMap<String, Quantiles>,
    /// Failed calls by gRPC code; `unexpected` counts the ones the scenario never expects.
    pub errors: BTreeMap<String, u64>,
    pub unexpected_errors: u64,
    /// Calls sent again after a transport failure that left their outcome unknown (same
    /// request, same request_id), by RPC and code; a call that then succeeded is not among
    /// `errors`.
    pub retried: BTreeMap<String, u64>,
    /// Calls sent again because they were refused before processing (their connection was
    /// going away: never sent, or refused unprocessed), by RPC and code: the transparent
    /// retries grpc-go and grpcio make by themselves.
    pub transparent_retries: BTreeMap<String, u64>,
    /// CPU time per operation, µs, from /proc (when the processes were found).
    pub server_cpu_us_per_op: Option<f64>,
    pub postgres_cpu_us_per_op: Option<f64>,
    /// Server resident memory at the end, KiB.
    pub server_rss_kib: Option<u64>,
    /// WatchEvents delivery lag (watch scenario), µs.
    pub delivery_lag: Option<Quantiles>,
}

/// Operations per second over `window`.
pub fn throughput(operations: u64, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    operations as f64 / window.as_secs_f64()
}

/// CPU microseconds per operation from clock ticks used.
pub fn cpu_per_op(ticks: u64, ticks_per_second: u64, operations: u64) -> Option<f64> {
    (operations > 0 && ticks_per_second > 0)
        .then(|| ticks as f64 * 1_000_000.0 / ticks_per_second as f64 / operations as f64)
}

impl Summary {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut out = format!(
            "scenario {} at concurrency {}: {} operations in {:.1} s = {:.0} op/s\n",
            self.scenario,
            self.concurrency,
            self.operations,
            self.seconds,
            self.operations_per_second
        );
        let line = |name: &str, q: &Quantiles| {
            format!(
                "  {name:<22} n={:<8} p50 {:>7} µs  p90 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs  max {:>8} µs\n",
                q.count, q.p50_us, q.p90_us, q.p99_us, q.p999_us, q.max_us
            )
        };
        out += &line("operation", &self.latency);
        for (rpc, q) in &self.rpc_latency {
            out += &line(rpc, q);
        }
        if let Some(lag) = &self.delivery_lag {
            out += &line("WatchEvents delivery", lag);
        }
        let cpu = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0} µs"));
        out += &format!(
            "  CPU per operation: server {}, PostgreSQL {}; server RSS {}\n",
            cpu(self.server_cpu_us_per_op),
            cpu(self.postgres_cpu_us_per_op),
            self.server_rss_kib
                .map_or("n/a".to_owned(), |kib| format!("{} MiB", kib / 1024)),
        );
        if self.errors.is_empty() {
            out += "  errors: none\n";
        } else {
            out += &format!(
                "  errors: {:?} ({} unexpected)\n",
                self.errors, self.unexpected_errors
            );
        }
        if !self.retried.is_empty() {
            out += &format!("  retried after a transport failure: {:?}\n", self.retried);
        }
        if !self.transparent_retries.is_empty() {
            out += &format!(
                "  sent again, refused before processing (connection going away): {:?}\n",
                self.transparent_retries
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_histogram() {
        let mut h = histogram();
        // 1..=1000 µs, once each: the p-quantile is p × 1000 (within the histogram's 3
        // significant digits).
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let q = Quantiles::of(&h);
        assert_eq!(q.count, 1000);
        assert_eq!(q.p50_us, 500);
        assert_eq!(q.p90_us, 900);
        assert_eq!(q.p99_us, 990);
        assert_eq!(q.p999_us, 999);
        assert_eq!(q.max_us, 1000);
    }

    #[test]
    fn a_single_slow_call_shows_only_in_the_tail() {
        let mut h = histogram();
        for _ in 0..999 {
            h.record(100).unwrap();
        }
        h.record(50_000).unwrap();
        let q = Quantiles::of(&h);
        // The q-quantile is the least value with at least q·n values at or below it: 999
        // of the 1,000 are 100 µs, so even p99.9 is 100; only the maximum sees the outlier.
        assert_eq!((q.p50_us, q.p99_us, q.p999_us), (100, 100, 100));
        // 50,000 is kept to 3 significant digits.
        assert!((49_950..=50_050).contains(&q.max_us), "{}", q.max_us);
    }

    #[test]
    fn throughput_and_cpu_per_operation() {
        assert_eq!(throughput(5_000, Duration::from_secs(10)), 500.0);
        assert_eq!(throughput(5, Duration::ZERO), 0.0);
        // 250 ticks at 100 per second = 2.5 s of CPU over 10,000 operations = 250 µs each.
        assert_eq!(cpu_per_op(250, 100, 10_000), Some(250.0));
        assert_eq!(cpu_per_op(250, 100, 0), None);
    }
}
