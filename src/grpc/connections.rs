//! Accepting connections within bounds (README, "Limits"): at most
//! `DISPUTE_MAX_CONNECTIONS` open at once (one more is closed as it arrives, and logged),
//! each with `DISPUTE_HANDSHAKE_TIMEOUT` to send the HTTP/2 preface, and Nagle's
//! algorithm off (a small response is sent at once). When the process is out of file
//! descriptors, accepting backs off instead of spinning. After the handshake, HTTP/2
//! keepalive PINGs close connections whose peer is gone, and the maximum connection age
//! closes every connection in time.

use std::{
    io,
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
/// `handshake_timeout`.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<Guarded>> {
    let state = Accepting {
        listener,
        slots: Arc::new(Semaphore::new(max_connections)),
        handshake_timeout,
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
                        handshake: Some(Box::pin(tokio::time::sleep(self.handshake_timeout))),
                        preface_left: PREFACE_BYTES,
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

/// An accepted connection: it holds one connection slot until it closes, and fails its
/// reads if the HTTP/2 preface has not arrived within the handshake timeout.
pub struct Guarded {
    socket: TcpStream,
    handshake: Option<Pin<Box<Sleep>>>,
    preface_left: usize,
    _slot: OwnedSemaphorePermit,
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
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}
