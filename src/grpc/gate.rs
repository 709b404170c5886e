//! The gate: the part of the server's tower stack in front of the dispute service that
//! tower does not provide. Authentication (the bearer token), authorization (the policy
//! table, keyed by [`policy::Rpc`]), the caller's share, the body read before a server slot,
//! and the server-side deadline. A request it refuses never reaches a handler. It also makes
//! sure every error leaving the server carries an `ErrorInfo`, including the ones tonic
//! itself produces (an oversized or malformed message, an unknown method). Health and
//! reflection pass through.
//!
//! Admission, in order (README, "Limits"): the caller takes one of its own slots
//! (`DISPUTE_MAX_IN_FLIGHT_PER_CALLER`), the request's body is read whole within
//! `DISPUTE_REQUEST_BODY_TIMEOUT`, and only then is the service below asked to take the
//! request (`oneshot`: the gate never polls it ready beforehand). That is when the request
//! takes one of the server's slots (`DISPUTE_MAX_IN_FLIGHT`), or is shed: tower's
//! concurrency limit and load shedding around the dispute service (`startup.rs`,
//! [`super::limits::Admitted`]). A request that sends headers and never its body therefore
//! holds one slot of its own caller's, for at most the body timeout, and none of anyone
//! else's.
//!
//! The deadline is the gate's own, not tower's `Timeout` nor tonic's `Server::timeout`:
//! it is per request (the caller's shorter `grpc-timeout`), counts from the request's
//! arrival and bounds the body read as well, and is answered DEADLINE_EXCEEDED with an
//! `ErrorInfo`, in the call's span and metrics. tower's `Timeout` takes one fixed duration;
//! tonic's runs outside every layer and answers CANCELLED without an `ErrorInfo`.
//!
//! It opens the OpenTelemetry SERVER span of every RPC (a child of the caller's span when
//! the request carries a W3C `traceparent`), records its gRPC status code, refused calls
//! included, and counts the call in the RPC metrics.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full as FullBody, LengthLimitError, Limited};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service, ServiceExt};
use tracing::{Instrument, field::Empty};

use super::{SERVICE_NAME, auth::Authenticator, error::status, limits::Shares, policy};
use crate::{domain::Actor, metrics::Metrics, telemetry};

/// Largest request message accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A gRPC message's frame header: a compression flag and a four-byte length.
const FRAME_HEADER_BYTES: usize = 5;

#[derive(Clone)]
pub struct GateLayer {
    authenticator: Arc<Authenticator>,
    shares: Shares,
    request_timeout: Duration,
    body_timeout: Duration,
    metrics: Metrics,
}

