//! The event stream's protocol (README, "Consuming the event stream"). One feed per server
//! reads the event log once per relay notification while a stream is open, and broadcasts
//! each batch of new events to every live stream; a stream reads the log itself only to
//! catch up (from its cursor, or after it fell behind the broadcast). So a relay pass
//! costs one query per server, not one per open stream, and none with no stream open; a
//! consumer that does not read holds at most its own buffer and the shared batches, never
//! the writers.
//!
//! Positions are per partition ([`Cursor`]). Batches are contiguous in every partition: the
//! log is append-only with no gaps, so once a position is read nothing can later appear
//! before it, and batch k holds, per partition, every event after batch k−1's last. A
//! stream at cursor `c` applies a batch that starts at or before `c` in every partition
//! (events it has not taken only); a batch that starts past `c` in some partition means it
//! missed one, and it catches up from the log. When the feed starts reading again after a
//! time with no stream open, its first batch is an empty one at the log's tail, so a
//! stream that opened before it catches up at once.
//!
//! Everything here speaks the domain's events and the commands' errors, and reads the
//! log only through the commands. What an event becomes on the wire, how many may wait
//! for the reader, and how a stream ends when the server stops belong to the transport
//! (`src/grpc/stream.rs`), the [`Consumer`] a [`Subscription`] delivers to.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{broadcast, watch};

use crate::{
    commands::{Commands, Error},
    domain::{Cursor, LogPosition, StreamEvent},
    metrics::StreamGuard,
    shutdown::{Stop, stopped},
};

/// Most events the feed reads per query.
const STREAM_BATCH: usize = 500;
/// How often the feed reads when no notification woke it (a notification can be lost).
const FEED_POLL: Duration = Duration::from_millis(500);
/// How often a live stream checks the log itself when no batch came (the feed may be
/// failing): cheap insurance, one query per stream per interval.
const STREAM_SAFETY_POLL: Duration = Duration::from_secs(5);
/// Batches kept for streams that are a little behind; one further behind catches up from
/// the log.
const BROADCAST_BATCHES: usize = 64;
/// Most events a stream reads at once to catch up: part of what a consumer that stops
/// reading holds (README, "Limits").
const STREAM_CATCH_UP: usize = 64;

/// Events after `after`, as read by the feed.
#[derive(Debug)]
struct Batch {
    after: Cursor,
    events: Vec<StreamEvent>,
}

/// What a stream does with a batch of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The batch starts at or before the stream's cursor in every partition: the stream
    /// sends the events it has not taken.
    Apply,
    /// The batch starts past the stream's cursor in some partition: the stream missed one,
    /// and catches up from the log.
    Gap,
}

impl Batch {
    /// What a stream at `position` does with this batch.
    fn step(&self, position: &Cursor) -> Step {
        if self.after.at_or_before(position) {
            Step::Apply
        } else {
            Step::Gap
        }
    }
}

/// Whether a stream at `position` has yet to send the event at `event`.
fn unseen(event: LogPosition, position: &Cursor) -> bool {
    !position.has(event)
}

