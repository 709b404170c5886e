//! The stop signal: `serve` flips it on SIGTERM and every background task (health, the
//! commit listener, the worker, event streams, the metrics listener) watches it. In its
//! own module so that nothing has to import the startup code to wait for it.

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
