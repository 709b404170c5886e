//! The tower layer in front of the service: admission (a bound on requests in flight),
//! authentication (the bearer token), authorization (the policy table) and the
//! server-side deadline. A request it refuses never reaches a handler. It also makes sure
//! every error leaving the service carries an `ErrorInfo`, including the ones tonic itself
//! produces (an oversized message, an unknown method). Health and reflection pass through.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{auth::Authenticator, error::status, policy};
use crate::domain::{Actor, TraceId};

const SERVICE_PREFIX: &str = "/dispute.v1.DisputeService/";

#[derive(Clone)]
pub struct GateLayer {
    authenticator: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
}

impl GateLayer {
    pub fn new(
        authenticator: Arc<Authenticator>,
        max_in_flight: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            authenticator,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            request_timeout,
        }
    }

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

    /// The server's deadline, or the caller's (`grpc-timeout`) when that is sooner.
    fn deadline<B>(&self, request: &http::Request<B>) -> Duration {
        request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.request_timeout, |client| {
                client.min(self.request_timeout)
            })
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
        let actor = match self.layer.admit(&request, &rpc) {
            Ok(actor) => actor,
            Err(refused) => return Box::pin(async move { Ok(refused.into_http()) }),
        };
        let deadline = self.layer.deadline(&request);
        let trace_id = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(TraceId::from_traceparent)
            .unwrap_or_default();
        let span =
            tracing::info_span!("rpc", rpc = %rpc, trace_id = %trace_id, actor_role = %actor.role);
        request.extensions_mut().insert(actor);
        request.extensions_mut().insert(trace_id);
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            // The handler's future (and its transaction, rolled back) is dropped at the
            // deadline. A stream's deadline covers its start, not its life.
            let response = match tokio::time::timeout(deadline, response).await {
                Ok(response) => response?,
                Err(_) => {
                    tracing::warn!(rpc, ?deadline, "deadline exceeded");
                    status(
                        Code::DeadlineExceeded,
                        "DEADLINE_EXCEEDED",
                        "the request did not finish within its deadline",
                    )
                    .into_http()
                }
            };
            drop(permit);
            Ok(with_error_info(response))
        })
    }
}

/// Gives an error response that has no rich details (tonic's own, e.g. an oversized
/// message) an `ErrorInfo` named after its code.
fn with_error_info(response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    match Status::from_header_map(headers) {
        Some(bare) if bare.code() != Code::Ok => {
            let reason = match bare.code() {
                Code::OutOfRange => "MESSAGE_TOO_LARGE",
                Code::Unimplemented => "UNIMPLEMENTED",
                Code::InvalidArgument => "MALFORMED_REQUEST",
                _ => "TRANSPORT_ERROR",
            };
            status(bare.code(), reason, bare.message().to_owned()).into_http()
        }
        _ => response,
    }
}

/// `grpc-timeout`: an integer and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_nonsense() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "10", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
