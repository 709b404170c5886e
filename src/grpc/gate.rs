//! The tower layer in front of the service: admission (a bound on requests in flight),
//! authentication (the bearer token) and authorization (the policy table). A request it
//! refuses never reaches a handler. Health and reflection pass through untouched.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use super::{auth::Authenticator, error::status, policy};
use crate::domain::Actor;

const SERVICE_PREFIX: &str = "/dispute.v1.DisputeService/";

#[derive(Clone)]
pub struct GateLayer {
    authenticator: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
}

impl GateLayer {
    pub fn new(authenticator: Arc<Authenticator>, max_in_flight: usize) -> Self {
        Self {
            authenticator,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

impl GateLayer {
    fn admit<B>(&self, request: &http::Request<B>, rpc: &str) -> Result<Actor, Status> {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let actor = self
            .authenticator
            .authenticate(authorization)
            .map_err(|why| {
                tracing::info!(rpc, why, "unauthenticated call refused");
                status(
                    Code::Unauthenticated,
                    "UNAUTHENTICATED",
                    format!("unauthenticated: {why}"),
                )
            })?;
        policy::authorize(rpc, actor.role)?;
        Ok(actor)
    }
}

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(rpc) = request
            .uri()
            .path()
            .strip_prefix(SERVICE_PREFIX)
            .map(str::to_owned)
        else {
            return Box::pin(self.inner.call(request));
        };
        let Ok(permit) = self.layer.in_flight.clone().try_acquire_owned() else {
            let refused = status(
                Code::ResourceExhausted,
                "OVERLOADED",
                "too many requests in flight; retry with backoff",
            );
            return Box::pin(async move { Ok(refused.into_http()) });
        };
        match self.layer.admit(&request, &rpc) {
            Err(refused) => Box::pin(async move { Ok(refused.into_http()) }),
            Ok(actor) => {
                request.extensions_mut().insert(actor);
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
        }
    }
}