impl GateLayer {
    pub fn new(
        authenticator: Arc<Authenticator>,
        shares: Shares,
        request_timeout: Duration,
        body_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            authenticator,
            shares,
            request_timeout,
            body_timeout,
            metrics,
        }
    }

    fn admit<B>(
        &self,
        request: &http::Request<B>,
        method: &str,
        rpc: Option<policy::Rpc>,
    ) -> Result<Actor, Status> {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let actor = self
            .authenticator
            .authenticate(authorization)
            .map_err(|why| {
                let rpc = rpc.map_or(policy::UNKNOWN_RPC, policy::Rpc::name);
                tracing::info!(rpc, why, "unauthenticated call refused");
                status(
                    Code::Unauthenticated,
                    "UNAUTHENTICATED",
                    format!("unauthenticated: {why}"),
                )
            })?;
        // Deny by default: a method that is not an RPC of the proto is answered as one
        // that does not exist, and never reaches a handler.
        policy::authorize(rpc.ok_or_else(|| policy::unknown(method))?, actor.role)?;
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

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    /// Always ready: the service below is asked only once a request's body is read, so
    /// nothing below it (a server slot) is reserved for a body that has not arrived.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let Some(method) = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(SERVICE_NAME))
            .and_then(|path| path.strip_prefix('/'))
            .map(str::to_owned)
        else {
            return Box::pin(async move { Ok(with_error_info(inner.oneshot(request).await?)) });
        };
        let started = Instant::now();
        // A label or span name only from the proto's own RPCs: a made-up method name must
        // not mint a new metric series (README, "Metrics").
        let known = policy::Rpc::from_name(&method);
        let rpc = known.map_or(policy::UNKNOWN_RPC, policy::Rpc::name);
        // OpenTelemetry RPC conventions; ids and the role are filled in once known.
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{SERVICE_NAME}/{rpc}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = SERVICE_NAME,
            rpc.method = rpc,
            rpc.grpc.status_code = Empty,
            actor.role = Empty,
            order.id = Empty,
            dispute.id = Empty,
        );
        let trace_id = telemetry::adopt_remote_parent(&span, request.headers());
        let layer = self.layer.clone();
        let metrics = layer.metrics.clone();
        // Runs inside the span (instrumented below), the handler included.
        let answer = async move {
            let actor = layer.admit(&request, &method, known)?;
            tracing::Span::current().record("actor.role", actor.role.as_str());
            let deadline = layer.deadline(&request);
            let _mine = layer.shares.take(&actor).ok_or_else(caller_overloaded)?;
            let mut request = read_body(request, deadline.min(layer.body_timeout)).await?;
            request.extensions_mut().insert(actor);
            request.extensions_mut().insert(trace_id);
            // The handler's future (and its transaction, rolled back) is dropped at the
            // deadline, which counts from the request's arrival. A stream's deadline
            // covers its start, not its life.
            let remaining = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(remaining, inner.oneshot(request)).await {
                Ok(response) => response.map_err(Refusal::Inner),
                Err(_) => {
                    tracing::warn!(rpc = method, ?deadline, "deadline exceeded");
                    Err(deadline_exceeded().into())
                }
            }
        };
        Box::pin(
            async move {
                let response = match answer.await {
                    Ok(response) => response,
                    Err(Refusal::Status(refused)) => refused.into_http(),
                    Err(Refusal::Inner(error)) => return Err(error),
                };
                let response = with_error_info(response);
                // An error is answered in the headers (trailers-only); a success in the
                // trailers, after the body, as OK.
                let code = Status::from_header_map(response.headers())
                    .map_or(Code::Ok, |status| status.code());
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code as i32);
                if server_fault(code) {
                    span.record("otel.status_code", "ERROR");
                }
                metrics.rpc_handled(SERVICE_NAME, rpc, code, started.elapsed());
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Why a call ended in the gate: an answer of its own, or the inner service's error.
enum Refusal<E> {
    Status(Status),
    Inner(E),
}

impl<E> From<Status> for Refusal<E> {
    fn from(status: Status) -> Self {
        Refusal::Status(status)
    }
}

fn caller_overloaded() -> Status {
    status(
        Code::ResourceExhausted,
        "CALLER_OVERLOADED",
        "this caller has too many requests under way; retry with backoff",
    )
}

fn deadline_exceeded() -> Status {
    status(
        Code::DeadlineExceeded,
        "DEADLINE_EXCEEDED",
        "the request did not finish within its deadline",
    )
}

/// Reads the request's body whole (one gRPC message) within `timeout`, so a handler
/// never waits on a client: a body that does not arrive in time, or is larger than the
/// largest message, is answered here.
async fn read_body(
    request: http::Request<Body>,
    timeout: Duration,
) -> Result<http::Request<Body>, Status> {
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, MAX_REQUEST_BYTES + FRAME_HEADER_BYTES);
    let bytes: Bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(status(
                Code::OutOfRange,
                "MESSAGE_TOO_LARGE",
                format!("the request message is larger than {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        Ok(Err(_)) => {
            return Err(status(
                Code::Cancelled,
                "REQUEST_CANCELLED",
                "the client stopped sending the request",
            ));
        }
        Err(_) => {
            return Err(status(
                Code::DeadlineExceeded,
                "REQUEST_BODY_TIMEOUT",
                format!("the request body did not arrive within {timeout:?}"),
            ));
        }
    };
    Ok(http::Request::from_parts(
        parts,
        Body::new(FullBody::new(bytes)),
    ))
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

/// Gives an error response that has no rich details (tonic's own) an `ErrorInfo`, and
/// answers a request tonic could not decode as the caller's fault: INVALID_ARGUMENT
/// (MALFORMED_REQUEST), never INTERNAL.
fn with_error_info(response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    match Status::from_header_map(headers) {
        Some(bare) if bare.code() != Code::Ok => {
            if is_decode_failure(&bare) {
                return status(
                    Code::InvalidArgument,
                    "MALFORMED_REQUEST",
                    "the request is not a valid protobuf message of the method's request type",
                )
                .into_http();
            }
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

/// tonic answers a body it cannot decode — not protobuf, truncated, bad UTF-8 in a
/// string, nested too deep, no message at all, a bad compression flag — with INTERNAL
/// and one of these messages (tonic's codec and prost's `DecodeError`).
fn is_decode_failure(status: &Status) -> bool {
    const DECODE_FAILURES: [&str; 5] = [
        "failed to decode",
        "Missing request message",
        "protocol error",
        "Unexpected EOF",
        "Error decompressing",
    ];
    status.code() == Code::Internal
        && DECODE_FAILURES
            .iter()
            .any(|failure| status.message().contains(failure))
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
