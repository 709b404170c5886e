//! WatchEvents. One feed per server reads the outbox once per commit notification and
//! broadcasts each batch of new events to every live stream; a stream reads the outbox
//! itself only to catch up (from its cursor, or after it fell behind the broadcast). So a
//! commit costs one query per server, not one per open stream, and a consumer that does
//! not read holds at most its own channel and the shared batches, never the writers.
//!
//! Batches are contiguous: the outbox is read below the in-flight horizon, so once a
//! position is read nothing can later appear before it (README, "Consuming the event
//! stream"), and batch k holds every event after batch k−1's last. A stream at position
//! `p` applies a batch that starts at or before `p` (events after `p` only); a batch that
//! starts after `p` means it missed one, and it catches up from the outbox.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{encode::stream_event_to_pb, limits::CallerSlot, pb, tokens::Tokens};
use crate::{
    commands::{Commands, Error},
    domain::{Position, StreamEvent},
    shutdown::{Stop, stopped},
};

/// Most events read per query, by the feed and by a stream catching up.
const STREAM_BATCH: usize = 500;
/// How often the feed reads when no notification woke it (a notification can be lost, and
/// an aborted transaction that held the horizon back sends none).
const FEED_POLL: Duration = Duration::from_millis(500);
/// How often a live stream checks the outbox itself when no batch came (the feed may be
/// failing): cheap insurance, one query per stream per interval.
const STREAM_SAFETY_POLL: Duration = Duration::from_secs(5);
/// Batches kept for streams that are a little behind; one further behind catches up from
/// the outbox.
const BROADCAST_BATCHES: usize = 64;
/// Most events a stream reads at once to catch up, and most it has encoded and waiting
/// for the consumer: what a consumer that stops reading holds (README, "Limits").
const STREAM_CATCH_UP: usize = 64;
const STREAM_BUFFER: usize = 16;

/// Events after `after` (the start when `None`), as read by the feed.
#[derive(Debug)]
pub struct Batch {
    after: Option<Position>,
    events: Vec<StreamEvent>,
}

/// What streams subscribe to, and the server's stop signal, which ends every stream.
#[derive(Clone)]
pub struct EventFeed {
    batches: broadcast::Sender<Arc<Batch>>,
    stop: Stop,
}

impl EventFeed {
    /// A feed with no reader yet: [`EventFeed::run`] reads for it.
    pub fn new(stop: Stop) -> Self {
        Self {
            batches: broadcast::channel(BROADCAST_BATCHES).0,
            stop,
        }
    }

    /// Reads new events whenever `committed` changes (or every [`FEED_POLL`]) and
    /// broadcasts them, from the outbox's tail at start, until the server stops.
    pub async fn run(self, commands: Commands, mut committed: watch::Receiver<u64>) {
        let mut stop = self.stop.clone();
        let mut frontier = None;
        let mut started = false;
        loop {
            if !started {
                match commands.stream_tail().await {
                    Ok(tail) => {
                        frontier = tail;
                        started = true;
                    }
                    Err(error) => tracing::warn!(%error, "event feed: reading the tail failed"),
                }
            }
            let mut full = false;
            if started {
                match commands.stream(frontier, STREAM_BATCH).await {
                    Ok(events) if !events.is_empty() => {
                        full = events.len() == STREAM_BATCH;
                        let last = events.last().map(|e| e.position);
                        // No subscriber is fine: streams read the outbox themselves.
                        let _ = self.batches.send(Arc::new(Batch {
                            after: frontier,
                            events,
                        }));
                        frontier = last;
                    }
                    Ok(_) => {}
                    Err(Error::CursorExpired) => started = false,
                    Err(error) => tracing::warn!(%error, "event feed: reading failed"),
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(FEED_POLL).await;
                    }
                }
                _ = tokio::time::sleep(FEED_POLL) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

/// Starts a stream of the events after `after` (from the oldest kept when `None`). An
/// expired cursor is refused before the stream starts.
/// `slot` is the stream's share of the server's stream limits, held while it lives.
pub async fn watch(
    commands: Commands,
    feed: EventFeed,
    tokens: Tokens,
    after: Option<Position>,
    slot: (CallerSlot, OwnedSemaphorePermit),
) -> Result<EventStream, Status> {
    // Subscribe before the first read, so no batch falls between the two.
    let batches = feed.batches.subscribe();
    let first = commands.stream(after, STREAM_CATCH_UP).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let open = commands
        .metrics()
        .stream_opened(after.unwrap_or(Position::START));
    let mut stream = Consumer {
        commands,
        tokens,
        tx,
        after,
        open,
        _slot: slot,
    };
    let mut stop = feed.stop;
    let tx = stream.tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stream.run(first, batches) => {}
            _ = stopped(&mut stop) => {
                // Not OK, which reads as "the stream is complete": the consumer resumes
                // from its last cursor on another replica. A consumer that stopped reading
                // (its buffer full) does not get to hold the drain up for long.
                let _ = tokio::time::timeout(SHUTDOWN_NOTICE, tx.send(Err(shutting_down()))).await;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// How long a stream's end may wait for room in its buffer when the server stops.
const SHUTDOWN_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

/// How a stream ends when the server stops.
fn shutting_down() -> Status {
    super::error::status(
        tonic::Code::Unavailable,
        "SHUTTING_DOWN",
        "the server is shutting down; resume after your last cursor",
    )
}

/// One consumer's stream.
struct Consumer {
    commands: Commands,
    /// Signs each event's cursor.
    tokens: Tokens,
    tx: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    after: Option<Position>,
    open: crate::metrics::StreamGuard,
    _slot: (CallerSlot, OwnedSemaphorePermit),
}

impl Consumer {
    async fn run(&mut self, first: Vec<StreamEvent>, mut batches: broadcast::Receiver<Arc<Batch>>) {
        let mut read = first;
        loop {
            // Catch up from the outbox until a read comes back short.
            loop {
                let full = read.len() == STREAM_CATCH_UP;
                if !self.send(&read).await {
                    return;
                }
                if !full {
                    break;
                }
                read = match self.commands.stream(self.after, STREAM_CATCH_UP).await {
                    Ok(events) => events,
                    Err(error) => return self.fail(error).await,
                };
            }
            // Live: apply the feed's batches while they follow on.
            loop {
                let batch = tokio::select! {
                    received = batches.recv() => match received {
                        Ok(batch) => batch,
                        // Missed some: catch up from the outbox.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(STREAM_SAFETY_POLL) => break,
                    _ = self.tx.closed() => return,
                };
                if batch.after > self.after {
                    break; // a gap: this stream is behind the batch
                }
                // The batch is shared by every stream: its events are not copied.
                if !self.send(&batch.events).await {
                    return;
                }
            }
            read = match self.commands.stream(self.after, STREAM_CATCH_UP).await {
                Ok(events) => events,
                Err(error) => return self.fail(error).await,
            };
        }
    }

    /// Sends those of `events` after the stream's position, in order; `false` when the
    /// consumer left.
    async fn send(&mut self, events: &[StreamEvent]) -> bool {
        for event in events {
            if Some(event.position) <= self.after {
                continue;
            }
            let message = pb::WatchEventsResponse {
                event: Some(stream_event_to_pb(event, &self.tokens)),
            };
            if self.tx.send(Ok(message)).await.is_err() {
                return false;
            }
            self.after = Some(event.position);
            self.open.at(event.position);
        }
        true
    }

    async fn fail(&mut self, error: Error) {
        let _ = self.tx.send(Err(Status::from(error))).await;
    }
}
