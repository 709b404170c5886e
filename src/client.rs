//! What a Rust (tonic) caller of the service does with a call that failed at the transport
//! (README, "Scaling"); `loadgen` and the tests call through [`call`].
//!
//! A tonic `Channel` does not retry anything. When a connection is asked to go away
//! (HTTP/2 GOAWAY: the server's maximum connection age, a rolling restart), a call sent at
//! that moment can fail in the client without ever having been sent, or be refused by the
//! server unprocessed; tonic reports these as CANCELLED ("operation was canceled:
//! connection closed"), INTERNAL ("h2 protocol error: … go away") or UNAVAILABLE
//! (REFUSED_STREAM). grpc-go and grpcio retry exactly those calls themselves, on a new
//! connection ("transparent retry", gRFC A6); [`refused_before_processing`] recognises
//! them, and [`call`] sends them again at once: safe for every call, since the server never
//! saw them. Any other failure at the transport (the connection broke while the call was
//! under way) leaves its outcome unknown: the call is sent again as it was, with the same
//! `request_id`, so a write that did happen is answered with its first reply and never
//! applied twice (README, "Idempotency").

use std::{error::Error, future::Future, time::Duration};

use tonic::Status;

/// How many times a call refused before processing is sent again, on a new connection.
pub const TRANSPARENT_RETRIES: u32 = 5;
/// How many times a call whose outcome is unknown is sent again, with its `request_id`.
pub const UNKNOWN_OUTCOME_RETRIES: u32 = 3;

/// Why [`call`] sent a call again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The call never reached the service (it was not sent, or the server refused it
    /// unprocessed): sent again at once.
    Transparent,
    /// The connection failed while the call was under way: sent again with its
    /// `request_id`, after a short pause.
    UnknownOutcome,
}

/// A call that the client never sent, or that the server refused before any processing,
/// because its connection was going away:
///
/// - hyper dropped it before sending it (`hyper::Error::is_canceled`: the connection's
///   dispatcher closed with the request still queued — tonic's CANCELLED "connection
///   closed");
/// - h2 refused to open its stream because the connection had received a GOAWAY, or the
///   stream was above the GOAWAY's last stream id (a GOAWAY from the peer with NO_ERROR:
///   tonic's INTERNAL "h2 protocol error: … go away"); RFC 9113 §6.8: such streams were
///   not processed;
/// - the server reset its stream with REFUSED_STREAM (RFC 9113 §8.7: not processed).
///
/// A status the server sent has no source, so it is never one of these.
pub fn refused_before_processing(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = error.source();
    }
    false
}

/// A failure of the connection rather than an answer of the server: tonic gives such a
/// status the transport error as its source; a status the server sent has none.
pub fn failed_at_transport(status: &Status) -> bool {
    status.source().is_some()
}

/// Makes the call `attempt` produces until it is answered: a call refused before
/// processing is sent again at once (at most [`TRANSPARENT_RETRIES`] times), a call that
/// failed at the transport otherwise is sent again as it was, with its `request_id`, after
/// 20 ms × the attempt (at most [`UNKNOWN_OUTCOME_RETRIES`] times). `retried` is told of
/// every retry. Any answer of the server, an error too, is returned as it is.
pub async fn call<T, F, Fut>(
    mut attempt: F,
    mut retried: impl FnMut(Retry, &Status),
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let (mut transparent, mut unknown) = (0, 0);
    loop {
        let status = match attempt().await {
            Err(status) if failed_at_transport(&status) => status,
            answered => return answered,
        };
        tracing::debug!(%status, source = ?status.source(), "call failed at the transport");
        if refused_before_processing(&status) && transparent < TRANSPARENT_RETRIES {
            transparent += 1;
            retried(Retry::Transparent, &status);
        } else if unknown < UNKNOWN_OUTCOME_RETRIES {
            unknown += 1;
            retried(Retry::UnknownOutcome, &status);
            tokio::time::sleep(Duration::from_millis(20 * u64::from(unknown))).await;
        } else {
            return Err(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, io};

    use tonic::Code;

    use super::*;

    fn refused() -> Status {
        Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)))
    }

    fn broken_pipe() -> Status {
        Status::from_error(Box::new(io::Error::from(io::ErrorKind::BrokenPipe)))
    }

    /// Runs `call` over `statuses` (then OK), and what it retried.
    async fn run(statuses: Vec<Status>) -> (Result<u32, Status>, Vec<Retry>) {
        let statuses = RefCell::new(statuses.into_iter());
        let attempts = RefCell::new(0);
        let mut retries = Vec::new();
        let result = call(
            || {
                *attempts.borrow_mut() += 1;
                let next = statuses.borrow_mut().next();
                let n = *attempts.borrow();
                async move { next.map_or(Ok(n), Err) }
            },
            |retry, _| retries.push(retry),
        )
        .await;
        (result, retries)
    }

    #[test]
    fn which_failures_were_never_processed() {
        assert!(refused_before_processing(&refused()));
        assert_eq!(refused().code(), Code::Unavailable);
        // The connection broke under the call: maybe processed.
        assert!(!refused_before_processing(&broken_pipe()));
        assert!(failed_at_transport(&broken_pipe()));
        // An h2 reset other than REFUSED_STREAM: maybe processed.
        let cancel = Status::from_error(Box::new(h2::Error::from(h2::Reason::CANCEL)));
        assert!(!refused_before_processing(&cancel));
        // What the server answers is never a transport failure, whatever its code.
        let answered = Status::unavailable("database unavailable");
        assert!(!refused_before_processing(&answered));
        assert!(!failed_at_transport(&answered));
    }

    #[tokio::test]
    async fn refused_calls_are_sent_again_at_once_and_unknown_ones_with_a_pause() {
        let (result, retries) = run(vec![refused(), refused()]).await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries, [Retry::Transparent, Retry::Transparent]);

        let (result, retries) = run(vec![refused(), broken_pipe()]).await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries, [Retry::Transparent, Retry::UnknownOutcome]);

        // An answer of the server is returned as it is.
        let (result, retries) = run(vec![Status::unavailable("busy")]).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert!(retries.is_empty());

        // Bounded: 5 transparent retries, then 3 with an unknown outcome.
        let (result, retries) = run(vec![refused(); 20]).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(
            retries,
            [
                [Retry::Transparent; 5].as_slice(),
                &[Retry::UnknownOutcome; 3]
            ]
            .concat()
        );
    }
}
