//! The event stream's protocol (README, "Consuming the event stream"). One feed per server
//! reads the outbox once per commit notification and broadcasts each batch of new events to
//! every live stream; a stream reads the outbox itself only to catch up (from its cursor, or
//! after it fell behind the broadcast). So a commit costs one query per server, not one per
//! open stream, and a consumer that does not read holds at most its own buffer and the
//! shared batches, never the writers.
//!
//! Batches are contiguous: the outbox is read below the in-flight horizon, so once a
//! position is read nothing can later appear before it, and batch k holds every event after
//! batch k−1's last. A stream at position `p` applies a batch that starts at or before `p`
//! (events after `p` only); a batch that starts after `p` means it missed one, and it
//! catches up from the outbox.
//!
//! Everything here speaks the domain's events and the commands' errors, and reads the
//! outbox only through the commands. What an event becomes on the wire, how many may wait
//! for the reader, and how a stream ends when the server stops belong to the transport
//! (`src/grpc/stream.rs`), the [`Consumer`] a [`Subscription`] delivers to.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{broadcast, watch};

use crate::{
    commands::{Commands, Error},
    domain::{Position, StreamEvent},
    metrics::StreamGuard,
    shutdown::{Stop, stopped},
};

/// Most events the feed reads per query.
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
/// Most events a stream reads at once to catch up: part of what a consumer that stops
/// reading holds (README, "Limits").
const STREAM_CATCH_UP: usize = 64;

/// Events after `after` (the start when `None`), as read by the feed.
#[derive(Debug)]
struct Batch {
    after: Option<Position>,
    events: Vec<StreamEvent>,
}

/// What a stream does with a batch of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The batch starts at or before the stream's position: the stream sends its events
    /// after that position.
    Apply,
    /// The batch starts after the stream's position: the stream missed one, and catches up
    /// from the outbox.
    Gap,
}

impl Batch {
    /// What a stream at `position` (`None`: nothing sent yet, from the oldest kept) does
    /// with this batch.
    fn step(&self, position: Option<Position>) -> Step {
        if self.after > position {
            Step::Gap
        } else {
            Step::Apply
        }
    }
}

/// Whether a stream at `position` has yet to send the event at `event`: only what comes
/// after its position.
fn unseen(event: Position, position: Option<Position>) -> bool {
    Some(event) > position
}

