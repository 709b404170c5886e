//! Bounds on what callers hold at once (README, "Limits"): a share per caller, so one
//! caller at its share leaves room for the others, and a total across all callers.
//!
//! Requests in flight: the gate takes the caller's share ([`Shares`]); the server-wide
//! bound is tower's concurrency limit with load shedding, composed in `startup.rs` around
//! the dispute service, and [`Admitted`] answers what it sheds. WatchEvents streams: both
//! bounds at once ([`Slots`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, body::Body, server::NamedService};
use tower::{BoxError, Service, ServiceExt, load_shed::error::Overloaded};

use super::{SERVICE_NAME, error::status};
use crate::domain::Actor;

/// Which bound refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller holds its share already.
    Caller,
    /// Every slot is taken.
    Total,
}

/// At most `per_caller` slots for each caller (its role and subject).
#[derive(Debug, Clone)]
pub struct Shares {
    per_caller: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Shares {
    pub fn new(per_caller: usize) -> Self {
        Self {
            per_caller,
            held: Arc::default(),
        }
    }

    /// A slot for `caller`, held until the guard is dropped; `None` when it holds its share.
    pub fn take(&self, caller: &Actor) -> Option<CallerSlot> {
        let name = format!("{}/{}", caller.role.as_str(), caller.id);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(name.clone()).or_insert(0);
        if *count >= self.per_caller {
            return None;
        }
        *count += 1;
        Some(CallerSlot {
            held: self.held.clone(),
            name,
        })
    }
}

/// Slots shared by all callers, at most `per_caller` each.
#[derive(Debug, Clone)]
pub struct Slots {
    total: Arc<Semaphore>,
    shares: Shares,
}

impl Slots {
    pub fn new(total: usize, per_caller: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            shares: Shares::new(per_caller),
        }
    }

    /// A caller's slot and a total one together.
    pub fn slot(&self, caller: &Actor) -> Result<(CallerSlot, OwnedSemaphorePermit), Full> {
        let mine = self.shares.take(caller).ok_or(Full::Caller)?;
        let everyone = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Total)?;
        Ok((mine, everyone))
    }
}

/// One of a caller's slots; its count is forgotten when the caller holds none.
#[derive(Debug)]
pub struct CallerSlot {
    held: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.name);
            }
        }
    }
}

/// The dispute service behind tower's server-wide bound, as tonic's router takes a
/// service: named, and infallible. A call the bound sheds (tower's [`Overloaded`]) is
/// answered RESOURCE_EXHAUSTED `OVERLOADED`; the layers below raise no other error.
///
/// Like the gate, it asks the service below for readiness only when a call comes
/// (`oneshot`): that is when the concurrency limit takes its permit or the call is shed.
#[derive(Debug, Clone)]
pub struct Admitted<S>(S);

impl<S> Admitted<S> {
    pub fn new(bounded: S) -> Self {
        Self(bounded)
    }
}

impl<S> NamedService for Admitted<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S> Service<http::Request<Body>> for Admitted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let bounded = self.0.clone();
        Box::pin(async move {
            Ok(match bounded.oneshot(request).await.map_err(Into::into) {
                Ok(response) => response,
                Err(error) if error.is::<Overloaded>() => status(
                    Code::ResourceExhausted,
                    "OVERLOADED",
                    "too many requests in flight; retry with backoff",
                )
                .into_http(),
                // Not raised by tower's limit or shedding; answered as the transport's.
                Err(error) => tonic::Status::from_error(error).into_http(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn a_caller_at_its_share_leaves_the_rest_to_others_and_slots_come_back() {
        let slots = Slots::new(3, 2);
        let greedy = Actor::new(Role::Buyer, "greedy");
        let other = Actor::new(Role::Buyer, "other");
        let a = slots.slot(&greedy).unwrap();
        let _b = slots.slot(&greedy).unwrap();
        assert_eq!(slots.slot(&greedy).err(), Some(Full::Caller));
        // The same subject under another role is another caller.
        let _seller = slots.slot(&Actor::new(Role::Seller, "greedy")).unwrap();
        assert_eq!(slots.slot(&other).err(), Some(Full::Total));
        drop(a);
        let _c = slots.slot(&other).unwrap();
        let held = |name: &str| slots.shares.held.lock().unwrap().get(name).copied();
        assert_eq!(held("BUYER/greedy"), Some(1));
        drop(_b);
        assert_eq!(held("BUYER/greedy"), None);
    }
}