/// Whether a catch-up read that returned `read` events reached the end of the log: one
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

    /// Reads new events whenever `appended` changes (or every [`FEED_POLL`]) and
    /// broadcasts them, from the log's tail when a stream is open, until the server stops.
    /// While no stream is open it reads nothing.
    pub async fn run(self, commands: Commands, mut appended: watch::Receiver<u64>) {
        let mut stop = self.stop.clone();
        let mut frontier = Cursor::START;
        let mut started = false;
        loop {
            if self.batches.receiver_count() == 0 {
                // No stream is open, so no one would take a batch: the feed reads nothing
                // (a stream reads the log itself from its cursor when it opens), and starts
                // again from the tail once one is open.
                started = false;
            } else if !started {
                match commands.stream_tail().await {
                    Ok(tail) => {
                        frontier = tail;
                        started = true;
                        // A stream that opened before this read of the tail read the log up
                        // to a point at or before it. An empty batch at the tail sends one
                        // that is behind it back to the log now: the events in between
                        // would otherwise wait for its next batch or its safety poll.
                        let _ = self.batches.send(Arc::new(Batch {
                            after: tail,
                            events: Vec::new(),
                        }));
                    }
                    Err(error) => tracing::warn!(%error, "event feed: reading the tail failed"),
                }
            }
            let mut full = false;
            if started {
                match commands.stream(&frontier, STREAM_BATCH).await {
                    Ok(events) if !events.is_empty() => {
                        full = events.len() == STREAM_BATCH;
                        let after = frontier;
                        for event in &events {
                            frontier.take(event.at);
                        }
                        // No subscriber is fine: streams read the log themselves.
                        let _ = self.batches.send(Arc::new(Batch { after, events }));
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
                changed = appended.changed() => {
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

/// Where a stream asked to start after `after` starts, and its first read. From the oldest
/// kept (`None`), retention may move past the start between reading the marks and the
/// events: then the start is read again, not refused.
async fn first_read(
    commands: &Commands,
    after: Option<Cursor>,
) -> Result<(Cursor, Vec<StreamEvent>), Error> {
    let mut attempts = 0;
    loop {
        let position = commands.stream_start(after).await?;
        match commands.stream(&position, STREAM_CATCH_UP).await {
            Err(Error::CursorExpired) if after.is_none() && attempts < 3 => attempts += 1,
            read => return Ok((position, read?)),
        }
    }
}

/// Where a stream's events go: the transport behind a [`Subscription`]. It decides what an
/// event becomes on the wire and how many may wait for the reader.
pub trait Consumer {
    /// Hands over one event, and the cursor of the stream once the consumer has it (what
    /// the consumer resumes after), waiting while the consumer has no room for it;
    /// `false` when the consumer left.
    fn deliver(
        &mut self,
        event: &StreamEvent,
        cursor: &Cursor,
    ) -> impl Future<Output = bool> + Send;

    /// Resolves once the consumer has left.
    fn left(&self) -> impl Future<Output = ()> + Send;
}

/// One stream: its cursor (the last event its consumer took in each partition), its place
/// in the feed's broadcast, and the events read from its cursor when it opened.
pub struct Subscription {
    commands: Commands,
    batches: broadcast::Receiver<Arc<Batch>>,
    position: Cursor,
    /// Read from the cursor when the stream opened, not sent yet.
    first: Vec<StreamEvent>,
    /// Reports the deliveries to the metrics while the stream lives.
    open: StreamGuard,
}

impl Subscription {
    /// A stream of the events after `after` (from the oldest kept when `None`). An expired
    /// cursor is refused here, before the stream starts.
    pub async fn open(
        commands: Commands,
        feed: &EventFeed,
        after: Option<Cursor>,
    ) -> Result<Self, Error> {
        // Subscribe before the first read, so no batch falls between the two.
        let batches = feed.batches.subscribe();
        let (position, first) = first_read(&commands, after).await?;
        let open = commands.metrics().stream_opened();
        Ok(Self {
            commands,
            batches,
            position,
            first,
            open,
        })
    }

    /// Sends `consumer` every committed event after the position, in order: what is in the
    /// log first, then the feed's batches as they come. Ends `Ok` when the consumer left
    /// or the feed is gone, with the error when a read fails (`CursorExpired`: the consumer
    /// fell further behind than the retention).
    pub async fn run(&mut self, consumer: &mut impl Consumer) -> Result<(), Error> {
        let mut read = std::mem::take(&mut self.first);
        loop {
            // Catch up from the log until a read comes back short.
            loop {
                let caught_up = caught_up(read.len());
                if !self.send(&read, consumer).await {
                    return Ok(());
                }
                if caught_up {
                    break;
                }
                read = self
                    .commands
                    .stream(&self.position, STREAM_CATCH_UP)
                    .await?;
            }
            // Live: apply the feed's batches while they follow on.
            loop {
                let batch = tokio::select! {
                    received = self.batches.recv() => match received {
                        Ok(batch) => batch,
                        // Missed some: catch up from the log.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = tokio::time::sleep(STREAM_SAFETY_POLL) => break,
                    _ = consumer.left() => return Ok(()),
                };
                if batch.step(&self.position) == Step::Gap {
                    break;
                }
                // The batch is shared by every stream: its events are not copied.
                if !self.send(&batch.events, consumer).await {
                    return Ok(());
                }
            }
            read = self
                .commands
                .stream(&self.position, STREAM_CATCH_UP)
                .await?;
        }
    }

    /// Sends those of `events` the stream has not taken, in order, moving the cursor past
    /// each one the consumer took; `false` when it left.
    async fn send(&mut self, events: &[StreamEvent], consumer: &mut impl Consumer) -> bool {
        for event in events {
            if !unseen(event.at, &self.position) {
                continue;
            }
            let mut next = self.position;
            next.take(event.at);
            if !consumer.deliver(event, &next).await {
                return false;
            }
            self.position = next;
            self.open.delivered(event.occurred_at);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cursor at `positions` in the first partitions, 0 in the rest.
    fn at(positions: &[i64]) -> Cursor {
        let mut cursor = Cursor::START;
        cursor.0[..positions.len()].copy_from_slice(positions);
        cursor
    }

    fn event(partition: usize, position: i64) -> LogPosition {
        LogPosition {
            partition,
            position,
        }
    }

    fn batch(after: Cursor) -> Batch {
        Batch {
            after,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_batch_starting_at_the_streams_cursor_applies() {
        assert_eq!(batch(at(&[7, 3])).step(&at(&[7, 3])), Step::Apply);
        assert_eq!(batch(Cursor::START).step(&Cursor::START), Step::Apply);
    }

    #[test]
    fn a_batch_starting_at_or_before_the_streams_cursor_in_every_partition_applies() {
        // The stream caught up past the batch's start from the log: it takes the rest.
        assert_eq!(batch(at(&[7, 3])).step(&at(&[7, 4])), Step::Apply);
        assert_eq!(batch(at(&[7, 3])).step(&at(&[9, 3, 1])), Step::Apply);
        // A batch from the very start applies to every stream.
        assert_eq!(batch(Cursor::START).step(&at(&[1, 1])), Step::Apply);
    }

    #[test]
    fn a_batch_starting_past_the_streams_cursor_in_any_partition_is_a_gap() {
        assert_eq!(batch(at(&[7, 4])).step(&at(&[7, 3])), Step::Gap);
        // Ahead in one partition does not make up for behind in another.
        assert_eq!(batch(at(&[7, 4])).step(&at(&[9, 3])), Step::Gap);
        let mut last = Cursor::START;
        last.0[STREAM_PARTITIONS_LAST] = 1;
        assert_eq!(batch(last).step(&at(&[5, 5])), Step::Gap);
    }

    const STREAM_PARTITIONS_LAST: usize = crate::domain::STREAM_PARTITIONS - 1;

    #[test]
    fn a_stream_sends_only_the_events_it_has_not_taken() {
        let cursor = at(&[7, 3]);
        assert!(unseen(event(0, 8), &cursor));
        assert!(unseen(event(1, 4), &cursor));
        assert!(unseen(event(2, 1), &cursor));
        assert!(!unseen(event(0, 7), &cursor));
        assert!(!unseen(event(0, 2), &cursor));
        assert!(!unseen(event(1, 3), &cursor));
    }

    #[test]
    fn the_next_batch_of_the_feed_follows_on_from_the_one_applied() {
        // Batch k+1 starts where batch k ended in every partition: a stream that applied
        // batch k is exactly there, so it applies batch k+1 without reading the log.
        let (start, last) = (at(&[3, 1]), at(&[5, 1, 2]));
        assert_eq!(batch(start).step(&start), Step::Apply);
        assert_eq!(batch(last).step(&last), Step::Apply);
        // One that missed batch k (still at its start) sees batch k+1 start past it.
        assert_eq!(batch(last).step(&start), Step::Gap);
    }

    #[test]
    fn taking_an_event_moves_only_its_partition_and_never_back() {
        let mut cursor = at(&[7, 3]);
        cursor.take(event(1, 9));
        assert_eq!(cursor, at(&[7, 9]));
        cursor.take(event(1, 4));
        assert_eq!(cursor, at(&[7, 9]), "an older position leaves it");
        assert!(cursor.has(event(1, 9)) && !cursor.has(event(2, 1)));
    }

    #[test]
    fn a_cursor_is_behind_a_mark_past_it_in_any_partition() {
        assert!(!at(&[7, 3]).behind(&at(&[7, 3])));
        assert!(!at(&[7, 3]).behind(&at(&[2])));
        assert!(at(&[7, 3]).behind(&at(&[7, 4])));
        assert!(at(&[7, 3]).behind(&at(&[0, 0, 1])));
    }

    #[test]
    fn a_full_catch_up_read_is_followed_by_another_and_a_short_one_ends_it() {
        assert!(!caught_up(STREAM_CATCH_UP));
        assert!(caught_up(STREAM_CATCH_UP - 1));
        assert!(caught_up(0));
    }
}
