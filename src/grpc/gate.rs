//! The tower layer in front of the service: admission (a bound on requests in flight),
//! authentication (the bearer token), authorization (the policy table) and the
//! server-side deadline. A request it refuses never reaches a handler. It also makes sure
//! every error leaving the service carries an `ErrorInfo`, including the ones tonic itself
//! produces (an oversized message, an unknown method). Health and reflection pass through.
//!
//! It opens the OpenTelemetry SERVER span of every RPC (a child of the caller's span when
//! the request carries a W3C `traceparent`), records its gRPC status code, refused calls
//! included, and counts the call in the RPC metrics.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::{Instrument, field::Empty};

use super::{SERVICE_NAME, auth::Authenticator, error::status, policy};
use crate::{domain::Actor, metrics::Metrics, telemetry};

#[derive(Clone)]
pub struct GateLayer {
    authenticator: Arc<Authenticator>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    metrics: Metrics,
}

impl GateLayer {
    pub fn new(
        authenticator: Arc<Authenticator>,
        max_in_flight: usize,
        request_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            authenticator,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            request_timeout,
            metrics,
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
        let Some(method) = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(SERVICE_NAME))
            .and_then(|path| path.strip_prefix('/'))
            .map(str::to_owned)
        else {
            return Box::pin(self.inner.call(request));
        };
        let started = Instant::now();
        // OpenTelemetry RPC conventions; ids and the role are filled in once known.
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{SERVICE_NAME}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = SERVICE_NAME,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            actor.role = Empty,
            order.id = Empty,
            dispute.id = Empty,
        );
        let trace_id = telemetry::adopt_remote_parent(&span, request.headers());
        let metrics = self.layer.metrics.clone();
        let admitted = self
            .layer
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                status(
                    Code::ResourceExhausted,
                    "OVERLOADED",
                    "too many requests in flight; retry with backoff",
                )
            })
            .and_then(|permit| {
                let _entered = span.enter();
                Ok((permit, self.layer.admit(&request, &method)?))
            });
        let answer = match admitted {
            Err(refused) => futures::future::Either::Left(async move { Ok(refused.into_http()) }),
            Ok((permit, actor)) => {
                span.record("actor.role", actor.role.as_str());
                let deadline = self.layer.deadline(&request);
                request.extensions_mut().insert(actor);
                request.extensions_mut().insert(trace_id);
                let response = {
                    let _entered = span.enter();
                    self.inner.call(request)
                };
                let in_flight = metrics.in_flight();
                let method = method.clone();
                futures::future::Either::Right(async move {
                    // The handler's future (and its transaction, rolled back) is dropped
                    // at the deadline. A stream's deadline covers its start, not its life.
                    let response = match tokio::time::timeout(deadline, response).await {
                        Ok(response) => response?,
                        Err(_) => {
                            tracing::warn!(rpc = method, ?deadline, "deadline exceeded");
                            status(
                                Code::DeadlineExceeded,
                                "DEADLINE_EXCEEDED",
                                "the request did not finish within its deadline",
                            )
                            .into_http()
                        }
                    };
                    drop((permit, in_flight));
                    Ok(response)
                })
            }
        };
        Box::pin(
            async move {
                let response = with_error_info(answer.await?);
                // An error is answered in the headers (trailers-only); a success in the
                // trailers, after the body, as OK.
                let code = Status::from_header_map(response.headers())
                    .map_or(Code::Ok, |status| status.code());
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code as i32);
                if server_fault(code) {
                    span.record("otel.status_code", "ERROR");
                }
                metrics.rpc_handled(SERVICE_NAME, &method, code, started.elapsed());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The codes the OpenTelemetry RPC conventions count as the server's error (a SERVER
/// span's status is ERROR); the others are the caller's.
fn server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
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