/// Whether a catch-up read that returned `read` events reached the end of the outbox: one
/// that came back short did; a full one is followed by another.
fn caught_up(read: usize) -> bool {
    read < STREAM_CATCH_UP
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

    /// The server's stop signal: every stream ends when it is given.
    pub fn stop(&self) -> Stop {
        self.stop.clone()
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

/// Where a stream's events go: the transport behind a [`Subscription`]. It decides what an
/// event becomes on the wire and how many may wait for the reader.
pub trait Consumer {
    /// Hands over one event, waiting while the consumer has no room for it; `false` when
    /// the consumer left.
    fn deliver(&mut self, event: &StreamEvent) -> impl Future<Output = bool> + Send;

    /// Resolves once the consumer has left.
    fn left(&self) -> impl Future<Output = ()> + Send;
}

/// One stream: its position (the last event its consumer took), its place in the feed's
/// broadcast, and the events read from its cursor when it opened.
pub struct Subscription {
    commands: Commands,
    batches: broadcast::Receiver<Arc<Batch>>,
    /// `None` until the first event is sent when the stream started from the oldest kept.
    position: Option<Position>,
    /// Read from the cursor when the stream opened, not sent yet.
    first: Vec<StreamEvent>,
    /// Reports the position to the metrics while the stream lives.
    open: StreamGuard,
}

impl Subscription {
    /// A stream of the events after `after` (from the oldest kept when `None`). An expired
    /// cursor is refused here, before the stream starts.
    pub async fn open(
        commands: Commands,
        feed: &EventFeed,
        after: Option<Position>,
    ) -> Result<Self, Error> {
        // Subscribe before the first read, so no batch falls between the two.
        let batches = feed.batches.subscribe();
        let first = commands.stream(after, STREAM_CATCH_UP).await?;
        let open = commands
            .metrics()
            .stream_opened(after.unwrap_or(Position::START));
        Ok(Self {
            commands,
            batches,
            position: after,
            first,
            open,
        })
    }

    /// Sends `consumer` every committed event after the position, in order: what is in the
    /// outbox first, then the feed's batches as they come. Ends `Ok` when the consumer left
    /// or the feed is gone, with the error when a read fails (`CursorExpired`: the consumer
    /// fell further behind than the retention).
    pub async fn run(&mut self, consumer: &mut impl Consumer) -> Result<(), Error> {
        let mut read = std::mem::take(&mut self.first);
        loop {
            // Catch up from the outbox until a read comes back short.
            loop {
                let caught_up = caught_up(read.len());
                if !self.send(&read, consumer).await {
                    return Ok(());
                }
                if caught_up {
                    break;
                }
                read = self.commands.stream(self.position, STREAM_CATCH_UP).await?;
            }
            // Live: apply the feed's batches while they follow on.
            loop {
                let batch = tokio::select! {
                    received = self.batches.recv() => match received {
                        Ok(batch) => batch,
                        // Missed some: catch up from the outbox.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = tokio::time::sleep(STREAM_SAFETY_POLL) => break,
                    _ = consumer.left() => return Ok(()),
                };
                if batch.step(self.position) == Step::Gap {
                    break;
                }
                // The batch is shared by every stream: its events are not copied.
                if !self.send(&batch.events, consumer).await {
                    return Ok(());
                }
            }
            read = self.commands.stream(self.position, STREAM_CATCH_UP).await?;
        }
    }

    /// Sends those of `events` after the position, in order, moving the position to each
    /// one the consumer took; `false` when it left.
    async fn send(&mut self, events: &[StreamEvent], consumer: &mut impl Consumer) -> bool {
        for event in events {
            if !unseen(event.position, self.position) {
                continue;
            }
            if !consumer.deliver(event).await {
                return false;
            }
            self.position = Some(event.position);
            self.open.at(event.position);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tx_id: i64, id: i64) -> Position {
        Position { tx_id, id }
    }

    fn batch(after: Option<Position>) -> Batch {
        Batch {
            after,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_batch_starting_at_the_streams_position_applies() {
        assert_eq!(batch(Some(at(7, 3))).step(Some(at(7, 3))), Step::Apply);
        assert_eq!(batch(None).step(None), Step::Apply);
    }

    #[test]
    fn a_batch_starting_before_the_streams_position_applies() {
        // The stream caught up past the batch's start from the outbox: it takes the rest.
        assert_eq!(batch(Some(at(7, 3))).step(Some(at(7, 4))), Step::Apply);
        assert_eq!(batch(Some(at(7, 3))).step(Some(at(9, 1))), Step::Apply);
        // A batch from the very start applies to every stream.
        assert_eq!(batch(None).step(Some(at(1, 1))), Step::Apply);
    }

    #[test]
    fn a_batch_starting_after_the_streams_position_is_a_gap() {
        assert_eq!(batch(Some(at(7, 4))).step(Some(at(7, 3))), Step::Gap);
        // Positions order by transaction first: a later transaction with a lower row id is
        // still later.
        assert_eq!(batch(Some(at(8, 1))).step(Some(at(7, 3))), Step::Gap);
        // A stream that has sent nothing yet is before every batch that has a start.
        assert_eq!(batch(Some(at(1, 1))).step(None), Step::Gap);
        assert_eq!(batch(Some(Position::START)).step(None), Step::Gap);
    }

    #[test]
    fn a_stream_sends_only_the_events_after_its_position() {
        assert!(unseen(at(7, 4), Some(at(7, 3))));
        assert!(unseen(at(8, 1), Some(at(7, 3))));
        assert!(!unseen(at(7, 3), Some(at(7, 3))));
        assert!(!unseen(at(7, 2), Some(at(7, 3))));
        assert!(!unseen(at(6, 9), Some(at(7, 3))));
        // From the oldest kept: everything.
        assert!(unseen(Position::START, None));
        assert!(unseen(at(1, 1), None));
    }

    #[test]
    fn the_next_batch_of_the_feed_follows_on_from_the_one_applied() {
        // Batch k+1 starts at batch k's last event: a stream that applied batch k is exactly
        // there, so it applies batch k+1 without reading the outbox.
        let (start, last) = (at(3, 1), at(5, 2));
        assert_eq!(batch(Some(start)).step(Some(start)), Step::Apply);
        assert_eq!(batch(Some(last)).step(Some(last)), Step::Apply);
        // One that missed batch k (still at its start) sees batch k+1 start after it.
        assert_eq!(batch(Some(last)).step(Some(start)), Step::Gap);
    }

    #[test]
    fn a_full_catch_up_read_is_followed_by_another_and_a_short_one_ends_it() {
        assert!(!caught_up(STREAM_CATCH_UP));
        assert!(caught_up(STREAM_CATCH_UP - 1));
        assert!(caught_up(0));
    }
}
