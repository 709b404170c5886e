//! The stop signal: `serve` flips it on SIGTERM and every background task (health, the
//! event log listener, the relay, the worker, event streams, the metrics listener) watches it. In its
//! own module so that nothing has to import the startup code to wait for it.

use std::time::Duration;

use tokio::sync::watch;

/// The receiving side; cheap to clone, one per task.
pub type Stop = watch::Receiver<bool>;

/// A new signal, not yet given.
pub fn channel() -> (watch::Sender<bool>, Stop) {
    watch::channel(false)
}

/// Resolves once the signal is given (or its sender is gone).
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Whether the signal has been given.
pub fn is_stopped(stop: &Stop) -> bool {
    *stop.borrow()
}

/// The part of the shutdown budget (`DISPUTE_SHUTDOWN_GRACE`, from SIGTERM to the exit)
/// kept for exporting the last spans: a fifth, at most 5 s. The drain of in-flight calls
/// and the worker's pass under way share the rest, side by side, so the whole stop never
/// takes longer than the grace (the chart's `terminationGracePeriodSeconds` is derived
/// from it; README, "Deploying").
pub fn flush_share(grace: Duration) -> Duration {
    (grace / 5).min(Duration::from_secs(5))
}

/// What is left of `grace` for the drain and the worker.
pub fn drain_share(grace: Duration) -> Duration {
    grace.saturating_sub(flush_share(grace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_add_up_to_the_grace_and_the_flush_is_bounded() {
        for secs in [1, 3, 20, 25, 60, 600] {
            let grace = Duration::from_secs(secs);
            assert_eq!(drain_share(grace) + flush_share(grace), grace, "{secs}s");
            assert!(flush_share(grace) <= Duration::from_secs(5), "{secs}s");
            assert!(flush_share(grace) > Duration::ZERO, "{secs}s");
        }
        assert_eq!(flush_share(Duration::from_secs(20)), Duration::from_secs(4));
        assert_eq!(flush_share(Duration::from_secs(60)), Duration::from_secs(5));
    }
}
