//! Accepting connections within bounds (README, "Limits"): at most
//! `DISPUTE_MAX_CONNECTIONS` open at once (one more is closed as it arrives, and logged),
//! each with `DISPUTE_HANDSHAKE_TIMEOUT` to send the HTTP/2 preface, and Nagle's
//! algorithm off (a small response is sent at once). When the process is out of file
//! descriptors, accepting backs off instead of spinning. After the handshake, HTTP/2
//! keepalive PINGs close connections whose peer is gone, and the maximum connection age
//! closes every connection in time.
//!
//! The maximum connection age is enforced in two parts. At `DISPUTE_MAX_CONNECTION_AGE`
//! tonic's `Server::max_connection_age` starts hyper's graceful shutdown of the
//! connection: a GOAWAY with the last stream id 2^31-1 and a PING, then, once the PING is
//! answered (every stream the client opened before it saw the first GOAWAY has arrived),
//! a GOAWAY with the real last stream id; calls under way finish and the connection
//! closes when none is left. Here, a connection still open `DISPUTE_MAX_CONNECTION_AGE_GRACE`
//! later (a WatchEvents stream, a stuck call) fails its reads and writes, so it is closed
//! whatever runs on it. (tonic's own `max_connection_age_grace` is not used: in tonic 0.14
//! setting it replaces the graceful shutdown by a bare close at age + grace — no GOAWAY,
//! and every call then under way failed at the transport; see README, "Scaling".)

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client connection preface, in bytes.
const PREFACE_BYTES: usize = 24;
/// How long accepting pauses after the process ran out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this interval about refused connections or accept failures.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The accepted connections of `listener`, within `max_connections` and
/// `handshake_timeout`; each is closed `lifetime` after it was accepted (the maximum
/// connection age plus its grace), whatever still runs on it.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    handshake_timeout: Duration,
    lifetime: Duration,
) -> impl Stream<Item = io::Result<Guarded>> {
    let state = Accepting {
        listener,
        slots: Arc::new(Semaphore::new(max_connections)),
        handshake_timeout,
        lifetime,
        warned: None,
        refused: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        let connection = state.next().await;
        Some((Ok(connection), state))
    })
}

struct Accepting {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    handshake_timeout: Duration,
    lifetime: Duration,
    warned: Option<Instant>,
    /// Connections closed since the last warning.
    refused: u64,
}

impl Accepting {
    async fn next(&mut self) -> Guarded {
        loop {
            match self.listener.accept().await {
                Ok((socket, peer)) => {
                    let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                        self.refused += 1;
                        if self.may_warn() {
                            tracing::warn!(
                                %peer,
                                refused = self.refused,
                                "connection limit reached; closing new connections"
                            );
                            self.refused = 0;
                        }
                        continue;
                    };
                    if socket.set_nodelay(true).is_err() {
                        continue; // the peer is already gone
                    }
                    return Guarded {
                        socket,
                        peer,
                        handshake: Some(Box::pin(tokio::time::sleep(self.handshake_timeout))),
                        preface_left: PREFACE_BYTES,
                        closes: Box::pin(tokio::time::sleep(self.lifetime)),
                        closed: false,
                        _slot: slot,
                    };
                }
                // One connection failed before it was accepted: the next may not.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                // Out of descriptors or memory: wait for some to be freed.
                Err(error) => {
                    if self.may_warn() {
                        tracing::warn!(%error, "accepting connections failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn may_warn(&mut self) -> bool {
        let due = self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            self.warned = Some(Instant::now());
        }
        due
    }
}

/// An accepted connection: it holds one connection slot until it closes, fails its reads
/// if the HTTP/2 preface has not arrived within the handshake timeout, and fails its reads
/// and writes once its lifetime is over (hyper then drops the connection).
pub struct Guarded {
    socket: TcpStream,
    peer: SocketAddr,
    handshake: Option<Pin<Box<Sleep>>>,
    preface_left: usize,
    /// The end of the connection's lifetime: maximum age plus grace.
    closes: Pin<Box<Sleep>>,
    /// Whether the lifetime is over (and the close was logged).
    closed: bool,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    /// An error once the connection's lifetime is over; the waker is woken when it ends.
    fn check_lifetime(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        if !self.closed && self.closes.as_mut().poll(cx).is_ready() {
            self.closed = true;
            tracing::debug!(
                peer = %self.peer,
                "connection still open at its maximum age plus grace; closing it"
            );
        }
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection outlived its maximum age plus grace",
            ));
        }
        Ok(())
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.socket.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Err(error) = this.check_lifetime(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.socket).poll_read(cx, buf);
        if let Some(deadline) = this.handshake.as_mut() {
            if let Poll::Ready(Ok(())) = read {
                let got = buf.filled().len() - before;
                this.preface_left = this.preface_left.saturating_sub(got);
                if this.preface_left == 0 || got == 0 {
                    this.handshake = None;
                    return read;
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.check_lifetime(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.check_lifetime(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}
